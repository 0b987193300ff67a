package remediation_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/condaccess/condaccess/services/remediation"
	"github.com/condaccess/condaccess/services/remediation/remediationstore"
	"github.com/condaccess/condaccess/services/remediation/remediationstore/storetest"
)

// TestObserveQueuesOnlyThisReplicasAgentsActions: an action another replica
// committed (no push here) reaches the agent connected here once Observe sees its
// event, exactly once per connection; changes that must not send anything do not.
func TestObserveQueuesOnlyThisReplicasAgentsActions(t *testing.T) {
	ctx := context.Background()
	st, err := remediationstore.Open(ctx, remediationstore.Options{Path: filepath.Join(t.TempDir(), "r.db"), Encode: storetest.EncodeJSON, Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	svc := remediation.New(remediation.Config{Store: st, Risk: okRisk{}})
	conn, err := svc.AgentConnect(ctx, remediation.AgentHello{DeviceID: "dev-1", DetectionRoots: []string{"/w"}})
	if err != nil {
		t.Fatal(err)
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	// next returns the action queued on the connection, or "" when there is none.
	next := func() string {
		t.Helper()
		a, err := conn.Next(done)
		if errors.Is(err, context.Canceled) {
			return ""
		}
		if err != nil {
			t.Fatal(err)
		}
		return a.ID
	}
	// commit stores an action as another replica would: without a push here.
	commit := func(id, dev string, state remediation.ActionState) {
		t.Helper()
		a := &remediation.Action{ID: id, DeviceID: dev, Type: remediation.ActionRunScan, State: state, CreateTime: time.Now(), UpdateTime: time.Now()}
		if err := st.Update(ctx, func(tx remediation.Tx) error { return tx.PutAction(a) }); err != nil {
			t.Fatal(err)
		}
	}
	commit("act-queued", "dev-1", remediation.ActionStateQueued)
	commit("act-other-device", "dev-2", remediation.ActionStateQueued)
	commit("act-cancelled-since", "dev-1", remediation.ActionStateCancelled)
	if got := next(); got != "" {
		t.Fatalf("before any Observe the agent got %s", got)
	}
	tests := []struct {
		name string
		c    remediation.Change
		want string
	}{
		{"a queued action of the agent connected here", remediation.Change{ActionID: "act-queued", DeviceID: "dev-1", ActionState: remediation.ActionStateQueued}, "act-queued"},
		{"the same event again", remediation.Change{ActionID: "act-queued", DeviceID: "dev-1", ActionState: remediation.ActionStateQueued}, ""},
		{"an agent connected elsewhere", remediation.Change{ActionID: "act-other-device", DeviceID: "dev-2", ActionState: remediation.ActionStateQueued}, ""},
		{"an event naming this agent for another device's action", remediation.Change{ActionID: "act-other-device", DeviceID: "dev-1", ActionState: remediation.ActionStateQueued}, ""},
		{"queued in the event, cancelled since", remediation.Change{ActionID: "act-cancelled-since", DeviceID: "dev-1", ActionState: remediation.ActionStateQueued}, ""},
		{"an action that was never stored", remediation.Change{ActionID: "act-unknown", DeviceID: "dev-1", ActionState: remediation.ActionStateQueued}, ""},
		{"a pending approval", remediation.Change{ActionID: "act-queued", DeviceID: "dev-1", ActionState: remediation.ActionStatePendingApproval}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := svc.Observe(ctx, tt.c); err != nil {
				t.Fatalf("Observe: %v", err)
			}
			if got := next(); got != tt.want {
				t.Fatalf("agent got %q, want %q", got, tt.want)
			}
		})
	}
	// A replica that lost its watch redelivers what its agents may have missed.
	commit("act-missed", "dev-1", remediation.ActionStateQueued)
	if err := svc.Redeliver(ctx); err != nil {
		t.Fatal(err)
	}
	if got := next(); got != "act-missed" {
		t.Fatalf("after Redeliver the agent got %q, want act-missed", got)
	}
	if got := next(); got != "" {
		t.Fatalf("Redeliver sent %q again", got)
	}
}
