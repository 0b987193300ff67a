package accessgrpc

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/services/access"
)

// WatchSignIns timings: how often the store is read again when no write woke the
// stream (a fallback: this replica's writes wake it at once, other replicas' through
// the store's notification), and the idle heartbeat.
const (
	signInsPoll      = time.Second
	signInsHeartbeat = 15 * time.Second
	signInsPage      = 500
)

// WatchSignIns follows the sign-in log from its newest key when the stream opens: the
// store assigns keys in commit order on every replica, so the last key read is a
// cursor that no sign-in committed later can fall behind, however late its replica
// wrote it (no look-back window).
func (a *accessServer) WatchSignIns(req *accessv1.WatchSignInsRequest, stream accessv1.AccessService_WatchSignInsServer) error {
	ctx := stream.Context()
	f := access.SignInFilter{UserID: req.GetUserId(), DeviceID: req.GetDeviceId(), AppID: req.GetApplicationId(), Decision: access.Decision(req.GetDecision())}
	svc := a.s.svc
	rec := svc.Recorder()
	// since bounds the start only: a sign-in decided before the stream opened (still
	// in a recorder's batch) is not sent; every later one is, as the cursor moves.
	since := time.Now()
	cursor, err := svc.LastSignInKey(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return apierr.FromContext(ctx.Err())
		}
		return toStatus(err)
	}
	// The first heartbeat says from when the stream reports: every sign-in decided
	// after the client received it is sent.
	if err := stream.Send(&accessv1.WatchSignInsResponse{Kind: &accessv1.WatchSignInsResponse_Heartbeat{Heartbeat: timestamppb.New(since)}}); err != nil {
		return nil
	}
	poll := time.NewTicker(signInsPoll)
	defer poll.Stop()
	idle := time.NewTimer(signInsHeartbeat)
	defer idle.Stop()
	for {
		// Both before reading, so that a write during the read wakes the next round.
		wrote, changed := rec.Wrote(), svc.SignInsChanged()
		for {
			sis, reached, err := svc.SignInsAfter(ctx, f, cursor, signInsPage)
			if err != nil {
				if ctx.Err() != nil {
					return apierr.FromContext(ctx.Err())
				}
				return toStatus(err)
			}
			for _, si := range sis {
				if si.Time.Before(since) {
					continue
				}
				p, err := signInToProto(si)
				if err != nil {
					return toStatus(err)
				}
				n := &accessv1.SignInNotice{SignInId: p.GetSignInId(), Time: p.GetTime(), UserId: p.GetUserId(), DeviceId: p.GetDeviceId(),
					ApplicationId: p.GetApplicationId(), Decision: p.GetDecision(), ComplianceState: p.GetComplianceState(), TraceId: p.GetTraceId()}
				if err := stream.Send(&accessv1.WatchSignInsResponse{Kind: &accessv1.WatchSignInsResponse_SignIn{SignIn: n}}); err != nil {
					return nil
				}
			}
			if len(sis) > 0 {
				idle.Reset(signInsHeartbeat)
			}
			if reached == cursor {
				break // caught up
			}
			cursor = reached
		}
		select {
		case <-ctx.Done():
			return apierr.FromContext(ctx.Err())
		case <-wrote:
		case <-changed:
		case <-poll.C:
		case <-idle.C:
			if err := stream.Send(&accessv1.WatchSignInsResponse{Kind: &accessv1.WatchSignInsResponse_Heartbeat{Heartbeat: timestamppb.Now()}}); err != nil {
				return nil
			}
			idle.Reset(signInsHeartbeat)
		}
	}
}
