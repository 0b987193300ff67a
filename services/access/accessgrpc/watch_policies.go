package accessgrpc

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/changefeed"
)

// WatchPolicies implements ConditionalAccessPolicyService.
func (p *policyServer) WatchPolicies(_ *accessv1.WatchPoliciesRequest, stream accessv1.ConditionalAccessPolicyService_WatchPoliciesServer) error {
	ctx := stream.Context()
	send := func(m *accessv1.WatchPoliciesResponse) error { return stream.Send(m) }
	err := changefeed.Follow(ctx, changefeed.Config{
		Wake: p.s.policies.Wait,
		List: func(ctx context.Context) (map[string]string, error) {
			out := map[string]string{}
			token := ""
			for {
				ps, next, err := p.s.svc.ListPolicies(ctx, 0, token, 1000)
				if err != nil {
					return nil, err
				}
				for _, x := range ps {
					out[x.ID] = policyToProto(x).GetEtag()
				}
				if next == "" {
					return out, nil
				}
				token = next
			}
		},
		Change: func(id, etag string, deleted bool) error {
			return send(&accessv1.WatchPoliciesResponse{Kind: &accessv1.WatchPoliciesResponse_Change{
				Change: &accessv1.PolicyChange{PolicyId: id, Etag: etag, Deleted: deleted}}})
		},
		Synced: func() error {
			return send(&accessv1.WatchPoliciesResponse{Kind: &accessv1.WatchPoliciesResponse_Synced{Synced: true}})
		},
		Heartbeat: func() error {
			return send(&accessv1.WatchPoliciesResponse{Kind: &accessv1.WatchPoliciesResponse_Heartbeat{Heartbeat: timestamppb.Now()}})
		},
	})
	if err == nil || ctx.Err() != nil {
		return apierr.FromContext(ctx.Err())
	}
	return toStatus(err)
}
