package remediationstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/condaccess/condaccess/internal/lease"
	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/services/remediation"
	"github.com/condaccess/condaccess/services/remediation/remediationstore"
	"github.com/condaccess/condaccess/services/remediation/remediationstore/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func openPG(t *testing.T, url string) *remediationstore.PGStore {
	t.Helper()
	s, err := remediationstore.OpenPG(context.Background(), remediationstore.PGOptions{URL: url, Encode: storetest.EncodeJSON})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPostgresStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) remediation.Store { return openPG(t, pgtest.URL(t)) })
}

// TestPostgresFencedUpdates: Updates under WithFence commit only while their token
// is the lease's current one. A leader that stopped renewing (paused) and lost the
// lease to another replica is refused with lease.ErrFenced, and its refused Update
// changes nothing: neither the cursor nor the event log.
func TestPostgresFencedUpdates(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	a, b := openPG(t, url), openPG(t, url)
	const d = 300 * time.Millisecond
	la := a.Lease(lease.PGOptions{Name: "remediation-consumer", Holder: "a", Duration: d})
	lb := b.Lease(lease.PGOptions{Name: "remediation-consumer", Holder: "b", Duration: d})
	tokA, err := la.TryAcquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	advance := func(s *remediationstore.PGStore, l lease.Lease, tok, rev int64) error {
		return s.Update(remediationstore.WithFence(ctx, l, tok), func(tx remediation.Tx) error {
			if err := tx.Emit(remediation.Event{Investigation: &remediation.Investigation{ID: "i"}}); err != nil {
				return err
			}
			return tx.SetCursor(rev)
		})
	}
	if err := advance(a, la, tokA, 1); err != nil {
		t.Fatalf("leader's fenced update: %v", err)
	}
	// a pauses; b takes over once the lease has expired.
	var tokB int64
	end := time.Now().Add(10 * time.Second)
	for {
		if tokB, err = lb.TryAcquire(ctx); err == nil {
			break
		}
		if !errors.Is(err, lease.ErrHeld) || time.Now().After(end) {
			t.Fatalf("b takes over: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := advance(b, lb, tokB, 2); err != nil {
		t.Fatalf("new leader's fenced update: %v", err)
	}
	head, err := b.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		s     *remediationstore.PGStore
		l     lease.Lease
		token int64
	}{
		{"old leader resumes with its token", a, la, tokA},
		{"old leader presents the new token", a, la, tokB},
		{"new leader presents the old token", b, lb, tokA},
		{"a token never issued", b, lb, tokB + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := advance(tt.s, tt.l, tt.token, 99); !errors.Is(err, lease.ErrFenced) {
				t.Fatalf("fenced update = %v, want ErrFenced", err)
			}
			if rev, _, err := tt.s.Cursor(ctx); err != nil || rev != 2 {
				t.Fatalf("cursor = %d, %v after a refused update; want 2", rev, err)
			}
			if h, err := tt.s.Head(ctx); err != nil || h != head {
				t.Fatalf("event log head = %d, %v after a refused update; want %d", h, err, head)
			}
		})
	}
	// An Update without a fence (an RPC's) is not a leader's: it commits on any replica.
	if err := a.Update(ctx, func(tx remediation.Tx) error { return tx.PutAgent(&remediation.Agent{DeviceID: "d"}) }); err != nil {
		t.Fatalf("unfenced update: %v", err)
	}
}

// TestPostgresReplicasOpenOneInvestigationPerDevice: alerts of one device reach two
// replicas at once. Every Update on either replica holds the event log's counter row,
// so the second replica's transaction sees the first's investigation and joins it:
// no error (no second open investigation refused by the index), and one
// investigation holding every alert.
func TestPostgresReplicasOpenOneInvestigationPerDevice(t *testing.T) {
	url := pgtest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stores := []*remediationstore.PGStore{openPG(t, url), openPG(t, url)}
	var svcs []*remediation.Service
	for _, st := range stores {
		svcs = append(svcs, remediation.New(remediation.Config{Store: st, Risk: noRisk{}}))
	}
	const per = 8
	errs := make(chan error, 2*per)
	var wg sync.WaitGroup
	for r, svc := range svcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				id := fmt.Sprintf("a-%d-%d", r, i)
				errs <- svc.OnAlert(ctx, &remediation.Alert{ID: id, DeviceID: "dev-1", Severity: remediation.SeverityHigh, Title: "t",
					Evidence: []remediation.Evidence{{File: &remediation.FileEvidence{Path: "/w/" + id, SHA256: "ab"}}}}, remediation.TraceContext{}, 0)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("OnAlert: %v", err)
		}
	}
	invs, _, err := stores[1].ListInvestigations(ctx, remediation.InvestigationFilter{DeviceID: "dev-1"}, 10, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(invs) != 1 {
		t.Fatalf("%d investigations of dev-1, want 1", len(invs))
	}
	if len(invs[0].AlertIDs) != 2*per || len(invs[0].Actions) != 2*per {
		t.Fatalf("the investigation has %d alerts and %d actions, want %d of each", len(invs[0].AlertIDs), len(invs[0].Actions), 2*per)
	}
}
