package accessgrpc

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/services/access/accesscore"
)

// ReasonBlockedRefNotFound: GetBlockedStatus/WatchBlockedStatus with a reference that
// is not one of this service's (malformed, forged, expired), without saying which.
const ReasonBlockedRefNotFound = "BLOCKED_REF_NOT_FOUND"

// blockedIdle is how often WatchBlockedStatus sends the status on an idle stream (it
// is evaluated again then: the feed may have turned stale meanwhile).
const blockedIdle = 30 * time.Second

var errBlockedRefNotFound = apierr.New(codes.NotFound, ReasonBlockedRefNotFound, "no blocked sign-in with this reference")

// blockedSignIn opens a reference; any failure is the one NOT_FOUND.
func (s *Server) blockedSignIn(ref string) (accesscore.BlockedSignIn, error) {
	if s.edge.BlockedRefs == nil {
		return accesscore.BlockedSignIn{}, errBlockedRefNotFound
	}
	b, err := s.edge.BlockedRefs.Open(ref)
	if err != nil {
		return b, errBlockedRefNotFound
	}
	return b, nil
}

// blockedStatus evaluates b now and cuts the answer to the configured detail.
func (s *Server) blockedStatus(ctx context.Context, b accesscore.BlockedSignIn) *accessv1.BlockedStatus {
	detail := s.edge.BlockedDetail
	if detail == accessv1.BlockedDetail_BLOCKED_DETAIL_UNSPECIFIED {
		detail = accessv1.BlockedDetail_BLOCKED_DETAIL_CATEGORY
	}
	st := s.svc.BlockedStatus(ctx, b, detail == accessv1.BlockedDetail_BLOCKED_DETAIL_FULL)
	out := &accessv1.BlockedStatus{Restored: st.Restored, Detail: detail, BlockedTime: timestamppb.New(st.Time)}
	if detail >= accessv1.BlockedDetail_BLOCKED_DETAIL_CATEGORY {
		out.DeviceId = st.DeviceID
		for _, p := range st.Problems {
			out.Problems = append(out.Problems, accessv1.BlockedProblem(p))
		}
		out.Remediation = accessv1.BlockedRemediation(st.Remediation)
	}
	if detail == accessv1.BlockedDetail_BLOCKED_DETAIL_FULL {
		out.ApplicationDisplayName = st.AppName
	}
	return out
}

func (a *accessServer) GetBlockedStatus(ctx context.Context, req *accessv1.GetBlockedStatusRequest) (*accessv1.GetBlockedStatusResponse, error) {
	b, err := a.s.blockedSignIn(req.GetRef())
	if err != nil {
		return nil, err
	}
	return &accessv1.GetBlockedStatusResponse{Status: a.s.blockedStatus(ctx, b)}, nil
}

func (a *accessServer) WatchBlockedStatus(req *accessv1.WatchBlockedStatusRequest, stream accessv1.AccessService_WatchBlockedStatusServer) error {
	b, err := a.s.blockedSignIn(req.GetRef())
	if err != nil {
		return err
	}
	ctx := stream.Context()
	idle := time.NewTimer(blockedIdle)
	defer idle.Stop()
	var last *accessv1.BlockedStatus
	resend := true
	for {
		// Take the next change's channel before evaluating, so none is missed between.
		changed := a.s.svc.Changed()
		st := a.s.blockedStatus(ctx, b)
		if resend || !blockedEqual(st, last) {
			if err := stream.Send(&accessv1.WatchBlockedStatusResponse{Status: st}); err != nil {
				return nil
			}
			last, resend = st, false
			idle.Reset(blockedIdle)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-idle.C:
			resend = true
		}
	}
}

func blockedEqual(a, b *accessv1.BlockedStatus) bool {
	if a.GetRestored() != b.GetRestored() || a.GetDeviceId() != b.GetDeviceId() || a.GetApplicationDisplayName() != b.GetApplicationDisplayName() ||
		a.GetRemediation() != b.GetRemediation() ||
		len(a.GetProblems()) != len(b.GetProblems()) {
		return false
	}
	for i, p := range a.GetProblems() {
		if b.GetProblems()[i] != p {
			return false
		}
	}
	return true
}
