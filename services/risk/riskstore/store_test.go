package riskstore_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/condaccess/condaccess/internal/sqlitedb"
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

// TestMigrateCoveringIndex: a database written with the schema before migration 2
// (alerts_active) opens with alerts_by_device covering, and its devices' active
// alerts, levels and listings read the same as before.
func TestMigrateCoveringIndex(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "risk.db")
	all := riskstore.Migrations()
	old, err := sqlitedb.Open(ctx, sqlitedb.Options{Path: path, Migrations: all[:len(all)-1]})
	if err != nil {
		t.Fatal(err)
	}
	// As the earlier binary wrote them: h active HIGH and l resolved at revision 3 on
	// dev-1 (level HIGH at revision 1), i informational on dev-2 (level NONE at 4).
	err = old.Write(ctx, func(tx *sqlitedb.Tx) error {
		for _, q := range []string{
			`INSERT INTO alerts (alert_id, device_id, severity, status, detect_ns, from_rev, to_rev, content_hash, data) VALUES
				('h', 'dev-1', 4, 1, 1000, 1, NULL, 'x', x'7b7d'),
				('l', 'dev-1', 2, 3, 2000, 2, 3, 'x', x'7b7d'),
				('i', 'dev-2', 1, 1, 3000, 4, NULL, 'x', x'7b7d')`,
			`INSERT INTO device_risk_versions (device_id, revision, level, previous_level, cause_alert_id, change_ns) VALUES
				('dev-1', 1, 4, 0, 'h', 10), ('dev-2', 4, 1, 0, 'i', 40)`,
			`INSERT INTO risk_events (revision, type, key, payload, time_unix_nano) VALUES
				(1, 'alert_changed', 'h', x'', 1), (2, 'alert_changed', 'l', x'', 2), (3, 'alert_changed', 'l', x'', 3), (4, 'alert_changed', 'i', x'', 4)`,
		} {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	old.Close()

	s, err := riskstore.Open(ctx, riskstore.Options{Path: path, Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var active, cols int
	if err := raw.QueryRow(`SELECT (SELECT count(*) FROM sqlite_master WHERE name = 'alerts_active'),
		(SELECT count(*) FROM pragma_index_info('alerts_by_device'))`).Scan(&active, &cols); err != nil || active != 0 || cols != 6 {
		t.Errorf("after migrating: alerts_active %d, alerts_by_device has %d columns, %v; want 0, 6", active, cols, err)
	}
	r, err := s.DeviceRisk(ctx, "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.ActiveIDs(); r.Level != risk.LevelHigh || !cmp.Equal(got, []string{"h"}) {
		t.Errorf("DeviceRisk(dev-1) = level %v active %v, want HIGH [h]", r.Level, got)
	}
	rs, _, rev, err := s.ListDeviceRisks(ctx, risk.DeviceRiskQuery{PageSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rs {
		got = append(got, fmt.Sprintf("%s %v %v", r.DeviceID, r.Level, r.ActiveIDs()))
	}
	want := []string{"dev-1 4 [h]", "dev-2 1 []"}
	if diff := cmp.Diff(want, got); diff != "" || rev != 4 {
		t.Errorf("ListDeviceRisks at revision %d (-want +got):\n%s", rev, diff)
	}
	err = s.Update(ctx, func(tx risk.Tx) error {
		as, err := tx.ActiveAlerts(ctx, "dev-1")
		if err != nil {
			return err
		}
		if len(as) != 1 || as[0].ID != "h" {
			t.Errorf("ActiveAlerts(dev-1) = %+v, want [h]", as)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestReporterSurvivesReopen: an alert's reporter is stored with it and read back
// after a reopen, by Alert and by the listing.
func TestReporterSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "risk.db")
	open := func() (*riskstore.Store, *risk.Service) {
		s, err := riskstore.Open(ctx, riskstore.Options{Path: path, Synchronous: "NORMAL"})
		if err != nil {
			t.Fatal(err)
		}
		return s, risk.New(risk.Config{Store: s, Encode: riskgrpc.EncodeEvent})
	}
	s, svc := open()
	want := risk.Reporter{Kind: risk.ReporterSensor, ID: "siem-connector"}
	if _, err := svc.ReportAlert(ctx, risk.Alert{ID: "a-rep", DeviceID: "dev-1", Severity: risk.SeverityHigh, Title: "t", Reporter: want}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, svc = open()
	defer s.Close()
	a, err := svc.GetAlert(ctx, "a-rep")
	if err != nil {
		t.Fatal(err)
	}
	if a.Reporter != want {
		t.Errorf("reporter after reopen = %+v, want %+v", a.Reporter, want)
	}
	list, _, err := svc.ListAlerts(ctx, risk.AlertQuery{DeviceID: "dev-1"})
	if err != nil || len(list) != 1 || list[0].Reporter != want {
		t.Errorf("listing = %+v, %v; want the reporter %+v", list, err, want)
	}
}
