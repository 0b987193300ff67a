package remediationstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/condaccess/condaccess/internal/lease"
	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/services/remediation"
	"github.com/condaccess/condaccess/services/remediation/remediationstore"
)

// pausingDevices is a device inventory whose first call blocks until released:
// the consumer's work pauses between reading an event and writing what it derived.
type pausingDevices struct {
	entered, release chan struct{}
}

func (p *pausingDevices) DeviceGroups(ctx context.Context, _ string) ([]string, error) {
	select {
	case p.entered <- struct{}{}:
		<-p.release
	default:
	}
	return nil, nil
}

type noRisk struct{}

func (noRisk) GetAlert(context.Context, string) (*remediation.Alert, error) {
	return nil, remediation.ErrNotFound
}
func (noRisk) ResolveAlert(context.Context, string, string) error { return nil }

// TestPausedLeaderAppliesNothingAfterTakeover: the leader's consumer pauses in the
// middle of applying a risk event (it has read the event, not yet written); its
// lease expires and the other replica takes over and applies that event and the
// next. When the old leader resumes, its write is refused (lease.ErrFenced): one
// investigation, opened by the new leader, and the cursor stays at the new
// leader's, not moved back.
func TestPausedLeaderAppliesNothingAfterTakeover(t *testing.T) {
	url := pgtest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stA, stB := openPG(t, url), openPG(t, url)
	const d = 300 * time.Millisecond
	la := stA.Lease(lease.PGOptions{Name: "remediation-leader", Holder: "a", Duration: d})
	lb := stB.Lease(lease.PGOptions{Name: "remediation-leader", Holder: "b", Duration: d})
	pause := &pausingDevices{entered: make(chan struct{}), release: make(chan struct{})}
	svcA := remediation.New(remediation.Config{Store: stA, Risk: noRisk{}, Devices: pause})
	svcB := remediation.New(remediation.Config{Store: stB, Risk: noRisk{}})
	alert := &remediation.Alert{ID: "a-1", DeviceID: "dev-1", Severity: remediation.SeverityHigh, Title: "t",
		Evidence: []remediation.Evidence{{File: &remediation.FileEvidence{Path: "/w/x", SHA256: "ab"}}}}

	tokA, err := la.TryAcquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	resumed := make(chan error, 1)
	go func() {
		resumed <- svcA.OnAlert(remediationstore.WithFence(ctx, la, tokA), alert, remediation.TraceContext{}, 7)
	}()
	select {
	case <-pause.entered:
	case <-ctx.Done():
		t.Fatal("the old leader never started applying the event")
	}
	// A is paused (no renewals); B takes over once the lease has expired.
	var tokB int64
	for {
		if tokB, err = lb.TryAcquire(ctx); err == nil {
			break
		}
		if !errors.Is(err, lease.ErrHeld) || ctx.Err() != nil {
			t.Fatalf("b takes over: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	fb := remediationstore.WithFence(ctx, lb, tokB)
	if err := svcB.OnAlert(fb, alert, remediation.TraceContext{}, 7); err != nil {
		t.Fatalf("new leader applies revision 7: %v", err)
	}
	if err := svcB.StoreCursor(fb, 8); err != nil {
		t.Fatalf("new leader applies revision 8: %v", err)
	}
	head, err := stB.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}

	close(pause.release)
	if err := <-resumed; !errors.Is(err, lease.ErrFenced) {
		t.Fatalf("the resumed old leader's apply = %v, want ErrFenced", err)
	}
	invs, _, err := stB.ListInvestigations(ctx, remediation.InvestigationFilter{}, 10, "")
	if err != nil || len(invs) != 1 {
		t.Fatalf("investigations = %v, %v; want the new leader's one", invs, err)
	}
	if rev, _, err := stB.Cursor(ctx); err != nil || rev != 8 {
		t.Fatalf("cursor = %d, %v; want 8 (the new leader's)", rev, err)
	}
	if h, err := stA.Head(ctx); err != nil || h != head {
		t.Fatalf("event log head = %d, %v after the refused apply; want %d", h, err, head)
	}
}
