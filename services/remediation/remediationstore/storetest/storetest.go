// Package storetest is the test suite every remediation.Store implementation passes.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/condaccess/condaccess/services/remediation"
)

// EncodeJSON is an event encoder for stores under test: the event as JSON.
func EncodeJSON(ev remediation.Event) ([]byte, error) { return json.Marshal(ev) }

// Run runs the suite; newStore returns an empty store that encodes events with
// EncodeJSON, closed by the suite's cleanup or by the caller.
func Run(t *testing.T, newStore func(t *testing.T) remediation.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s remediation.Store)
	}{
		{"InvestigationRoundTrip", testInvestigationRoundTrip},
		{"OneOpenInvestigationPerDevice", testOneOpenPerDevice},
		{"ListInvestigationsPagingAndFilters", testListInvestigations},
		{"ActionsListAndDeviceActions", testActions},
		{"DueActions", testDue},
		{"LinkAlertOnce", testLinkAlert},
		{"AutomationLevels", testAutomationLevels},
		{"Agents", testAgents},
		{"Resolutions", testResolutions},
		{"Cursor", testCursor},
		{"EventsCommitWithStateAndRollBack", testEvents},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newStore(t)) })
	}
}

var t0 = time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func inv(id, dev string, st remediation.InvestigationState) *remediation.Investigation {
	return &remediation.Investigation{
		ID: id, DeviceID: dev, State: st, AlertIDs: []string{"a-" + id}, Level: remediation.LevelFull,
		Evidence:  []remediation.EvidenceVerdict{{Evidence: remediation.Evidence{File: &remediation.FileEvidence{Path: "/x/" + id, SHA256: "ab", Size: 3}}, Verdict: remediation.VerdictMalicious, AlertID: "a-" + id, Reason: "r"}},
		StartedBy: remediation.Automation, Reason: "because", CreateTime: t0, UpdateTime: t0,
		Trace: remediation.TraceContext{TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	}
}

func act(id, invID, dev string, st remediation.ActionState) *remediation.Action {
	return &remediation.Action{
		ID: id, InvestigationID: invID, DeviceID: dev, Type: remediation.ActionQuarantineFile, State: st,
		Target:     remediation.Evidence{File: &remediation.FileEvidence{Path: "/x/" + id, SHA256: "ab"}},
		CreateTime: t0, UpdateTime: t0, RequestedBy: remediation.Automation,
	}
}

func put(t *testing.T, s remediation.Store, fn func(tx remediation.Tx) error) {
	t.Helper()
	if err := s.Update(ctxT(t), fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

func testInvestigationRoundTrip(t *testing.T, s remediation.Store) {
	ctx := ctxT(t)
	want := inv("i1", "d1", remediation.StateRunning)
	a1 := act("a1", "i1", "d1", remediation.ActionStateQueued)
	a2 := act("a2", "i1", "d1", remediation.ActionStatePendingApproval)
	a2.ApprovalExpireTime = t0.Add(time.Hour)
	a2.Approval = &remediation.Approval{DecidedBy: "x", Time: t0, Comment: "c"}
	put(t, s, func(tx remediation.Tx) error {
		if err := tx.PutInvestigation(want); err != nil {
			return err
		}
		if err := tx.PutAction(a1); err != nil {
			return err
		}
		return tx.PutAction(a2)
	})
	got, err := s.GetInvestigation(ctx, "i1")
	if err != nil {
		t.Fatal(err)
	}
	want.Actions = []*remediation.Action{a1, a2}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("GetInvestigation (-want +got):\n%s", d)
	}
	ga, err := s.GetAction(ctx, "a2")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(a2, ga); d != "" {
		t.Errorf("GetAction (-want +got):\n%s", d)
	}
	if _, err := s.GetInvestigation(ctx, "nope"); !errors.Is(err, remediation.ErrNotFound) {
		t.Errorf("GetInvestigation(unknown) = %v, want ErrNotFound", err)
	}
	if _, err := s.GetAction(ctx, "nope"); !errors.Is(err, remediation.ErrNotFound) {
		t.Errorf("GetAction(unknown) = %v, want ErrNotFound", err)
	}
	// Update in place.
	want.State = remediation.StateRemediated
	put(t, s, func(tx remediation.Tx) error {
		got, err := tx.Investigation("i1")
		if err != nil {
			return err
		}
		got.State = remediation.StateRemediated
		return tx.PutInvestigation(got)
	})
	if got, _ := s.GetInvestigation(ctx, "i1"); got.State != remediation.StateRemediated {
		t.Errorf("state after update = %v, want REMEDIATED", got.State)
	}
}

func testOneOpenPerDevice(t *testing.T, s remediation.Store) {
	ctx := ctxT(t)
	if _, err := s.OpenInvestigation(ctx, "d1"); !errors.Is(err, remediation.ErrNotFound) {
		t.Fatalf("OpenInvestigation(empty) = %v, want ErrNotFound", err)
	}
	put(t, s, func(tx remediation.Tx) error {
		if err := tx.PutInvestigation(inv("closed", "d1", remediation.StateRemediated)); err != nil {
			return err
		}
		return tx.PutInvestigation(inv("open", "d1", remediation.StatePendingApproval))
	})
	got, err := s.OpenInvestigation(ctx, "d1")
	if err != nil || got.ID != "open" {
		t.Fatalf("OpenInvestigation = %v, %v; want open", got, err)
	}
	err = s.Update(ctx, func(tx remediation.Tx) error {
		return tx.PutInvestigation(inv("second", "d1", remediation.StateRunning))
	})
	if err == nil {
		t.Error("a second open investigation on the same device was stored")
	}
	put(t, s, func(tx remediation.Tx) error {
		got, err := tx.OpenInvestigation("d1")
		if err != nil {
			return err
		}
		got.State = remediation.StateCancelled
		return tx.PutInvestigation(got)
	})
	if _, err := s.OpenInvestigation(ctx, "d1"); !errors.Is(err, remediation.ErrNotFound) {
		t.Errorf("OpenInvestigation after close = %v, want ErrNotFound", err)
	}
}

func ids[T any](xs []T, id func(T) string) []string {
	out := []string{}
	for _, x := range xs {
		out = append(out, id(x))
	}
	return out
}

func invID(i *remediation.Investigation) string { return i.ID }
func actID(a *remediation.Action) string        { return a.ID }

func testListInvestigations(t *testing.T, s remediation.Store) {
	ctx := ctxT(t)
	put(t, s, func(tx remediation.Tx) error {
		for i := range 5 {
			st := remediation.StateRemediated
			if i == 4 {
				st = remediation.StateRunning
			}
			dev := "d1"
			if i%2 == 1 {
				dev = "d2"
			}
			if err := tx.PutInvestigation(inv(fmt.Sprintf("i%d", i), dev, st)); err != nil {
				return err
			}
		}
		return tx.PutAction(act("a", "i3", "d2", remediation.ActionStateSucceeded))
	})
	var all []string
	tok := ""
	for range 10 {
		page, next, err := s.ListInvestigations(ctx, remediation.InvestigationFilter{}, 2, tok)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, ids(page, invID)...)
		if next == "" {
			break
		}
		tok = next
	}
	if d := cmp.Diff([]string{"i4", "i3", "i2", "i1", "i0"}, all); d != "" {
		t.Errorf("paged list, newest first (-want +got):\n%s", d)
	}
	tests := []struct {
		name string
		f    remediation.InvestigationFilter
		want []string
	}{
		{"device", remediation.InvestigationFilter{DeviceID: "d2"}, []string{"i3", "i1"}},
		{"state", remediation.InvestigationFilter{State: remediation.StateRunning}, []string{"i4"}},
		{"both", remediation.InvestigationFilter{DeviceID: "d2", State: remediation.StateRunning}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, next, err := s.ListInvestigations(ctx, tt.f, 0, "")
			if err != nil || next != "" {
				t.Fatalf("list: %v, next %q", err, next)
			}
			if d := cmp.Diff(tt.want, ids(got, invID)); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
	got, _, _ := s.ListInvestigations(ctx, remediation.InvestigationFilter{DeviceID: "d2"}, 1, "")
	if len(got) != 1 || len(got[0].Actions) != 1 {
		t.Errorf("listed investigation lacks its actions: %+v", got)
	}
	if _, _, err := s.ListInvestigations(ctx, remediation.InvestigationFilter{}, 1, "garbage!"); !errors.Is(err, remediation.ErrInvalidArgument) {
		t.Errorf("bad page token: %v, want ErrInvalidArgument", err)
	}
}

func testActions(t *testing.T, s remediation.Store) {
	ctx := ctxT(t)
	put(t, s, func(tx remediation.Tx) error {
		for i, st := range []remediation.ActionState{remediation.ActionStateQueued, remediation.ActionStateSent, remediation.ActionStateSucceeded, remediation.ActionStateQueued} {
			dev := "d1"
			if i == 3 {
				dev = "d2"
			}
			if err := tx.PutAction(act(fmt.Sprintf("a%d", i), "", dev, st)); err != nil {
				return err
			}
		}
		return nil
	})
	got, err := s.DeviceActions(ctx, "d1", remediation.ActionStateQueued, remediation.ActionStateSent)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"a0", "a1"}, ids(got, actID)); d != "" {
		t.Errorf("DeviceActions oldest first (-want +got):\n%s", d)
	}
	tests := []struct {
		name string
		f    remediation.ActionFilter
		want []string
	}{
		{"all", remediation.ActionFilter{}, []string{"a3", "a2", "a1", "a0"}},
		{"device", remediation.ActionFilter{DeviceID: "d1"}, []string{"a2", "a1", "a0"}},
		{"state", remediation.ActionFilter{State: remediation.ActionStateQueued}, []string{"a3", "a0"}},
		{"investigation", remediation.ActionFilter{InvestigationID: "none"}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := s.ListActions(ctx, tt.f, 0, "")
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, ids(got, actID)); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
	p1, next, err := s.ListActions(ctx, remediation.ActionFilter{}, 3, "")
	if err != nil || next == "" || len(p1) != 3 {
		t.Fatalf("page 1: %d, %q, %v", len(p1), next, err)
	}
	p2, next, err := s.ListActions(ctx, remediation.ActionFilter{}, 3, next)
	if err != nil || next != "" || len(p2) != 1 || p2[0].ID != "a0" {
		t.Fatalf("page 2: %v, %q, %v", ids(p2, actID), next, err)
	}
}

func testDue(t *testing.T, s remediation.Store) {
	ctx := ctxT(t)
	if _, ok, err := s.NextDue(ctx); ok || err != nil {
		t.Fatalf("NextDue(empty) = %v, %v", ok, err)
	}
	pending := act("p", "", "d1", remediation.ActionStatePendingApproval)
	pending.ApprovalExpireTime = t0.Add(2 * time.Hour)
	sent := act("s", "", "d1", remediation.ActionStateSent)
	sent.Deadline = t0.Add(time.Hour)
	done := act("d", "", "d1", remediation.ActionStateSucceeded)
	done.Deadline = t0 // not due: final
	put(t, s, func(tx remediation.Tx) error {
		for _, a := range []*remediation.Action{pending, sent, done} {
			if err := tx.PutAction(a); err != nil {
				return err
			}
		}
		return nil
	})
	next, ok, err := s.NextDue(ctx)
	if err != nil || !ok || !next.Equal(t0.Add(time.Hour)) {
		t.Errorf("NextDue = %v, %v, %v; want %v", next, ok, err, t0.Add(time.Hour))
	}
	for _, tt := range []struct {
		at   time.Time
		want []string
	}{
		{t0, []string{}},
		{t0.Add(time.Hour), []string{"s"}},
		{t0.Add(3 * time.Hour), []string{"s", "p"}},
	} {
		put(t, s, func(tx remediation.Tx) error {
			got, err := tx.DueActions(tt.at)
			if err != nil {
				return err
			}
			if d := cmp.Diff(tt.want, ids(got, actID)); d != "" {
				t.Errorf("DueActions(%v) (-want +got):\n%s", tt.at, d)
			}
			return nil
		})
	}
	// Leaving the state clears the deadline.
	sent.State = remediation.ActionStateTimedOut
	put(t, s, func(tx remediation.Tx) error { return tx.PutAction(sent) })
	next, _, _ = s.NextDue(ctx)
	if !next.Equal(t0.Add(2 * time.Hour)) {
		t.Errorf("NextDue after timeout = %v, want %v", next, t0.Add(2*time.Hour))
	}
}

func testLinkAlert(t *testing.T, s remediation.Store) {
	ctx := ctxT(t)
	var first, second bool
	put(t, s, func(tx remediation.Tx) error {
		var err error
		if first, err = tx.LinkAlert("a-1", "i1"); err != nil {
			return err
		}
		second, err = tx.LinkAlert("a-1", "i2")
		return err
	})
	if !first || second {
		t.Errorf("LinkAlert twice = %v, %v; want true, false", first, second)
	}
	id, ok, err := s.AlertLinked(ctx, "a-1")
	if err != nil || !ok || id != "i1" {
		t.Errorf("AlertLinked = %q, %v, %v; want i1", id, ok, err)
	}
	put(t, s, func(tx remediation.Tx) error {
		if id, ok, err := tx.AlertLinked("a-1"); err != nil || !ok || id != "i1" {
			t.Errorf("tx.AlertLinked = %q, %v, %v; want i1", id, ok, err)
		}
		return tx.RelinkAlert("a-1", "i3")
	})
	if id, _, _ := s.AlertLinked(ctx, "a-1"); id != "i3" {
		t.Errorf("after RelinkAlert: linked to %q, want i3", id)
	}
	if _, ok, _ := s.AlertLinked(ctx, "a-2"); ok {
		t.Error("AlertLinked(unknown) = true")
	}
}

func testAutomationLevels(t *testing.T, s remediation.Store) {
	ctx := ctxT(t)
	put(t, s, func(tx remediation.Tx) error {
		for _, a := range []remediation.AutomationSetting{
			{Group: "finance", Level: remediation.LevelSemi, UpdateTime: t0, UpdatedBy: "u"},
			{Group: "*", Level: remediation.LevelNone, UpdateTime: t0, UpdatedBy: "u"},
			{Group: "finance", Level: remediation.LevelNone, UpdateTime: t0.Add(time.Minute), UpdatedBy: "v"},
		} {
			if err := tx.PutAutomationLevel(a); err != nil {
				return err
			}
		}
		return nil
	})
	got, err := s.AutomationLevels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []remediation.AutomationSetting{
		{Group: "*", Level: remediation.LevelNone, UpdateTime: t0, UpdatedBy: "u"},
		{Group: "finance", Level: remediation.LevelNone, UpdateTime: t0.Add(time.Minute), UpdatedBy: "v"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("AutomationLevels (-want +got):\n%s", d)
	}
}

func testAgents(t *testing.T, s remediation.Store) {
	ctx := ctxT(t)
	put(t, s, func(tx remediation.Tx) error {
		for _, d := range []string{"d3", "d1", "d2", "d1"} {
			if err := tx.PutAgent(&remediation.Agent{DeviceID: d, Version: "v", Hostname: "h-" + d, ConnectTime: t0, LastHeartbeat: t0}); err != nil {
				return err
			}
		}
		return nil
	})
	p1, next, err := s.ListAgents(ctx, 2, "")
	if err != nil || next == "" {
		t.Fatalf("page 1: %v %q", err, next)
	}
	p2, next, err := s.ListAgents(ctx, 2, next)
	if err != nil || next != "" {
		t.Fatalf("page 2: %v %q", err, next)
	}
	got := ids(append(p1, p2...), func(a *remediation.Agent) string { return a.DeviceID })
	if d := cmp.Diff([]string{"d1", "d2", "d3"}, got); d != "" {
		t.Errorf("agents by device id (-want +got):\n%s", d)
	}
	roots := &remediation.Agent{DeviceID: "d2", Version: "v2", ConnectTime: t0, LastHeartbeat: t0, DetectionRoots: []string{"/home/u/Downloads", `C:\Users\u`}}
	put(t, s, func(tx remediation.Tx) error { return tx.PutAgent(roots) })
	a, err := s.Agent(ctx, "d2")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(roots, a); d != "" {
		t.Errorf("Agent(d2) (-want +got):\n%s", d)
	}
	if _, err := s.Agent(ctx, "nope"); !errors.Is(err, remediation.ErrNotFound) {
		t.Errorf("Agent(unknown) = %v, want ErrNotFound", err)
	}
	// The transaction reads its own write; an unknown agent is ErrNotFound there too.
	connected := &remediation.Agent{DeviceID: "d4", Version: "v", ConnectTime: t0, LastHeartbeat: t0.Add(time.Second), Connected: true}
	put(t, s, func(tx remediation.Tx) error {
		if _, err := tx.Agent("d4"); !errors.Is(err, remediation.ErrNotFound) {
			t.Errorf("tx.Agent(unknown) = %v, want ErrNotFound", err)
		}
		if err := tx.PutAgent(connected); err != nil {
			return err
		}
		got, err := tx.Agent("d4")
		if err != nil {
			return err
		}
		if d := cmp.Diff(connected, got); d != "" {
			t.Errorf("tx.Agent(d4) after PutAgent (-want +got):\n%s", d)
		}
		return nil
	})
	if a, err := s.Agent(ctx, "d4"); err != nil || !a.Connected {
		t.Errorf("Agent(d4) = %+v, %v; want it connected", a, err)
	}
}

func testResolutions(t *testing.T, s remediation.Store) {
	ctx := ctxT(t)
	r1 := remediation.Resolution{AlertID: "a1", InvestigationID: "i1", Trace: remediation.TraceContext{TraceParent: "tp"}, CreateTime: t0}
	r2 := remediation.Resolution{AlertID: "a2", InvestigationID: "i1", CreateTime: t0}
	put(t, s, func(tx remediation.Tx) error {
		for _, r := range []remediation.Resolution{r1, r2, r1} {
			if err := tx.AddResolution(r); err != nil {
				return err
			}
		}
		return nil
	})
	got, err := s.PendingResolutions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]remediation.Resolution{r1, r2}, got); d != "" {
		t.Errorf("PendingResolutions (-want +got):\n%s", d)
	}
	put(t, s, func(tx remediation.Tx) error { return tx.DeleteResolution("a1") })
	got, _ = s.PendingResolutions(ctx)
	if d := cmp.Diff([]remediation.Resolution{r2}, got); d != "" {
		t.Errorf("after delete (-want +got):\n%s", d)
	}
}

func testCursor(t *testing.T, s remediation.Store) {
	ctx := ctxT(t)
	if _, ok, err := s.Cursor(ctx); ok || err != nil {
		t.Fatalf("Cursor(empty) = %v, %v", ok, err)
	}
	for _, rev := range []int64{0, 7, 9} {
		put(t, s, func(tx remediation.Tx) error { return tx.SetCursor(rev) })
		got, ok, err := s.Cursor(ctx)
		if err != nil || !ok || got != rev {
			t.Errorf("Cursor after SetCursor(%d) = %d, %v, %v", rev, got, ok, err)
		}
	}
}

func testEvents(t *testing.T, s remediation.Store) {
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	a := act("a1", "", "d1", remediation.ActionStateQueued)
	put(t, s, func(tx remediation.Tx) error {
		if err := tx.PutAction(a); err != nil {
			return err
		}
		return tx.Emit(remediation.Event{Action: a, Time: t0, Trace: remediation.TraceContext{TraceParent: "tp"}})
	})
	boom := errors.New("boom")
	err := s.Update(ctx, func(tx remediation.Tx) error {
		if err := tx.PutAction(act("a2", "", "d1", remediation.ActionStateQueued)); err != nil {
			return err
		}
		if err := tx.Emit(remediation.Event{Action: a, Time: t0}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want boom", err)
	}
	if _, err := s.GetAction(ctx, "a2"); !errors.Is(err, remediation.ErrNotFound) {
		t.Errorf("rolled-back action is stored: %v", err)
	}
	i := inv("i1", "d1", remediation.StateRunning)
	put(t, s, func(tx remediation.Tx) error {
		if err := tx.PutInvestigation(i); err != nil {
			return err
		}
		return tx.Emit(remediation.Event{Investigation: i, Time: t0})
	})
	if got := s.Revision(); got != 2 {
		t.Errorf("Revision = %d, want 2 (no gap for the rolled-back event)", got)
	}
	type ev struct {
		Rev     int64
		Payload remediation.Event
	}
	var got []ev
	errDone := errors.New("done")
	err = s.Watch(ctx, 0, func(rev int64, payload []byte) error {
		var e remediation.Event
		if err := json.Unmarshal(payload, &e); err != nil {
			return err
		}
		got = append(got, ev{rev, e})
		if len(got) == 2 {
			return errDone
		}
		return nil
	}, func(int64) error { return nil })
	if !errors.Is(err, errDone) {
		t.Fatalf("Watch = %v", err)
	}
	want := []ev{
		{1, remediation.Event{Action: a, Time: t0, Trace: remediation.TraceContext{TraceParent: "tp"}}},
		{2, remediation.Event{Investigation: i, Time: t0}},
	}
	if d := cmp.Diff(want, got, cmpopts.IgnoreFields(remediation.Investigation{}, "Actions")); d != "" {
		t.Errorf("watched events (-want +got):\n%s", d)
	}
}
