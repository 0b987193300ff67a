package riskstore_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/condaccess/condaccess/services/risk"
	"github.com/condaccess/condaccess/services/risk/riskgrpc"
	"github.com/condaccess/condaccess/services/risk/riskstore"
	"github.com/condaccess/condaccess/services/risk/riskstore/storetest"
)

func TestSQLiteStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) risk.Store {
		s, err := riskstore.Open(context.Background(), riskstore.Options{Path: filepath.Join(t.TempDir(), "risk.db"), Synchronous: "NORMAL"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// TestReopen proves the schema migrates once and the revision survives a reopen.
func TestReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "risk.db")
	s, err := riskstore.Open(ctx, riskstore.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Update(ctx, func(tx risk.Tx) error {
		_, err := tx.Append(ctx, risk.StoredEvent{Type: risk.EventAlertChanged, Key: "k"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = riskstore.Open(ctx, riskstore.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.Revision(); got != 1 {
		t.Errorf("Revision after reopen = %d, want 1", got)
	}
}

// TestColdCaches: after a reopen (the writer's level and active-alert caches empty), a
// report reads the device's level and active alerts from the database, and what it
// returns matches a fresh read of the committed state.
func TestColdCaches(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "risk.db")
	open := func() (*riskstore.Store, *risk.Service) {
		t.Helper()
		st, err := riskstore.Open(ctx, riskstore.Options{Path: path, Synchronous: "NORMAL"})
		if err != nil {
			t.Fatal(err)
		}
		return st, risk.New(risk.Config{Store: st, Encode: riskgrpc.EncodeEvent})
	}
	report := func(svc *risk.Service, id, dev string, sev risk.Severity) risk.ReportResult {
		t.Helper()
		r, err := svc.ReportAlert(ctx, risk.Alert{ID: id, DeviceID: dev, Severity: sev, Title: "t " + id})
		if err != nil || !r.Created {
			t.Fatalf("ReportAlert(%s) = %+v, %v", id, r, err)
		}
		return r
	}
	st, svc := open()
	report(svc, "h", "dev-1", risk.SeverityHigh)
	report(svc, "l", "dev-1", risk.SeverityLow)
	report(svc, "i", "dev-2", risk.SeverityInformational)
	st.Close()

	st, svc = open()
	defer st.Close()
	for _, tt := range []struct {
		id, dev   string
		sev       risk.Severity
		wantLevel risk.Level
	}{
		{"m", "dev-1", risk.SeverityMedium, risk.LevelHigh}, // known level, unchanged
		{"l2", "dev-2", risk.SeverityLow, risk.LevelLow},    // known level NONE, raised
		{"x", "dev-3", risk.SeverityLow, risk.LevelLow},     // never seen
	} {
		got := report(svc, tt.id, tt.dev, tt.sev).Risk
		want, err := st.DeviceRisk(ctx, tt.dev)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" || got.Level != tt.wantLevel {
			t.Errorf("ReportAlert(%s) risk, level %v want %v (-committed +returned):\n%s", tt.id, got.Level, tt.wantLevel, diff)
		}
	}
	if got := st.Revision(); got == 0 {
		t.Fatal("no revision")
	}
	_, got, err := svc.ResolveAlert(ctx, risk.Resolution{AlertID: "h", Classification: 1})
	if err != nil {
		t.Fatal(err)
	}
	want, err := st.DeviceRisk(ctx, "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" || got.Level != risk.LevelMedium || len(got.Active) != 2 {
		t.Errorf("ResolveAlert(h) risk (-committed +returned):\n%s", diff)
	}
}
