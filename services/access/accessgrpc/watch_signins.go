package accessgrpc

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/services/access"
)

// WatchSignIns timings: how often the store is read again without a local write
// (sign-ins written by other replicas on the same database), how far back each read
// looks (a replica's batch may land after newer sign-ins of another one), and the
// idle heartbeat.
const (
	signInsPoll      = time.Second
	signInsLookback  = 5 * time.Second
	signInsHeartbeat = 15 * time.Second
	signInsMaxPerRun = 5000
)

func (a *accessServer) WatchSignIns(req *accessv1.WatchSignInsRequest, stream accessv1.AccessService_WatchSignInsServer) error {
	ctx := stream.Context()
	f := access.SignInFilter{UserID: req.GetUserId(), DeviceID: req.GetDeviceId(), AppID: req.GetApplicationId(), Decision: access.Decision(req.GetDecision())}
	rec := a.s.svc.Recorder()
	// Sign-ins are sent once each: sent holds the ids of those inside the look-back
	// window; since is the time from which the stream reports.
	since := time.Now()
	sent := map[string]time.Time{}
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
		wrote := rec.Wrote() // before reading, so a write during the read wakes the next round
		newest := since
		for _, t := range sent {
			if t.After(newest) {
				newest = t
			}
		}
		f.After = newest.Add(-signInsLookback)
		if f.After.Before(since) {
			f.After = since
		}
		var fresh []*access.SignIn
		token := ""
		for len(fresh) < signInsMaxPerRun {
			sis, next, err := a.s.svc.ListSignIns(ctx, f, token, 1000)
			if err != nil {
				if ctx.Err() != nil {
					return apierr.FromContext(ctx.Err())
				}
				return toStatus(err)
			}
			for _, si := range sis {
				if _, ok := sent[si.ID]; !ok {
					fresh = append(fresh, si)
				}
			}
			if next == "" {
				break
			}
			token = next
		}
		// Newest first from the store; the stream sends oldest first.
		for i := len(fresh) - 1; i >= 0; i-- {
			p, err := signInToProto(fresh[i])
			if err != nil {
				return toStatus(err)
			}
			n := &accessv1.SignInNotice{SignInId: p.GetSignInId(), Time: p.GetTime(), UserId: p.GetUserId(), DeviceId: p.GetDeviceId(),
				ApplicationId: p.GetApplicationId(), Decision: p.GetDecision(), ComplianceState: p.GetComplianceState(), TraceId: p.GetTraceId()}
			if err := stream.Send(&accessv1.WatchSignInsResponse{Kind: &accessv1.WatchSignInsResponse_SignIn{SignIn: n}}); err != nil {
				return nil
			}
			sent[fresh[i].ID] = fresh[i].Time
		}
		if len(fresh) > 0 {
			idle.Reset(signInsHeartbeat)
		}
		for id, t := range sent {
			if t.Before(f.After) {
				delete(sent, id)
			}
		}
		select {
		case <-ctx.Done():
			return apierr.FromContext(ctx.Err())
		case <-wrote:
		case <-poll.C:
		case <-idle.C:
			if err := stream.Send(&accessv1.WatchSignInsResponse{Kind: &accessv1.WatchSignInsResponse_Heartbeat{Heartbeat: timestamppb.Now()}}); err != nil {
				return nil
			}
			idle.Reset(signInsHeartbeat)
		}
	}
}
