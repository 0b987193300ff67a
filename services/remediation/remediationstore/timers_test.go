package remediationstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/services/remediation"
)

// TestLeaderTimersWokenByOtherReplicasDeadlines: a deadline committed on a replica
// that does not run the timers (an approval that expires) is kept by the leader's
// timers once the leader observes the change from the event log: the action is
// rejected as expired, by the leader, on time. Without the observation the leader's
// timer would sleep on its earlier deadline (none: an hour).
func TestLeaderTimersWokenByOtherReplicasDeadlines(t *testing.T) {
	url := pgtest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stA, stB := openPG(t, url), openPG(t, url)
	const expiry = 300 * time.Millisecond
	leader := remediation.New(remediation.Config{Store: stA, Risk: noRisk{}, ApprovalExpiry: expiry, Replicated: true})
	other := remediation.New(remediation.Config{Store: stB, Risk: noRisk{}, ApprovalExpiry: expiry, Replicated: true})
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan struct{})
	go func() { defer close(ran); _ = leader.Run(runCtx) }()
	defer func() { stop(); <-ran }()

	// Not the device's own alert: its action waits for approval, until it expires.
	alert := &remediation.Alert{ID: "a-1", DeviceID: "dev-1", Severity: remediation.SeverityHigh, Title: "t",
		Evidence: []remediation.Evidence{{File: &remediation.FileEvidence{Path: "/w/x", SHA256: "ab"}}}}
	if err := other.OnAlert(ctx, alert, remediation.TraceContext{}, 0); err != nil {
		t.Fatal(err)
	}
	acts, err := stB.DeviceActions(ctx, "dev-1")
	if err != nil || len(acts) != 1 || acts[0].State != remediation.ActionStatePendingApproval {
		t.Fatalf("actions = %v, %v; want one pending approval", acts, err)
	}
	act := acts[0]
	if err := leader.Observe(ctx, remediation.Change{ActionID: act.ID, DeviceID: act.DeviceID, ActionState: act.State}); err != nil {
		t.Fatal(err)
	}
	for {
		got, err := stA.GetAction(ctx, act.ID)
		if err == nil && got.State == remediation.ActionStateRejected {
			if got.Approval == nil || got.Approval.DecidedBy != remediation.System {
				t.Fatalf("expired action's approval = %+v, want decided by %s", got.Approval, remediation.System)
			}
			if late := got.UpdateTime.Sub(act.ApprovalExpireTime); late < 0 || late > 5*time.Second {
				t.Fatalf("expired %v after its deadline", late)
			}
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("the leader never expired the other replica's approval (action %+v, %v)", got, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
