package remediationstore_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/services/remediation"
	"github.com/condaccess/condaccess/services/remediation/remediationstore"
	"github.com/condaccess/condaccess/services/remediation/remediationstore/storetest"
)

type event struct {
	Rev     int64
	Payload string
}

// events reads every event after start until the head rev.
func events(t *testing.T, s remediation.Store, start, head int64) []event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []event
	done := errors.New("done")
	err := s.Watch(ctx, start, func(rev int64, p []byte) error {
		out = append(out, event{rev, string(p)})
		if rev >= head {
			return done
		}
		return nil
	}, func(int64) error { return nil })
	if !errors.Is(err, done) {
		t.Fatalf("watch from %d: %v (got %d events)", start, err, len(out))
	}
	return out
}

// TestCopyToPG: every table, the events with their revisions and the cursor move
// from SQLite to PostgreSQL; a watcher resuming at an old revision gets exactly the
// events it missed; new rows list after the copied ones; a second copy is refused
// and changes nothing.
func TestCopyToPG(t *testing.T) {
	ctx := context.Background()
	src, err := remediationstore.Open(ctx, remediationstore.Options{Path: filepath.Join(t.TempDir(), "remediation.db"), Encode: storetest.EncodeJSON, Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	t0 := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	for i, dev := range []string{"d1", "d2", "d3"} {
		inv := &remediation.Investigation{ID: "i-" + dev, DeviceID: dev, State: remediation.StatePendingApproval, AlertIDs: []string{"a-" + dev}, CreateTime: t0, UpdateTime: t0}
		act := &remediation.Action{ID: "act-" + dev, InvestigationID: inv.ID, DeviceID: dev, Type: remediation.ActionQuarantineFile,
			State: remediation.ActionStatePendingApproval, ApprovalExpireTime: t0.Add(time.Hour), CreateTime: t0, UpdateTime: t0,
			Target: remediation.Evidence{File: &remediation.FileEvidence{Path: "/w/" + dev, SHA256: "ab"}}}
		err := src.Update(ctx, func(tx remediation.Tx) error {
			for _, f := range []func() error{
				func() error { return tx.PutInvestigation(inv) },
				func() error { return tx.PutAction(act) },
				func() error { _, err := tx.LinkAlert("a-"+dev, inv.ID); return err },
				func() error { return tx.Emit(remediation.Event{Investigation: inv, Time: t0}) },
				func() error { return tx.Emit(remediation.Event{Action: act, Time: t0}) },
				func() error { return tx.PutAgent(&remediation.Agent{DeviceID: dev, DetectionRoots: []string{"/w"}}) },
				func() error {
					return tx.AddResolution(remediation.Resolution{AlertID: "r-" + dev, InvestigationID: inv.ID, CreateTime: t0})
				},
				func() error {
					set := remediation.AutomationSetting{Group: "g-" + dev, Level: remediation.LevelSemi, UpdateTime: t0, UpdatedBy: "admin"}
					if err := tx.PutAutomationLevel(set); err != nil {
						return err
					}
					return tx.Audit(ctx, audit.Change{ResourceType: remediation.AuditAutomationLevel, ResourceID: set.Group, After: &set})
				},
				func() error { return tx.SetCursor(int64(10 + i)) },
			} {
				if err := f(); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	head := src.Revision()

	url := pgtest.URL(t)
	dst := openPG(t, url)
	c, err := remediationstore.CopyToPG(ctx, src, dst)
	if err != nil {
		t.Fatal(err)
	}
	wantRows := map[string]int64{"investigations": 3, "actions": 3, "alert_links": 3, "automation_levels": 3, "agents": 3,
		"pending_resolutions": 3, "consumer_cursor": 1, "events": 6, "audit_events": 3}
	if d := cmp.Diff(wantRows, c.Rows); d != "" || c.Revision != head {
		t.Fatalf("copied (-want +got):\n%s revision %d, want %d", d, c.Revision, head)
	}
	if dst.Revision() != head {
		t.Fatalf("target revision = %d, want %d", dst.Revision(), head)
	}
	if d := cmp.Diff(events(t, src, 2, head), events(t, dst, 2, head)); d != "" {
		t.Fatalf("events after revision 2 (-sqlite +postgres):\n%s", d)
	}
	for _, read := range []struct {
		name string
		get  func(remediation.Store) (any, error)
	}{
		{"investigations", func(s remediation.Store) (any, error) {
			l, _, err := s.ListInvestigations(ctx, remediation.InvestigationFilter{}, 10, "")
			return l, err
		}},
		{"due", func(s remediation.Store) (any, error) { d, _, err := s.NextDue(ctx); return d, err }},
		{"agents", func(s remediation.Store) (any, error) { l, _, err := s.ListAgents(ctx, 10, ""); return l, err }},
		{"levels", func(s remediation.Store) (any, error) { return s.AutomationLevels(ctx) }},
		{"resolutions", func(s remediation.Store) (any, error) { return s.PendingResolutions(ctx) }},
		{"cursor", func(s remediation.Store) (any, error) { rev, _, err := s.Cursor(ctx); return rev, err }},
		{"link", func(s remediation.Store) (any, error) { id, _, err := s.AlertLinked(ctx, "a-d2"); return id, err }},
	} {
		want, err1 := read.get(src)
		got, err2 := read.get(dst)
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: %v, %v", read.name, err1, err2)
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("%s (-sqlite +postgres):\n%s", read.name, d)
		}
	}
	// New rows number after the copied ones: the newest lists first.
	if err := dst.Update(ctx, func(tx remediation.Tx) error {
		return tx.PutInvestigation(&remediation.Investigation{ID: "i-new", DeviceID: "d9", State: remediation.StateRunning})
	}); err != nil {
		t.Fatalf("insert after copy: %v", err)
	}
	if l, _, err := dst.ListInvestigations(ctx, remediation.InvestigationFilter{}, 1, ""); err != nil || len(l) != 1 || l[0].ID != "i-new" {
		t.Fatalf("newest investigation after copy = %v, %v; want i-new", l, err)
	}
	if _, err := remediationstore.CopyToPG(ctx, src, dst); !errors.Is(err, remediationstore.ErrTargetNotEmpty) {
		t.Fatalf("second copy = %v, want ErrTargetNotEmpty", err)
	}
	if h, err := dst.Head(ctx); err != nil || h != head {
		t.Fatalf("head after a refused copy = %d, %v; want %d", h, err, head)
	}
}
