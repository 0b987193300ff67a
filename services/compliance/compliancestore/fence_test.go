package compliancestore_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/condaccess/condaccess/internal/lease"
	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/services/compliance"
	"github.com/condaccess/condaccess/services/compliance/compliancestore"
)

func jsonEncode(e compliance.Event) ([]byte, error) { return json.Marshal(e) }

// waitFor polls cond until it holds, failing after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timeout waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestConsumerFencedAfterTakeover: the risk consumer's writes on PostgreSQL are
// fenced by the compliance-consumer lease. Replica a leads and applies risk
// revision 1; it pauses past its lease, b takes over and applies revision 2. From
// then on every consumer write of a (each kind that advances the cursor), and any
// write presenting a token that is not the caller's current one, is refused with
// lease.ErrFenced and changes nothing: cursor, stored risk and the compliance
// event log stay as b left them.
func TestConsumerFencedAfterTakeover(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	stA, stB := openPG(t, url), openPG(t, url)
	svcA := compliance.New(compliance.Config{Store: stA, Encode: jsonEncode})
	svcB := compliance.New(compliance.Config{Store: stB, Encode: jsonEncode})
	const d = 300 * time.Millisecond
	la := stA.Lease(lease.PGOptions{Name: "compliance-consumer", Holder: "a", Duration: d})
	lb := stB.Lease(lease.PGOptions{Name: "compliance-consumer", Holder: "b", Duration: d})

	// An enrolled device under a policy, so that applying its risk appends an event.
	if _, err := svcA.EnrollDevice(ctx, compliance.Device{ID: "dev-1", DisplayName: "laptop", Platform: compliance.PlatformWindows, OSVersion: "10.0", OwnerUserID: "u-1"}); err != nil {
		t.Fatal(err)
	}

	tokA, err := la.TryAcquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lb.TryAcquire(ctx); !errors.Is(err, lease.ErrHeld) {
		t.Fatalf("b takes a live lease: %v, want ErrHeld", err)
	}
	fa := compliancestore.WithFence(ctx, la, tokA)
	if err := svcA.ApplyRisk(fa, 1, compliance.DeviceRisk{DeviceID: "dev-1", Level: compliance.RiskLow}); err != nil {
		t.Fatalf("leader applies revision 1: %v", err)
	}
	var tokB int64
	waitFor(t, "b to take over the expired lease", func() bool {
		var err error
		tokB, err = lb.TryAcquire(ctx)
		return err == nil
	})
	fb := compliancestore.WithFence(ctx, lb, tokB)
	if err := svcB.ApplyRisk(fb, 2, compliance.DeviceRisk{DeviceID: "dev-1", Level: compliance.RiskMedium}); err != nil {
		t.Fatalf("new leader applies revision 2: %v", err)
	}
	head := func() int64 {
		t.Helper()
		_, rev, err := stB.ListCompliance(ctx, compliance.ComplianceFilter{Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	wantHead := head()

	high := compliance.DeviceRisk{DeviceID: "dev-1", Level: compliance.RiskHigh}
	tests := []struct {
		name  string
		ctx   context.Context
		apply func(ctx context.Context) error
	}{
		{"old leader applies a risk change", fa, func(ctx context.Context) error { return svcA.ApplyRisk(ctx, 3, high) }},
		{"old leader applies an alert change", fa, func(ctx context.Context) error {
			return svcA.ApplyAlert(ctx, 3, compliance.AlertChange{AlertID: "a-9", DeviceID: "dev-1", Level: compliance.RiskHigh, Active: true})
		}},
		{"old leader skips an event", fa, func(ctx context.Context) error { return svcA.SkipRisk(ctx, 3) }},
		{"old leader resyncs", fa, func(ctx context.Context) error { return svcA.ResyncRisks(ctx, []compliance.DeviceRisk{high}, 3) }},
		{"old leader presents the new token", compliancestore.WithFence(ctx, la, tokB), func(ctx context.Context) error { return svcA.ApplyRisk(ctx, 3, high) }},
		{"new leader presents the old token", compliancestore.WithFence(ctx, lb, tokA), func(ctx context.Context) error { return svcB.ApplyRisk(ctx, 3, high) }},
		{"a token never issued", compliancestore.WithFence(ctx, lb, tokB+1), func(ctx context.Context) error { return svcB.ApplyRisk(ctx, 3, high) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.apply(tt.ctx); !errors.Is(err, lease.ErrFenced) {
				t.Fatalf("fenced write = %v, want lease.ErrFenced", err)
			}
			if cur, _, err := stA.Cursor(ctx, compliance.RiskCursor); err != nil || cur != 2 {
				t.Fatalf("risk cursor = %d, %v after a refused write; want 2", cur, err)
			}
			if r, err := stA.GetRisk(ctx, "dev-1"); err != nil || r.Level != compliance.RiskMedium || r.Revision != 2 {
				t.Fatalf("stored risk = %+v, %v after a refused write; want MEDIUM at revision 2", r, err)
			}
			if got := head(); got != wantHead {
				t.Fatalf("compliance event head = %d after a refused write, want %d", got, wantHead)
			}
		})
	}
	// A fenced former leader cannot say the risk feed is fresh either; the leader can.
	feedContact := func() time.Time {
		t.Helper()
		c, _, err := stB.FeedContact(ctx, "risk")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	before := feedContact()
	if err := stA.PutFeedContact(fa, "risk", time.Now()); !errors.Is(err, lease.ErrFenced) {
		t.Fatalf("old leader stores a feed contact: %v, want lease.ErrFenced", err)
	}
	if got := feedContact(); !got.Equal(before) {
		t.Fatalf("feed contact moved to %v after a refused write (was %v)", got, before)
	}
	now := time.Now()
	if err := stB.PutFeedContact(fb, "risk", now); err != nil {
		t.Fatalf("new leader stores a feed contact: %v", err)
	}
	if got := feedContact(); got.UnixNano() != now.UnixNano() {
		t.Fatalf("feed contact = %v, want %v", got, now)
	}
	// The current leader, with its own token, goes on.
	if err := svcB.ApplyRisk(fb, 3, high); err != nil {
		t.Fatalf("new leader applies revision 3: %v", err)
	}
	if cur, _, err := stA.Cursor(ctx, compliance.RiskCursor); err != nil || cur != 3 {
		t.Fatalf("risk cursor = %d, %v; want 3", cur, err)
	}
}
