package compliancegrpc

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/changefeed"
)

// WatchCompliancePolicies implements CompliancePolicyService.
func (s *policyServer) WatchCompliancePolicies(_ *compliancev1.WatchCompliancePoliciesRequest, stream compliancev1.CompliancePolicyService_WatchCompliancePoliciesServer) error {
	ctx := stream.Context()
	send := func(m *compliancev1.WatchCompliancePoliciesResponse) error { return stream.Send(m) }
	err := changefeed.Follow(ctx, changefeed.Config{
		Wake: s.policies.Wait,
		List: func(ctx context.Context) (map[string]string, error) {
			out := map[string]string{}
			after := ""
			for {
				ps, err := s.svc.ListPolicies(ctx, after, 1000)
				if err != nil {
					return nil, err
				}
				for _, p := range ps {
					out[p.ID] = p.Etag()
				}
				if len(ps) < 1000 {
					return out, nil
				}
				after = ps[len(ps)-1].ID
			}
		},
		Change: func(id, etag string, deleted bool) error {
			return send(&compliancev1.WatchCompliancePoliciesResponse{Kind: &compliancev1.WatchCompliancePoliciesResponse_Change{
				Change: &compliancev1.CompliancePolicyChange{PolicyId: id, Etag: etag, Deleted: deleted}}})
		},
		Synced: func() error {
			return send(&compliancev1.WatchCompliancePoliciesResponse{Kind: &compliancev1.WatchCompliancePoliciesResponse_Synced{Synced: true}})
		},
		Heartbeat: func() error {
			return send(&compliancev1.WatchCompliancePoliciesResponse{Kind: &compliancev1.WatchCompliancePoliciesResponse_Heartbeat{Heartbeat: timestamppb.Now()}})
		},
	})
	if err == nil || ctx.Err() != nil {
		return apierr.FromContext(ctx.Err())
	}
	return toStatus(err)
}
