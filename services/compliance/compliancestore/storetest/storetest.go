// Package storetest is the shared test suite every compliance.Store implementation passes.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/condaccess/condaccess/services/compliance"
)

// Run runs the suite; newStore returns an empty store, closed by the caller's cleanup.
func Run(t *testing.T, newStore func(t *testing.T) compliance.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s compliance.Store)
	}{
		{"Devices", testDevices},
		{"Policies", testPolicies},
		{"SettingsCursorsSweep", testSettingsCursorsSweep},
		{"Risk", testRisk},
		{"ComplianceAndEvalRows", testCompliance},
		{"Exclusions", testExclusions},
		{"EventsCommitWithState", testEvents},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newStore(t)) })
	}
}

var t0 = time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)

func update(t *testing.T, s compliance.Store, fn func(ctx context.Context, tx compliance.Tx) error) {
	t.Helper()
	ctx := context.Background()
	if err := s.Update(ctx, func(tx compliance.Tx) error { return fn(ctx, tx) }); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

func ids[T any](xs []*T, id func(*T) string) []string {
	out := []string{}
	for _, x := range xs {
		out = append(out, id(x))
	}
	return out
}

func devID(d *compliance.Device) string { return d.ID }

func testDevices(t *testing.T, s compliance.Store) {
	ctx := context.Background()
	devs := []*compliance.Device{
		{ID: "a", Platform: compliance.PlatformWindows, OwnerUserID: "u1", Groups: []string{"fin", "hr"}, EnrollTime: t0, UpdateTime: t0, Version: 1},
		{ID: "b", Platform: compliance.PlatformLinux, OwnerUserID: "u2", Groups: []string{"fin"}, EnrollTime: t0, UpdateTime: t0, Version: 1},
		{ID: "c", Platform: compliance.PlatformWindows, OwnerUserID: "u1", EnrollTime: t0, UpdateTime: t0, Retired: true, RetireTime: t0, Version: 2},
		{ID: "d", Platform: compliance.PlatformMacOS, OwnerUserID: "u3", Groups: []string{"hr"}, OSVersion: "14.4.1", LastSeenTime: t0, EnrollTime: t0, UpdateTime: t0, Version: 1},
	}
	update(t, s, func(ctx context.Context, tx compliance.Tx) error {
		for _, d := range devs {
			if err := tx.PutDevice(ctx, d); err != nil {
				return err
			}
		}
		return nil
	})
	got, err := s.GetDevice(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(devs[3], got); diff != "" {
		t.Errorf("GetDevice (-want +got):\n%s", diff)
	}
	if _, err := s.GetDevice(ctx, "zz"); !errors.Is(err, compliance.ErrDeviceNotFound) {
		t.Errorf("GetDevice(unknown) = %v, want ErrDeviceNotFound", err)
	}
	tests := []struct {
		name string
		f    compliance.DeviceFilter
		want []string
	}{
		{"all active", compliance.DeviceFilter{}, []string{"a", "b", "d"}},
		{"with retired", compliance.DeviceFilter{IncludeRetired: true}, []string{"a", "b", "c", "d"}},
		{"page", compliance.DeviceFilter{After: "a", Limit: 1}, []string{"b"}},
		{"platform", compliance.DeviceFilter{Platform: compliance.PlatformWindows, IncludeRetired: true}, []string{"a", "c"}},
		{"group", compliance.DeviceFilter{Group: "hr"}, []string{"a", "d"}},
		{"owner", compliance.DeviceFilter{OwnerUserID: "u1"}, []string{"a"}},
		{"group and platform", compliance.DeviceFilter{Group: "fin", Platform: compliance.PlatformLinux}, []string{"b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds, err := s.ListDevices(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, ids(ds, devID)); diff != "" {
				t.Errorf("ListDevices (-want +got):\n%s", diff)
			}
		})
	}
	update(t, s, func(ctx context.Context, tx compliance.Tx) error {
		for _, q := range []struct {
			q    compliance.EvalQuery
			want []string
		}{
			{compliance.EvalQuery{Groups: []string{"hr"}}, []string{"a", "d"}},
			{compliance.EvalQuery{Groups: []string{"hr", "fin"}, After: "a", Limit: 1}, []string{"b"}},
			{compliance.EvalQuery{Groups: []string{}}, []string{}},
		} {
			rows, err := tx.EvalRows(ctx, q.q)
			if err != nil {
				return err
			}
			if got := ids(ptrs(rows), func(r *compliance.EvalRow) string { return r.Device.ID }); !slices.Equal(got, q.want) {
				return fmt.Errorf("EvalRows(%+v) = %v, want %v", q.q, got, q.want)
			}
		}
		return nil
	})
	// Changing groups replaces them.
	update(t, s, func(ctx context.Context, tx compliance.Tx) error {
		d, err := tx.Device(ctx, "a")
		if err != nil {
			return err
		}
		d.Groups = []string{"ops"}
		return tx.PutDevice(ctx, d)
	})
	ds, err := s.ListDevices(ctx, compliance.DeviceFilter{Group: "hr"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"d"}, ids(ds, devID)); diff != "" {
		t.Errorf("group listing after regrouping (-want +got):\n%s", diff)
	}
}

func testPolicies(t *testing.T, s compliance.Store) {
	ctx := context.Background()
	p1 := &compliance.Policy{ID: "p1", DisplayName: "P1", MaxDeviceRisk: compliance.RiskMedium, MinOSVersion: "10.0",
		Platforms:  []compliance.Platform{compliance.PlatformWindows},
		Assignment: compliance.Assignment{IncludeGroups: []string{"fin"}, ExcludeGroups: []string{"kiosk"}},
		Actions:    compliance.Actions{Grace: time.Hour, RiskGrace: []compliance.RiskGrace{{Level: compliance.RiskLow, Grace: time.Minute}}},
		CreateTime: t0, UpdateTime: t0, Version: 1}
	p2 := &compliance.Policy{ID: "p2", DisplayName: "P2", Assignment: compliance.Assignment{AllDevices: true}, CreateTime: t0, UpdateTime: t0, Version: 3}
	update(t, s, func(ctx context.Context, tx compliance.Tx) error {
		if err := tx.PutPolicy(ctx, p2); err != nil {
			return err
		}
		return tx.PutPolicy(ctx, p1)
	})
	got, err := s.GetPolicy(ctx, "p1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(p1, got); diff != "" {
		t.Errorf("GetPolicy (-want +got):\n%s", diff)
	}
	ps, err := s.ListPolicies(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]*compliance.Policy{p1, p2}, ps); diff != "" {
		t.Errorf("ListPolicies (-want +got):\n%s", diff)
	}
	ps, err = s.ListPolicies(ctx, "p1", 10)
	if err != nil || len(ps) != 1 || ps[0].ID != "p2" {
		t.Errorf("ListPolicies after p1 = %v, %v; want [p2]", ps, err)
	}
	update(t, s, func(ctx context.Context, tx compliance.Tx) error {
		all, err := tx.Policies(ctx)
		if err != nil {
			return err
		}
		if len(all) != 2 {
			return fmt.Errorf("tx.Policies = %d policies, want 2", len(all))
		}
		return tx.DeletePolicy(ctx, "p1")
	})
	if _, err := s.GetPolicy(ctx, "p1"); !errors.Is(err, compliance.ErrPolicyNotFound) {
		t.Errorf("GetPolicy after delete = %v, want ErrPolicyNotFound", err)
	}
}

func testSettingsCursorsSweep(t *testing.T, s compliance.Store) {
	ctx := context.Background()
	st, err := s.GetSettings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.DevicesWithoutPolicyCompliant {
		t.Error("default settings make devices without policy compliant; want noncompliant")
	}
	if _, ok, err := s.Cursor(ctx, "risk"); ok || err != nil {
		t.Errorf("Cursor on empty store = ok %v, %v; want none", ok, err)
	}
	sw := compliance.SweepState{Active: true, After: "d-5", Generation: 4, TraceParent: "00-aa-bb-01", Cause: "x"}
	update(t, s, func(ctx context.Context, tx compliance.Tx) error {
		if err := tx.PutSettings(ctx, compliance.Settings{DevicesWithoutPolicyCompliant: true, Version: st.Version + 1}); err != nil {
			return err
		}
		if err := tx.SetCursor(ctx, "risk", 41); err != nil {
			return err
		}
		if err := tx.SetCursor(ctx, "risk", 42); err != nil {
			return err
		}
		return tx.PutSweep(ctx, sw)
	})
	st2, err := s.GetSettings(ctx)
	if err != nil || !st2.DevicesWithoutPolicyCompliant || st2.Version != st.Version+1 {
		t.Errorf("settings after update = %+v, %v", st2, err)
	}
	if rev, ok, err := s.Cursor(ctx, "risk"); rev != 42 || !ok || err != nil {
		t.Errorf("Cursor = %d %v %v, want 42", rev, ok, err)
	}
	got, err := s.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sw, got); diff != "" {
		t.Errorf("Sweep (-want +got):\n%s", diff)
	}
}

func testRisk(t *testing.T, s compliance.Store) {
	ctx := context.Background()
	r := &compliance.DeviceRisk{DeviceID: "x", Level: compliance.RiskHigh, ActiveAlertIDs: []string{"a-1"}, Revision: 7, UpdateTime: t0}
	update(t, s, func(ctx context.Context, tx compliance.Tx) error { return tx.PutRisk(ctx, r) })
	got, err := s.GetRisk(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(r, got); diff != "" {
		t.Errorf("GetRisk (-want +got):\n%s", diff)
	}
	if got, err := s.GetRisk(ctx, "y"); got != nil || err != nil {
		t.Errorf("GetRisk(unknown) = %v, %v; want nil, nil", got, err)
	}
	update(t, s, func(ctx context.Context, tx compliance.Tx) error { return tx.DeleteAllRisks(ctx) })
	if got, _ := s.GetRisk(ctx, "x"); got != nil {
		t.Errorf("GetRisk after DeleteAllRisks = %v", got)
	}
}

func testCompliance(t *testing.T, s compliance.Store) {
	ctx := context.Background()
	mk := func(id string, st compliance.State, next time.Time) *compliance.DeviceCompliance {
		return &compliance.DeviceCompliance{DeviceID: id, State: st, Reason: "r " + id, Risk: compliance.RiskNone, EvaluateTime: t0, NextEvaluateTime: next,
			Policies: []compliance.PolicyResult{{PolicyID: "p", DisplayName: "P", State: st, Settings: []compliance.SettingResult{{Setting: "max_device_risk", Expected: "e", Actual: "a", Reason: "why"}}}}}
	}
	cs := []*compliance.DeviceCompliance{
		mk("a", compliance.StateCompliant, time.Time{}),
		mk("b", compliance.StateInGrace, t0.Add(2*time.Hour)),
		mk("c", compliance.StateNoncompliant, time.Time{}),
		mk("d", compliance.StateInGrace, t0.Add(time.Hour)),
	}
	x := &compliance.Exclusion{ID: "x1", DeviceID: "c", Reason: "r", CreatedBy: "me", CreateTime: t0}
	update(t, s, func(ctx context.Context, tx compliance.Tx) error {
		for _, c := range cs {
			if err := tx.PutDevice(ctx, &compliance.Device{ID: c.DeviceID, Platform: compliance.PlatformLinux, Version: 1}); err != nil {
				return err
			}
		}
		if err := tx.PutCompliances(ctx, cs); err != nil {
			return err
		}
		if err := tx.PutDevice(ctx, &compliance.Device{ID: "e", Platform: compliance.PlatformLinux, Version: 1}); err != nil {
			return err
		}
		if err := tx.PutRisk(ctx, &compliance.DeviceRisk{DeviceID: "a", Level: compliance.RiskLow, Revision: 3}); err != nil {
			return err
		}
		return tx.PutExclusion(ctx, x)
	})
	got, err := s.GetCompliance(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(cs[1], got); diff != "" {
		t.Errorf("GetCompliance (-want +got):\n%s", diff)
	}
	if _, err := s.GetCompliance(ctx, "e"); !errors.Is(err, compliance.ErrDeviceNotFound) {
		t.Errorf("GetCompliance(never evaluated) = %v, want ErrDeviceNotFound", err)
	}
	list, _, err := s.ListCompliance(ctx, compliance.ComplianceFilter{State: compliance.StateInGrace})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"b", "d"}, ids(list, func(c *compliance.DeviceCompliance) string { return c.DeviceID })); diff != "" {
		t.Errorf("ListCompliance(IN_GRACE) (-want +got):\n%s", diff)
	}
	list, _, err = s.ListCompliance(ctx, compliance.ComplianceFilter{After: "a", Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"b", "c"}, ids(list, func(c *compliance.DeviceCompliance) string { return c.DeviceID })); diff != "" {
		t.Errorf("ListCompliance page (-want +got):\n%s", diff)
	}
	next, ok, err := s.NextEvaluation(ctx)
	if err != nil || !ok || !next.Equal(t0.Add(time.Hour)) {
		t.Errorf("NextEvaluation = %v %v %v, want %v", next, ok, err, t0.Add(time.Hour))
	}

	update(t, s, func(ctx context.Context, tx compliance.Tx) error {
		rows, err := tx.EvalRows(ctx, compliance.EvalQuery{DeviceIDs: []string{"c", "a", "zz", "e"}})
		if err != nil {
			return err
		}
		if got := ids(ptrs(rows), func(r *compliance.EvalRow) string { return r.Device.ID }); !slices.Equal(got, []string{"a", "c", "e"}) {
			return fmt.Errorf("EvalRows by ids = %v, want [a c e]", got)
		}
		if rows[0].Risk == nil || rows[0].Risk.Level != compliance.RiskLow || rows[0].Compliance == nil || rows[0].Exclusion != nil {
			return fmt.Errorf("row a = %+v, want its risk and compliance, no exclusion", rows[0])
		}
		if rows[1].Exclusion == nil || rows[1].Exclusion.ID != "x1" || rows[1].Risk != nil {
			return fmt.Errorf("row c = %+v, want exclusion x1 and no risk", rows[1])
		}
		if rows[2].Compliance != nil {
			return fmt.Errorf("row e has compliance %+v before any evaluation", rows[2].Compliance)
		}
		rows, err = tx.EvalRows(ctx, compliance.EvalQuery{After: "b", Limit: 2})
		if err != nil {
			return err
		}
		if got := ids(ptrs(rows), func(r *compliance.EvalRow) string { return r.Device.ID }); !slices.Equal(got, []string{"c", "d"}) {
			return fmt.Errorf("EvalRows after b = %v, want [c d]", got)
		}
		rows, err = tx.EvalRows(ctx, compliance.EvalQuery{DueAt: t0.Add(90 * time.Minute), Limit: 10})
		if err != nil {
			return err
		}
		if got := ids(ptrs(rows), func(r *compliance.EvalRow) string { return r.Device.ID }); !slices.Equal(got, []string{"d"}) {
			return fmt.Errorf("EvalRows due = %v, want [d]", got)
		}
		return nil
	})
}

func ptrs[T any](xs []T) []*T {
	out := make([]*T, len(xs))
	for i := range xs {
		out[i] = &xs[i]
	}
	return out
}

func testExclusions(t *testing.T, s compliance.Store) {
	ctx := context.Background()
	xs := []*compliance.Exclusion{
		{ID: "x1", DeviceID: "a", Reason: "r1", CreatedBy: "u", CreateTime: t0, EndTime: t0.Add(time.Minute), EndedBy: "u"},
		{ID: "x2", DeviceID: "a", Reason: "r2", CreatedBy: "u", CreateTime: t0.Add(2 * time.Minute), ExpireTime: t0.Add(time.Hour)},
		{ID: "x3", DeviceID: "b", Reason: "r3", CreatedBy: "v", CreateTime: t0.Add(3 * time.Minute)},
	}
	update(t, s, func(ctx context.Context, tx compliance.Tx) error {
		for _, x := range xs {
			if err := tx.PutExclusion(ctx, x); err != nil {
				return err
			}
		}
		got, err := tx.ActiveExclusion(ctx, "a")
		if err != nil {
			return err
		}
		if diff := cmp.Diff(xs[1], got); diff != "" {
			return fmt.Errorf("ActiveExclusion (-want +got):\n%s", diff)
		}
		return nil
	})
	xid := func(x *compliance.Exclusion) string { return x.ID }
	tests := []struct {
		name string
		f    compliance.ExclusionFilter
		want []string
	}{
		{"all newest first", compliance.ExclusionFilter{}, []string{"x3", "x2", "x1"}},
		{"device", compliance.ExclusionFilter{DeviceID: "a"}, []string{"x2", "x1"}},
		{"active", compliance.ExclusionFilter{ActiveOnly: true}, []string{"x3", "x2"}},
		{"page", compliance.ExclusionFilter{AfterTime: xs[2].CreateTime, AfterID: "x3", Limit: 1}, []string{"x2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.ListExclusions(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, ids(got, xid)); diff != "" {
				t.Errorf("ListExclusions (-want +got):\n%s", diff)
			}
		})
	}
	// Ending an exclusion removes it from the active ones.
	update(t, s, func(ctx context.Context, tx compliance.Tx) error {
		x := *xs[1]
		x.EndTime, x.EndedBy = t0.Add(time.Hour), compliance.SystemSubject
		if err := tx.PutExclusion(ctx, &x); err != nil {
			return err
		}
		if got, err := tx.ActiveExclusion(ctx, "a"); got != nil || err != nil {
			return fmt.Errorf("ActiveExclusion after end = %v, %v; want none", got, err)
		}
		return nil
	})
}

func testEvents(t *testing.T, s compliance.Store) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := s.Revision()
	ev := func(key string) compliance.StoredEvent {
		return compliance.StoredEvent{Type: compliance.EventDeviceChanged, Key: key, Payload: []byte(key), TraceParent: "tp-" + key, Time: t0}
	}
	var revs []int64
	update(t, s, func(ctx context.Context, tx compliance.Tx) error {
		for _, k := range []string{"a", "b"} {
			r, err := tx.AppendEvent(ctx, ev(k))
			if err != nil {
				return err
			}
			revs = append(revs, r)
		}
		return nil
	})
	if !slices.Equal(revs, []int64{start + 1, start + 2}) || s.Revision() != start+2 {
		t.Fatalf("revisions %v (current %d), want %d, %d", revs, s.Revision(), start+1, start+2)
	}
	// A batch gets consecutive revisions.
	update(t, s, func(ctx context.Context, tx compliance.Tx) error {
		first, err := tx.AppendEvents(ctx, []compliance.StoredEvent{ev("b1"), ev("b2"), ev("b3")})
		if err != nil {
			return err
		}
		if first != start+3 {
			return fmt.Errorf("AppendEvents first revision %d, want %d", first, start+3)
		}
		return nil
	})
	// A failed Update leaves neither its state nor its event behind.
	boom := errors.New("boom")
	err := s.Update(ctx, func(tx compliance.Tx) error {
		if err := tx.PutDevice(ctx, &compliance.Device{ID: "ghost", Platform: compliance.PlatformLinux}); err != nil {
			return err
		}
		if _, err := tx.AppendEvent(ctx, ev("ghost")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("failed Update = %v, want boom", err)
	}
	if _, err := s.GetDevice(ctx, "ghost"); !errors.Is(err, compliance.ErrDeviceNotFound) {
		t.Errorf("device of a failed Update: %v, want not found", err)
	}
	update(t, s, func(ctx context.Context, tx compliance.Tx) error {
		_, err := tx.AppendEvent(ctx, ev("c"))
		return err
	})
	var got []string
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	err = s.Watch(wctx, start, func(e compliance.StoredEvent) error {
		got = append(got, fmt.Sprintf("%d:%s:%s:%s", e.Revision-start, e.Key, e.Payload, e.TraceParent))
		if len(got) == 6 {
			wcancel()
		}
		return nil
	}, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch = %v, want it cancelled after 6 events", err)
	}
	want := []string{"1:a:a:tp-a", "2:b:b:tp-b", "3:b1:b1:tp-b1", "4:b2:b2:tp-b2", "5:b3:b3:tp-b3", "6:c:c:tp-c"}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("watched events (-want +got):\n%s", diff)
	}
}
