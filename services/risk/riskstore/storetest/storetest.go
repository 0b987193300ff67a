// Package storetest is the shared test suite every risk.Store implementation must pass.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/condaccess/condaccess/services/risk"
)

// Run runs the suite; newStore returns an empty store, closed by the caller's cleanup.
func Run(t *testing.T, newStore func(t *testing.T) risk.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s risk.Store)
	}{
		{"AlertRoundTrip", testAlertRoundTrip},
		{"AlertHash", testAlertHash},
		{"FailedUpdateLeavesNoTrace", testFailedUpdate},
		{"DeviceLevelAfterFailedUpdate", testDeviceLevelAfterFailedUpdate},
		{"ActiveAlerts", testActiveAlerts},
		{"ActiveAfterChanges", testActiveAfterChanges},
		{"ListAlerts", testListAlerts},
		{"DeviceRisk", testDeviceRisk},
		{"ListDeviceRisksSnapshot", testListDeviceRisksSnapshot},
		{"RiskHistory", testRiskHistory},
		{"WatchOrder", testWatchOrder},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newStore(t)) })
	}
}

var base = time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)

func alert(id, device string, sev risk.Severity, at time.Duration) risk.Alert {
	return risk.Alert{
		ID: id, DeviceID: device, Severity: sev, Status: risk.StatusNew, Title: "t " + id,
		DetectTime: base.Add(at), CreateTime: base, UpdateTime: base, Version: 1,
		Evidence: []risk.Evidence{{File: &risk.FileEvidence{Path: "/tmp/x", SHA256: "ab"}}, {Process: &risk.ProcessEvidence{PID: 7, Name: "x", CommandLine: "x -y"}}},
	}
}

func update(t *testing.T, s risk.Store, fn func(tx risk.Tx) error) {
	t.Helper()
	if err := s.Update(context.Background(), fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

// insert inserts alerts, each with its own event.
func insert(t *testing.T, s risk.Store, as ...risk.Alert) {
	t.Helper()
	ctx := context.Background()
	update(t, s, func(tx risk.Tx) error {
		for _, a := range as {
			rev, err := appendEvent(ctx, tx, a.ID)
			if err != nil {
				return err
			}
			if err := tx.InsertAlert(ctx, a, "h-"+a.ID, rev); err != nil {
				return err
			}
		}
		return nil
	})
}

// resolveAlert marks an alert resolved with its own event.
func resolveAlert(t *testing.T, s risk.Store, id string) {
	t.Helper()
	ctx := context.Background()
	update(t, s, func(tx risk.Tx) error {
		a, _, ok, err := tx.Alert(ctx, id)
		if err != nil || !ok {
			return fmt.Errorf("alert %s: %v %v", id, ok, err)
		}
		a.Status = risk.StatusResolved
		rev, err := appendEvent(ctx, tx, id)
		if err != nil {
			return err
		}
		return tx.UpdateAlert(ctx, a, rev)
	})
}

func appendEvent(ctx context.Context, tx risk.Tx, key string) (int64, error) {
	return tx.Append(ctx, risk.StoredEvent{Type: risk.EventAlertChanged, Key: key, Payload: []byte(key), TraceParent: "tp-" + key, Time: base})
}

func testAlertRoundTrip(t *testing.T, s risk.Store) {
	ctx := context.Background()
	a := alert("a-1", "dev-1", risk.SeverityHigh, 0)
	a.Comments = []risk.Comment{{Author: "dev", Text: "hi", CreateTime: base}}
	insert(t, s, a)
	got, err := s.Alert(ctx, "a-1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a, got); diff != "" {
		t.Errorf("Alert (-want +got):\n%s", diff)
	}
	a.Status = risk.StatusResolved
	a.ResolvedBy, a.ResolveTime, a.Classification, a.Version = "sec", base.Add(time.Hour), 1, 2
	update(t, s, func(tx risk.Tx) error { return tx.UpdateAlert(ctx, a, 99) })
	update(t, s, func(tx risk.Tx) error {
		got, hash, ok, err := tx.Alert(ctx, "a-1")
		if err != nil || !ok || hash != "h-a-1" {
			return fmt.Errorf("tx.Alert = ok %v hash %q err %v", ok, hash, err)
		}
		if diff := cmp.Diff(a, got); diff != "" {
			t.Errorf("tx.Alert after update (-want +got):\n%s", diff)
		}
		return nil
	})
	if _, err := s.Alert(ctx, "nope"); !errors.Is(err, risk.ErrAlertNotFound) {
		t.Errorf("Alert(nope) = %v, want ErrAlertNotFound", err)
	}
	err = s.Update(ctx, func(tx risk.Tx) error { return tx.UpdateAlert(ctx, alert("nope", "d", 1, 0), 1) })
	if !errors.Is(err, risk.ErrAlertNotFound) {
		t.Errorf("UpdateAlert(nope) = %v, want ErrAlertNotFound", err)
	}
}

func testAlertHash(t *testing.T, s risk.Store) {
	ctx := context.Background()
	insert(t, s, alert("a-1", "dev-1", risk.SeverityLow, 0))
	update(t, s, func(tx risk.Tx) error {
		h, ok, err := tx.AlertHash(ctx, "a-1")
		if err != nil || !ok || h != "h-a-1" {
			t.Errorf("AlertHash(a-1) = %q, %v, %v; want h-a-1", h, ok, err)
		}
		if h, ok, err := tx.AlertHash(ctx, "nope"); err != nil || ok {
			t.Errorf("AlertHash(nope) = %q, %v, %v; want not found", h, ok, err)
		}
		return nil
	})
	// Inserting an existing id fails and changes nothing.
	err := s.Update(ctx, func(tx risk.Tx) error {
		return tx.InsertAlert(ctx, alert("a-1", "dev-2", risk.SeverityHigh, 0), "other", 5)
	})
	if err == nil {
		t.Error("InsertAlert(existing id) succeeded")
	}
	got, err := s.Alert(ctx, "a-1")
	if err != nil || got.DeviceID != "dev-1" {
		t.Errorf("duplicate insert changed the alert: %+v, %v", got, err)
	}
	// InsertNewAlert: an existing id gives its hash and changes nothing; a new one is
	// inserted at the revision NextRevision announced, which the next Append takes.
	update(t, s, func(tx risk.Tx) error {
		h, inserted, err := tx.InsertNewAlert(ctx, alert("a-1", "dev-2", risk.SeverityHigh, 0), "other", 5)
		if err != nil || inserted || h != "h-a-1" {
			t.Errorf("InsertNewAlert(a-1) = %q, %v, %v; want h-a-1, not inserted", h, inserted, err)
		}
		next, err := tx.NextRevision(ctx)
		if err != nil {
			return err
		}
		if again, err := tx.NextRevision(ctx); err != nil || again != next {
			t.Errorf("NextRevision twice = %d then %d, %v", next, again, err)
		}
		if h, inserted, err := tx.InsertNewAlert(ctx, alert("a-2", "dev-2", risk.SeverityHigh, 0), "h-a-2", next); err != nil || !inserted || h != "" {
			t.Errorf("InsertNewAlert(a-2) = %q, %v, %v; want inserted", h, inserted, err)
		}
		rev, err := appendEvent(ctx, tx, "a-2")
		if err != nil {
			return err
		}
		if rev != next {
			t.Errorf("Append after NextRevision %d = %d", next, rev)
		}
		return nil
	})
	if got, err := s.Alert(ctx, "a-1"); err != nil || got.DeviceID != "dev-1" {
		t.Errorf("InsertNewAlert(existing) changed the alert: %+v, %v", got, err)
	}
	if got, err := s.Alert(ctx, "a-2"); err != nil || got.DeviceID != "dev-2" {
		t.Errorf("Alert(a-2) = %+v, %v", got, err)
	}
}

func testFailedUpdate(t *testing.T, s risk.Store) {
	ctx := context.Background()
	before := s.Revision()
	boom := errors.New("boom")
	err := s.Update(ctx, func(tx risk.Tx) error {
		rev, err := appendEvent(ctx, tx, "a-1")
		if err != nil {
			return err
		}
		if err := tx.InsertAlert(ctx, alert("a-1", "dev-1", risk.SeverityHigh, 0), "h", rev); err != nil {
			return err
		}
		if err := tx.PutDeviceRisk(ctx, risk.DeviceRisk{DeviceID: "dev-1", Level: risk.LevelHigh, Revision: rev, UpdateTime: base}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want boom", err)
	}
	if _, err := s.Alert(ctx, "a-1"); !errors.Is(err, risk.ErrAlertNotFound) {
		t.Errorf("alert of a failed update exists: %v", err)
	}
	if _, err := s.DeviceRisk(ctx, "dev-1"); !errors.Is(err, risk.ErrDeviceNotFound) {
		t.Errorf("device risk of a failed update exists: %v", err)
	}
	if got := s.Revision(); got != before {
		t.Errorf("Revision = %d after a failed update, want %d", got, before)
	}
	// The next event takes the revision the failed one gave back.
	var rev int64
	update(t, s, func(tx risk.Tx) (err error) { rev, err = appendEvent(ctx, tx, "x"); return err })
	if rev != before+1 {
		t.Errorf("next revision = %d, want %d", rev, before+1)
	}
}

func testActiveAlerts(t *testing.T, s risk.Store) {
	ctx := context.Background()
	resolved := alert("r", "dev-1", risk.SeverityHigh, 0)
	resolved.Status = risk.StatusResolved
	inProgress := alert("p", "dev-1", risk.SeverityMedium, time.Second)
	inProgress.Status = risk.StatusInProgress
	insert(t, s,
		alert("m2", "dev-1", risk.SeverityMedium, 2*time.Second),
		alert("h", "dev-1", risk.SeverityHigh, 3*time.Second),
		inProgress, resolved,
		alert("i", "dev-1", risk.SeverityInformational, 0),
		alert("l", "dev-1", risk.SeverityLow, 0),
		alert("other", "dev-2", risk.SeverityHigh, 0),
	)
	update(t, s, func(tx risk.Tx) error {
		got, err := tx.ActiveAlerts(ctx, "dev-1")
		if err != nil {
			return err
		}
		want := []risk.ActiveAlert{
			{ID: "h", Severity: risk.SeverityHigh, DetectTime: base.Add(3 * time.Second)},
			{ID: "p", Severity: risk.SeverityMedium, DetectTime: base.Add(time.Second)},
			{ID: "m2", Severity: risk.SeverityMedium, DetectTime: base.Add(2 * time.Second)},
			{ID: "l", Severity: risk.SeverityLow, DetectTime: base},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("ActiveAlerts (-want +got):\n%s", diff)
		}
		if got, err := tx.ActiveAlerts(ctx, "none"); err != nil || len(got) != 0 {
			t.Errorf("ActiveAlerts(none) = %v, %v", got, err)
		}
		return nil
	})
}

func ids(as []risk.Alert) []string {
	out := []string{}
	for _, a := range as {
		out = append(out, a.ID)
	}
	return out
}

func testListAlerts(t *testing.T, s risk.Store) {
	ctx := context.Background()
	resolved := alert("a3", "dev-2", risk.SeverityHigh, 3*time.Minute)
	resolved.Status = risk.StatusResolved
	insert(t, s,
		alert("a1", "dev-1", risk.SeverityLow, time.Minute),
		alert("a2", "dev-1", risk.SeverityHigh, 2*time.Minute),
		resolved,
		alert("a4", "dev-1", risk.SeverityMedium, 4*time.Minute),
		alert("a5", "dev-2", risk.SeverityInformational, 4*time.Minute), // same time as a4: id breaks the tie
	)
	tests := []struct {
		name string
		q    risk.AlertQuery
		want []string
	}{
		{"all newest first", risk.AlertQuery{}, []string{"a5", "a4", "a3", "a2", "a1"}},
		{"device", risk.AlertQuery{DeviceID: "dev-1"}, []string{"a4", "a2", "a1"}},
		{"status", risk.AlertQuery{Status: risk.StatusResolved}, []string{"a3"}},
		{"min severity", risk.AlertQuery{MinSeverity: risk.SeverityMedium}, []string{"a4", "a3", "a2"}},
		{"time range", risk.AlertQuery{DetectedAfter: base.Add(2 * time.Minute), DetectedBefore: base.Add(4 * time.Minute)}, []string{"a3", "a2"}},
		{"device and severity", risk.AlertQuery{DeviceID: "dev-2", MinSeverity: risk.SeverityLow}, []string{"a3"}},
		{"unknown device", risk.AlertQuery{DeviceID: "nope"}, []string{}},
	}
	for _, tt := range tests {
		for _, size := range []int{1, 2, 100} {
			t.Run(fmt.Sprintf("%s/page%d", tt.name, size), func(t *testing.T) {
				q := tt.q
				q.PageSize = size
				got := []string{}
				for pages := 0; ; pages++ {
					if pages > 10 {
						t.Fatal("too many pages")
					}
					as, next, err := s.ListAlerts(ctx, q)
					if err != nil {
						t.Fatal(err)
					}
					if len(as) > size {
						t.Fatalf("page of %d > page size %d", len(as), size)
					}
					got = append(got, ids(as)...)
					if next == "" {
						break
					}
					q.PageToken = next
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("ids (-want +got):\n%s", diff)
				}
			})
		}
	}
	if _, _, err := s.ListAlerts(ctx, risk.AlertQuery{PageSize: 1, PageToken: "!!not a token"}); !errors.Is(err, risk.ErrInvalidPageToken) {
		t.Errorf("bad token: err = %v, want ErrInvalidPageToken", err)
	}
}

// putLevel appends an event and records a level change at its revision.
func putLevel(t *testing.T, s risk.Store, device string, level, prev risk.Level) risk.DeviceRisk {
	t.Helper()
	ctx := context.Background()
	var r risk.DeviceRisk
	update(t, s, func(tx risk.Tx) error {
		rev, err := appendEvent(ctx, tx, device)
		if err != nil {
			return err
		}
		r = risk.DeviceRisk{DeviceID: device, Level: level, Revision: rev, PreviousLevel: prev, CauseAlertID: "c",
			UpdateTime: base.Add(time.Duration(rev))}
		return tx.PutDeviceRisk(ctx, r)
	})
	return r
}

func active(as ...risk.Alert) []risk.ActiveAlert {
	var out []risk.ActiveAlert
	for _, a := range as {
		out = append(out, risk.ActiveAlert{ID: a.ID, Severity: a.Severity, DetectTime: a.DetectTime})
	}
	return out
}

var cmpRisk = cmpopts.EquateEmpty()

func testDeviceRisk(t *testing.T, s risk.Store) {
	ctx := context.Background()
	if _, err := s.DeviceRisk(ctx, "dev-1"); !errors.Is(err, risk.ErrDeviceNotFound) {
		t.Errorf("DeviceRisk(unknown) = %v, want ErrDeviceNotFound", err)
	}
	h, l := alert("h", "dev-1", risk.SeverityHigh, 0), alert("l", "dev-1", risk.SeverityLow, 0)
	insert(t, s, l)
	putLevel(t, s, "dev-1", risk.LevelLow, risk.LevelUnspecified)
	insert(t, s, h, alert("i", "dev-1", risk.SeverityInformational, 0))
	v2 := putLevel(t, s, "dev-1", risk.LevelHigh, risk.LevelLow)
	putLevel(t, s, "dev-2", risk.LevelNone, risk.LevelUnspecified)
	got, err := s.DeviceRisk(ctx, "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	want := v2
	want.Active = active(h, l)
	if diff := cmp.Diff(want, got, cmpRisk); diff != "" {
		t.Errorf("DeviceRisk (-want +got):\n%s", diff)
	}
	update(t, s, func(tx risk.Tx) error {
		got, ok, err := tx.DeviceLevel(ctx, "dev-1")
		if err != nil || !ok {
			return fmt.Errorf("tx.DeviceLevel: %v %v", ok, err)
		}
		if diff := cmp.Diff(v2, got, cmpRisk); diff != "" {
			t.Errorf("tx.DeviceLevel (-want +got):\n%s", diff)
		}
		if _, ok, err := tx.DeviceLevel(ctx, "none"); ok || err != nil {
			t.Errorf("tx.DeviceLevel(none) = %v, %v", ok, err)
		}
		return nil
	})
	resolveAlert(t, s, "h")
	got, err = s.DeviceRisk(ctx, "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(active(l), got.Active, cmpRisk); diff != "" {
		t.Errorf("active after resolving h (-want +got):\n%s", diff)
	}
}

func testListDeviceRisksSnapshot(t *testing.T, s risk.Store) {
	ctx := context.Background()
	var want []risk.DeviceRisk
	for i := range 5 {
		dev := fmt.Sprintf("dev-%d", i)
		a := alert("a-"+dev, dev, risk.Severity(2+i%3), 0)
		insert(t, s, a)
		r := putLevel(t, s, dev, risk.Level(a.Severity), risk.LevelUnspecified)
		r.Active = active(a)
		want = append(want, r)
	}
	rev := s.Revision()
	// Page 1 now; then the devices change; later pages still reflect rev.
	page, next, gotRev, err := s.ListDeviceRisks(ctx, risk.DeviceRiskQuery{PageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	if gotRev != rev {
		t.Errorf("revision = %d, want %d", gotRev, rev)
	}
	got := page
	for i := range 5 {
		dev := fmt.Sprintf("dev-%d", i)
		resolveAlert(t, s, "a-"+dev)
		insert(t, s, alert("b-"+dev, dev, risk.SeverityHigh, 0))
		putLevel(t, s, dev, risk.LevelHigh, want[i].Level)
	}
	insert(t, s, alert("a-dev-9", "dev-9", risk.SeverityHigh, 0))
	putLevel(t, s, "dev-9", risk.LevelHigh, risk.LevelUnspecified)
	for next != "" {
		page, next, gotRev, err = s.ListDeviceRisks(ctx, risk.DeviceRiskQuery{PageSize: 2, PageToken: next})
		if err != nil {
			t.Fatal(err)
		}
		if gotRev != rev {
			t.Errorf("later page revision = %d, want %d", gotRev, rev)
		}
		got = append(got, page...)
	}
	if diff := cmp.Diff(want, got, cmpRisk); diff != "" {
		t.Errorf("snapshot listing (-want +got):\n%s", diff)
	}
	// A new listing sees the new state; min level filters.
	all, next, gotRev, err := s.ListDeviceRisks(ctx, risk.DeviceRiskQuery{PageSize: 100, MinLevel: risk.LevelHigh})
	if err != nil || next != "" || gotRev != s.Revision() {
		t.Fatalf("ListDeviceRisks = next %q rev %d err %v; want rev %d", next, gotRev, err, s.Revision())
	}
	if len(all) != 6 {
		t.Fatalf("high devices = %d, want 6", len(all))
	}
	if ids := all[0].ActiveIDs(); len(ids) != 1 || ids[0] != "b-dev-0" {
		t.Errorf("dev-0 active now = %v, want [b-dev-0]", ids)
	}
	if _, _, _, err := s.ListDeviceRisks(ctx, risk.DeviceRiskQuery{PageSize: 1, PageToken: "garbage"}); !errors.Is(err, risk.ErrInvalidPageToken) {
		t.Errorf("bad token: err = %v, want ErrInvalidPageToken", err)
	}
}

func testRiskHistory(t *testing.T, s risk.Store) {
	ctx := context.Background()
	if _, _, err := s.RiskHistory(ctx, "dev-1", 10, ""); !errors.Is(err, risk.ErrDeviceNotFound) {
		t.Errorf("RiskHistory(unknown) = %v, want ErrDeviceNotFound", err)
	}
	h1 := putLevel(t, s, "dev-1", risk.LevelLow, risk.LevelUnspecified)
	h2 := putLevel(t, s, "dev-1", risk.LevelHigh, risk.LevelLow)
	h3 := putLevel(t, s, "dev-1", risk.LevelNone, risk.LevelHigh)
	putLevel(t, s, "dev-2", risk.LevelHigh, risk.LevelUnspecified)
	var got []risk.DeviceRisk
	tok := ""
	for {
		page, next, err := s.RiskHistory(ctx, "dev-1", 2, tok)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, page...)
		if next == "" {
			break
		}
		tok = next
	}
	if diff := cmp.Diff([]risk.DeviceRisk{h3, h2, h1}, got, cmpRisk); diff != "" {
		t.Errorf("RiskHistory (-want +got):\n%s", diff)
	}
}

func testWatchOrder(t *testing.T, s risk.Store) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := s.Revision()
	for i := range 3 {
		update(t, s, func(tx risk.Tx) error { _, err := appendEvent(ctx, tx, fmt.Sprint("r", i)); return err })
	}
	var got []risk.StoredEvent
	errDone := errors.New("done")
	liveErr := make(chan error, 1)
	err := s.Watch(ctx, start, func(e risk.StoredEvent) error {
		got = append(got, e)
		if len(got) == 3 {
			// Live: one more after the replay.
			go func() {
				liveErr <- s.Update(ctx, func(tx risk.Tx) error { _, err := appendEvent(ctx, tx, "live"); return err })
			}()
		}
		if len(got) == 4 {
			return errDone
		}
		return nil
	}, nil)
	if !errors.Is(err, errDone) {
		t.Fatalf("Watch = %v", err)
	}
	if err := <-liveErr; err != nil {
		t.Fatal(err)
	}
	for i, e := range got {
		if e.Revision != start+int64(i)+1 {
			t.Errorf("event %d revision %d, want %d", i, e.Revision, start+int64(i)+1)
		}
	}
	if k := string(got[3].Payload); k != "live" || got[3].TraceParent != "tp-live" || got[0].Key != "r0" {
		t.Errorf("events = %+v", got)
	}
}

// testDeviceLevelAfterFailedUpdate: a level written by an update that fails is not
// seen by later transactions, whether or not the device had a level before, and a
// level written by a committed update is.
func testDeviceLevelAfterFailedUpdate(t *testing.T, s risk.Store) {
	ctx := context.Background()
	boom := errors.New("boom")
	put := func(dev string, level risk.Level, fail bool) {
		t.Helper()
		err := s.Update(ctx, func(tx risk.Tx) error {
			if _, _, err := tx.DeviceLevel(ctx, dev); err != nil { // read (and maybe cache) first
				return err
			}
			rev, err := appendEvent(ctx, tx, dev)
			if err != nil {
				return err
			}
			if err := tx.PutDeviceRisk(ctx, risk.DeviceRisk{DeviceID: dev, Level: level, Revision: rev, UpdateTime: base}); err != nil {
				return err
			}
			if got, ok, err := tx.DeviceLevel(ctx, dev); err != nil || !ok || got.Level != level || got.Revision != rev {
				t.Errorf("DeviceLevel(%s) in the writing tx = %+v, %v, %v; want level %v at %d", dev, got, ok, err, level, rev)
			}
			if fail {
				return boom
			}
			return nil
		})
		if fail != errors.Is(err, boom) || !fail && err != nil {
			t.Fatalf("Update(%s, %v, fail=%v) = %v", dev, level, fail, err)
		}
	}
	level := func(dev string) (risk.DeviceRisk, bool) {
		t.Helper()
		var r risk.DeviceRisk
		var ok bool
		update(t, s, func(tx risk.Tx) error {
			var err error
			r, ok, err = tx.DeviceLevel(ctx, dev)
			return err
		})
		return r, ok
	}
	put("dev-new", risk.LevelHigh, true)
	if r, ok := level("dev-new"); ok {
		t.Errorf("DeviceLevel(dev-new) after a failed first level = %+v, want unknown", r)
	}
	put("dev-1", risk.LevelLow, false)
	before, ok := level("dev-1")
	if !ok || before.Level != risk.LevelLow || !before.UpdateTime.Equal(base) {
		t.Fatalf("DeviceLevel(dev-1) = %+v, %v; want low at %v", before, ok, base)
	}
	put("dev-1", risk.LevelHigh, true)
	if r, ok := level("dev-1"); !ok || r.Level != risk.LevelLow || r.Revision != before.Revision {
		t.Errorf("DeviceLevel(dev-1) after a failed change = %+v, %v; want %+v", r, ok, before)
	}
	put("dev-1", risk.LevelHigh, false)
	if r, ok := level("dev-1"); !ok || r.Level != risk.LevelHigh {
		t.Errorf("DeviceLevel(dev-1) after a change = %+v, %v; want high", r, ok)
	}
}

// testActiveAfterChanges: the active alerts a transaction reads follow its own
// inserts and resolutions, and a failed update's are not seen afterwards, whether
// the device's active alerts were read before the change or only after it.
func testActiveAfterChanges(t *testing.T, s risk.Store) {
	ctx := context.Background()
	boom := errors.New("boom")
	active := func(tx risk.Tx, dev string) []string {
		t.Helper()
		as, err := tx.ActiveAlerts(ctx, dev)
		if err != nil {
			t.Fatalf("ActiveAlerts(%s): %v", dev, err)
		}
		ids := make([]string, len(as))
		for i, a := range as {
			ids[i] = a.ID
		}
		return ids
	}
	committed := func(dev string) []string {
		t.Helper()
		var ids []string
		update(t, s, func(tx risk.Tx) error { ids = active(tx, dev); return nil })
		return ids
	}
	check := func(what string, got []string, want ...string) {
		t.Helper()
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: active alerts (-want +got):\n%s", what, diff)
		}
	}
	insert(t, s, alert("m", "dev-1", risk.SeverityMedium, 0))
	check("committed", committed("dev-1"), "m")
	for _, readFirst := range []bool{true, false} {
		name := fmt.Sprintf("read first %v", readFirst)
		err := s.Update(ctx, func(tx risk.Tx) error {
			if readFirst {
				check(name+": before", active(tx, "dev-1"), "m")
			}
			rev, err := appendEvent(ctx, tx, "h")
			if err != nil {
				return err
			}
			if err := tx.InsertAlert(ctx, alert("h", "dev-1", risk.SeverityHigh, time.Second), "h", rev); err != nil {
				return err
			}
			a, _, _, err := tx.Alert(ctx, "m")
			if err != nil {
				return err
			}
			a.Status = risk.StatusResolved
			if err := tx.UpdateAlert(ctx, a, rev); err != nil {
				return err
			}
			check(name+": in the failing update", active(tx, "dev-1"), "h")
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("%s: Update = %v, want boom", name, err)
		}
		check(name+": after the failed update", committed("dev-1"), "m")
	}
	// Devices the store has not seen in a transaction yet: their level read after an
	// insert (as a report reads it), then their active alerts, in a failing and in a
	// committed update.
	for _, fail := range []bool{true, false} {
		dev := fmt.Sprintf("dev-cold-%v", fail)
		insert(t, s, alert(dev+"-1", dev, risk.SeverityLow, 0))
		err := s.Update(ctx, func(tx risk.Tx) error {
			rev, err := appendEvent(ctx, tx, dev+"-2")
			if err != nil {
				return err
			}
			if _, inserted, err := tx.InsertNewAlert(ctx, alert(dev+"-2", dev, risk.SeverityHigh, time.Second), "h", rev); err != nil || !inserted {
				return fmt.Errorf("InsertNewAlert = %v, %v", inserted, err)
			}
			if r, known, err := tx.DeviceLevel(ctx, dev); err != nil || known {
				return fmt.Errorf("DeviceLevel(%s) = %+v, %v, %v; want unknown", dev, r, known, err)
			}
			check(dev+": in the update", active(tx, dev), dev+"-2", dev+"-1")
			if fail {
				return boom
			}
			return nil
		})
		if fail != errors.Is(err, boom) || !fail && err != nil {
			t.Fatalf("%s: Update = %v", dev, err)
		}
		if fail {
			check(dev+": after the failed update", committed(dev), dev+"-1")
		} else {
			check(dev+": after the update", committed(dev), dev+"-2", dev+"-1")
		}
	}
	// Committed: an insert (informational and resolved ones are not active) and a
	// resolution, seen in the same and later transactions.
	update(t, s, func(tx risk.Tx) error {
		check("before", active(tx, "dev-1"), "m")
		resolved := alert("r", "dev-1", risk.SeverityHigh, 0)
		resolved.Status = risk.StatusResolved
		for _, a := range []risk.Alert{alert("l", "dev-1", risk.SeverityLow, 0), alert("h", "dev-1", risk.SeverityHigh, time.Second),
			alert("i", "dev-1", risk.SeverityInformational, 0), resolved} {
			rev, err := appendEvent(ctx, tx, a.ID)
			if err != nil {
				return err
			}
			if _, inserted, err := tx.InsertNewAlert(ctx, a, "h-"+a.ID, rev); err != nil || !inserted {
				return fmt.Errorf("InsertNewAlert(%s) = %v, %v", a.ID, inserted, err)
			}
		}
		check("after inserts", active(tx, "dev-1"), "h", "m", "l")
		return nil
	})
	check("committed inserts", committed("dev-1"), "h", "m", "l")
	resolveAlert(t, s, "m")
	check("committed resolution", committed("dev-1"), "h", "l")
	// A repeated id inserts nothing.
	update(t, s, func(tx risk.Tx) error {
		if _, inserted, err := tx.InsertNewAlert(ctx, alert("m", "dev-1", risk.SeverityHigh, 0), "other", 99); err != nil || inserted {
			return fmt.Errorf("InsertNewAlert(m again) = %v, %v", inserted, err)
		}
		check("after a repeated id", active(tx, "dev-1"), "h", "l")
		return nil
	})
	check("other device", committed("dev-2"))
}
