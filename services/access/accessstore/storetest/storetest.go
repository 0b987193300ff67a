// Package storetest is the shared test suite every access.Store implementation passes.
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

	"github.com/condaccess/condaccess/services/access"
)

// Run runs the suite; newStore returns an empty store (closed by the caller's cleanup).
func Run(t *testing.T, newStore func(t *testing.T) access.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s access.Store)
	}{
		{"Users", testUsers},
		{"ExternalIDs", testExternalIDs},
		{"GroupsAndMembership", testGroups},
		{"Applications", testApplications},
		{"Paging", testPaging},
		{"ImportAndLoad", testImport},
		{"Policies", testPolicies},
		{"Devices", testDevices},
		{"SessionsAndRevocation", testSessions},
		{"UserRevocations", testUserRevocations},
		{"SignIns", testSignIns},
		{"SignInsManyBatches", testSignInsMany},
		{"SignInsFollow", testSignInsFollow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newStore(t)) })
	}
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: err = %v, want %v", what, err, target)
	}
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func testUsers(t *testing.T, s access.Store) {
	ctx := context.Background()
	u := &access.User{ID: "u-1", DisplayName: "Ada", EmergencyAccess: true, CreateTime: t0, UpdateTime: t0, Etag: "e1"}
	must(t, "create", s.CreateUser(ctx, u))
	wantErr(t, "create again", s.CreateUser(ctx, u), access.ErrAlreadyExists)
	got, err := s.GetUser(ctx, "u-1")
	must(t, "get", err)
	if diff := cmp.Diff(u, got, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("get (-want +got):\n%s", diff)
	}
	_, err = s.GetUser(ctx, "nobody")
	wantErr(t, "get unknown", err, access.ErrNotFound)

	upd := *u
	upd.DisplayName, upd.Disabled, upd.UpdateTime, upd.Etag = "Ada L.", true, t0.Add(time.Second), "e2"
	wantErr(t, "update stale etag", s.UpdateUser(ctx, &upd, "stale", nil), access.ErrEtagMismatch)
	must(t, "update", s.UpdateUser(ctx, &upd, "e1", nil))
	got, _ = s.GetUser(ctx, "u-1")
	if diff := cmp.Diff(&upd, got, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("after update (-want +got):\n%s", diff)
	}
	wantErr(t, "update unknown", s.UpdateUser(ctx, &access.User{ID: "x"}, "", nil), access.ErrNotFound)
	wantErr(t, "delete stale", s.DeleteUser(ctx, "u-1", "e1", nil), access.ErrEtagMismatch)
	must(t, "delete", s.DeleteUser(ctx, "u-1", "e2", nil))
	wantErr(t, "delete again", s.DeleteUser(ctx, "u-1", "", nil), access.ErrNotFound)
}

func testExternalIDs(t *testing.T, s access.Store) {
	ctx := context.Background()
	ada := &access.User{ID: "ada", ExternalID: "00u-ada", CreateTime: t0, UpdateTime: t0, Etag: "e1"}
	bob := &access.User{ID: "bob", ExternalID: "00u-bob", CreateTime: t0, UpdateTime: t0, Etag: "e1"}
	must(t, "create ada", s.CreateUser(ctx, ada))
	must(t, "create bob", s.CreateUser(ctx, bob))
	must(t, "create without external id", s.CreateUser(ctx, &access.User{ID: "cy", CreateTime: t0, UpdateTime: t0, Etag: "e1"}))
	must(t, "a second user without external id", s.CreateUser(ctx, &access.User{ID: "dee", CreateTime: t0, UpdateTime: t0, Etag: "e1"}))

	got, err := s.UserByExternalID(ctx, "00u-bob")
	must(t, "by external id", err)
	if diff := cmp.Diff(bob, got, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("by external id (-want +got):\n%s", diff)
	}
	for _, ext := range []string{"", "bob", "00U-BOB", "00u-nobody"} {
		_, err := s.UserByExternalID(ctx, ext)
		wantErr(t, fmt.Sprintf("by external id %q", ext), err, access.ErrNotFound)
	}

	// A clash is refused and changes nothing.
	wantErr(t, "create with a taken external id",
		s.CreateUser(ctx, &access.User{ID: "eve", ExternalID: "00u-ada", CreateTime: t0, UpdateTime: t0, Etag: "e1"}), access.ErrAlreadyExists)
	if _, err := s.GetUser(ctx, "eve"); !errors.Is(err, access.ErrNotFound) {
		t.Fatalf("refused create stored the user: %v", err)
	}
	steal := *bob
	steal.ExternalID, steal.Etag = "00u-ada", "e2"
	wantErr(t, "update to a taken external id", s.UpdateUser(ctx, &steal, "e1", nil), access.ErrAlreadyExists)
	wantErr(t, "import a taken external id", s.ImportDirectory(ctx, &access.Directory{Users: []*access.User{
		{ID: "cy", ExternalID: "00u-bob", CreateTime: t0, UpdateTime: t0, Etag: "e3"}}}), access.ErrAlreadyExists)
	for id, want := range map[string]string{"ada": "00u-ada", "bob": "00u-bob", "cy": ""} {
		got, err := s.GetUser(ctx, id)
		must(t, "get "+id, err)
		if got.ExternalID != want {
			t.Fatalf("after refused changes %s has external id %q, want %q", id, got.ExternalID, want)
		}
	}

	// Changing and clearing an external id frees it.
	moved := *bob
	moved.ExternalID, moved.Etag = "00u-bob-2", "e2"
	must(t, "update external id", s.UpdateUser(ctx, &moved, "e1", nil))
	_, err = s.UserByExternalID(ctx, "00u-bob")
	wantErr(t, "old external id", err, access.ErrNotFound)
	// An import may swap external ids between the users it writes.
	must(t, "import swap", s.ImportDirectory(ctx, &access.Directory{Users: []*access.User{
		{ID: "ada", ExternalID: "00u-bob-2", CreateTime: t0, UpdateTime: t0, Etag: "e4"},
		{ID: "bob", ExternalID: "00u-ada", CreateTime: t0, UpdateTime: t0, Etag: "e4"}}}))
	for ext, want := range map[string]string{"00u-bob-2": "ada", "00u-ada": "bob"} {
		got, err := s.UserByExternalID(ctx, ext)
		must(t, "after swap "+ext, err)
		if got.ID != want {
			t.Fatalf("after swap %s is %q, want %q", ext, got.ID, want)
		}
	}
	d, err := s.LoadDirectory(ctx)
	must(t, "load", err)
	exts := map[string]string{}
	for _, u := range d.Users {
		exts[u.ID] = u.ExternalID
	}
	if diff := cmp.Diff(map[string]string{"ada": "00u-bob-2", "bob": "00u-ada", "cy": "", "dee": ""}, exts); diff != "" {
		t.Fatalf("loaded external ids (-want +got):\n%s", diff)
	}
	must(t, "delete ada", s.DeleteUser(ctx, "ada", "", nil))
	_, err = s.UserByExternalID(ctx, "00u-bob-2")
	wantErr(t, "external id of a deleted user", err, access.ErrNotFound)
	must(t, "reuse a deleted user's external id", s.CreateUser(ctx, &access.User{ID: "eve", ExternalID: "00u-bob-2", CreateTime: t0, UpdateTime: t0, Etag: "e1"}))
}

func testGroups(t *testing.T, s access.Store) {
	ctx := context.Background()
	for _, id := range []string{"u-1", "u-2"} {
		must(t, "create user", s.CreateUser(ctx, &access.User{ID: id, CreateTime: t0, UpdateTime: t0, Etag: "e"}))
	}
	wantErr(t, "unknown member user", s.CreateGroup(ctx, &access.Group{ID: "g", MemberUserIDs: []string{"ghost"}, Etag: "e"}), access.ErrNotFound)
	wantErr(t, "unknown member group", s.CreateGroup(ctx, &access.Group{ID: "g", MemberGroupIDs: []string{"ghost"}, Etag: "e"}), access.ErrNotFound)
	inner := &access.Group{ID: "inner", DisplayName: "Inner", MemberUserIDs: []string{"u-1", "u-2"}, CreateTime: t0, UpdateTime: t0, Etag: "e1"}
	must(t, "create inner", s.CreateGroup(ctx, inner))
	outer := &access.Group{ID: "outer", MemberGroupIDs: []string{"inner"}, CreateTime: t0, UpdateTime: t0, Etag: "e1"}
	must(t, "create outer", s.CreateGroup(ctx, outer))
	wantErr(t, "create again", s.CreateGroup(ctx, outer), access.ErrAlreadyExists)
	got, err := s.GetGroup(ctx, "inner")
	must(t, "get", err)
	if diff := cmp.Diff(inner, got, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("get (-want +got):\n%s", diff)
	}
	u, _ := s.GetUser(ctx, "u-1")
	if diff := cmp.Diff([]string{"inner"}, u.GroupIDs); diff != "" {
		t.Fatalf("user groups (-want +got):\n%s", diff)
	}
	// Deleting a user removes its memberships.
	must(t, "delete user", s.DeleteUser(ctx, "u-2", "", nil))
	got, _ = s.GetGroup(ctx, "inner")
	if diff := cmp.Diff([]string{"u-1"}, got.MemberUserIDs); diff != "" {
		t.Fatalf("members after user delete (-want +got):\n%s", diff)
	}
	upd := *got
	upd.MemberUserIDs, upd.Etag = nil, "e2"
	wantErr(t, "update stale", s.UpdateGroup(ctx, &upd, "nope"), access.ErrEtagMismatch)
	must(t, "update", s.UpdateGroup(ctx, &upd, "e1"))
	got, _ = s.GetGroup(ctx, "inner")
	if len(got.MemberUserIDs) != 0 || got.Etag != "e2" {
		t.Fatalf("after update: %+v", got)
	}
	// Deleting a group removes it from its parents.
	must(t, "delete inner", s.DeleteGroup(ctx, "inner", "e2"))
	got, _ = s.GetGroup(ctx, "outer")
	if len(got.MemberGroupIDs) != 0 {
		t.Fatalf("outer members after delete = %v", got.MemberGroupIDs)
	}
	_, err = s.GetGroup(ctx, "inner")
	wantErr(t, "get deleted", err, access.ErrNotFound)
}

func testApplications(t *testing.T, s access.Store) {
	ctx := context.Background()
	a := &access.Application{ID: "payroll", DisplayName: "Payroll", CreateTime: t0, UpdateTime: t0, Etag: "e1"}
	must(t, "create", s.CreateApplication(ctx, a))
	wantErr(t, "create again", s.CreateApplication(ctx, a), access.ErrAlreadyExists)
	got, err := s.GetApplication(ctx, "payroll")
	must(t, "get", err)
	if diff := cmp.Diff(a, got); diff != "" {
		t.Fatalf("get (-want +got):\n%s", diff)
	}
	upd := *a
	upd.DisplayName, upd.Etag = "Pay", "e2"
	wantErr(t, "update stale", s.UpdateApplication(ctx, &upd, "x"), access.ErrEtagMismatch)
	must(t, "update", s.UpdateApplication(ctx, &upd, "e1"))
	must(t, "delete", s.DeleteApplication(ctx, "payroll", "e2"))
	_, err = s.GetApplication(ctx, "payroll")
	wantErr(t, "get deleted", err, access.ErrNotFound)
}

func testPaging(t *testing.T, s access.Store) {
	ctx := context.Background()
	var want []string
	for i := range 7 {
		id := fmt.Sprintf("u-%02d", i)
		want = append(want, id)
		must(t, "create", s.CreateUser(ctx, &access.User{ID: id, Etag: "e"}))
	}
	var got []string
	tok := ""
	pages := 0
	for {
		us, next, err := s.ListUsers(ctx, tok, 3)
		must(t, "list", err)
		pages++
		for _, u := range us {
			got = append(got, u.ID)
		}
		if next == "" {
			break
		}
		tok = next
	}
	if diff := cmp.Diff(want, got); diff != "" || pages != 3 {
		t.Fatalf("pages=%d (-want +got):\n%s", pages, diff)
	}
	_, _, err := s.ListUsers(ctx, "%%%garbage", 3)
	wantErr(t, "bad token", err, access.ErrInvalid)
}

func testImport(t *testing.T, s access.Store) {
	ctx := context.Background()
	d := &access.Directory{
		Users:        []*access.User{{ID: "a", Etag: "1"}, {ID: "b", Etag: "1"}},
		Groups:       []*access.Group{{ID: "g1", MemberUserIDs: []string{"a"}, MemberGroupIDs: []string{"g2"}, Etag: "1"}, {ID: "g2", MemberUserIDs: []string{"b"}, Etag: "1"}},
		Applications: []*access.Application{{ID: "app", Etag: "1"}},
	}
	must(t, "import", s.ImportDirectory(ctx, d))
	// Re-import replaces (upsert) without losing memberships of untouched groups.
	d2 := &access.Directory{Users: []*access.User{{ID: "a", DisplayName: "A", Etag: "2"}}}
	must(t, "reimport", s.ImportDirectory(ctx, d2))
	got, err := s.LoadDirectory(ctx)
	must(t, "load", err)
	want := &access.Directory{
		Users:        []*access.User{{ID: "a", DisplayName: "A", Etag: "2"}, {ID: "b", Etag: "1"}},
		Groups:       []*access.Group{{ID: "g1", MemberUserIDs: []string{"a"}, MemberGroupIDs: []string{"g2"}, Etag: "1"}, {ID: "g2", MemberUserIDs: []string{"b"}, Etag: "1"}},
		Applications: []*access.Application{{ID: "app", Etag: "1"}},
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("load (-want +got):\n%s", diff)
	}
	bad := &access.Directory{Groups: []*access.Group{{ID: "g3", MemberUserIDs: []string{"ghost"}}}}
	wantErr(t, "import unknown member", s.ImportDirectory(ctx, bad), access.ErrNotFound)
}

func testPolicies(t *testing.T, s access.Store) {
	ctx := context.Background()
	p := &access.Policy{ID: "p1", DisplayName: "P1", State: access.PolicyEnabled,
		Users:        access.UserAssignment{All: true, ExcludeGroups: []string{"bg"}},
		Applications: access.ApplicationAssignment{Include: []string{"payroll"}},
		Conditions:   access.Conditions{IncludePlatforms: []access.Platform{1}, ExcludeIPRanges: []string{"10.0.0.0/8"}},
		Grant:        access.GrantControls{Require: []access.GrantControl{access.ControlCompliantDevice}, Operator: access.OperatorAnd},
		CreateTime:   t0, UpdateTime: t0, Etag: "e1"}
	must(t, "create", s.CreatePolicy(ctx, p))
	wantErr(t, "create again", s.CreatePolicy(ctx, p), access.ErrAlreadyExists)
	must(t, "create p2", s.CreatePolicy(ctx, &access.Policy{ID: "p2", State: access.PolicyReportOnly, Grant: access.GrantControls{Block: true}, Etag: "e"}))
	got, err := s.GetPolicy(ctx, "p1")
	must(t, "get", err)
	if diff := cmp.Diff(p, got); diff != "" {
		t.Fatalf("get (-want +got):\n%s", diff)
	}
	ps, next, err := s.ListPolicies(ctx, access.PolicyReportOnly, "", 10)
	must(t, "list", err)
	if len(ps) != 1 || ps[0].ID != "p2" || next != "" {
		t.Fatalf("list report-only = %d policies, next %q", len(ps), next)
	}
	upd := *p
	upd.State, upd.Etag = access.PolicyDisabled, "e2"
	wantErr(t, "update stale", s.UpdatePolicy(ctx, &upd, "zz"), access.ErrEtagMismatch)
	must(t, "update", s.UpdatePolicy(ctx, &upd, "e1"))
	all, err := s.LoadPolicies(ctx)
	must(t, "load", err)
	if len(all) != 2 || all[0].State != access.PolicyDisabled {
		t.Fatalf("load = %+v", all)
	}
	must(t, "delete", s.DeletePolicy(ctx, "p1", "e2"))
	wantErr(t, "delete again", s.DeletePolicy(ctx, "p1", ""), access.ErrNotFound)
}

func loadDevices(t *testing.T, s access.Store) map[string]*access.DeviceCompliance {
	t.Helper()
	m := map[string]*access.DeviceCompliance{}
	must(t, "load devices", s.LoadDevices(context.Background(), func(d *access.DeviceCompliance) { m[d.DeviceID] = d }))
	return m
}

func testDevices(t *testing.T, s access.Store) {
	ctx := context.Background()
	if _, ok, err := s.FeedCursor(ctx); ok || err != nil {
		t.Fatalf("cursor on empty store: ok=%v err=%v", ok, err)
	}
	d1 := &access.DeviceCompliance{DeviceID: "dev-1", State: access.ComplianceCompliant, Risk: 1, Platform: 1, Revision: 3}
	d2 := &access.DeviceCompliance{DeviceID: "dev-2", State: access.ComplianceNoncompliant, Risk: 4, RiskAlertIDs: []string{"a-1"},
		Settings: []access.SettingReason{{PolicyID: "max-medium", Setting: "max_device_risk", Reason: "risk HIGH above MEDIUM"}}, Revision: 5, Reason: "bad"}
	ran := false
	must(t, "replace", s.ReplaceDevices(ctx, []*access.DeviceCompliance{d1, d2}, 5, func() { ran = true }))
	if !ran {
		t.Fatal("after func did not run")
	}
	if rev, ok, _ := s.FeedCursor(ctx); !ok || rev != 5 {
		t.Fatalf("cursor = %d, %v; want 5", rev, ok)
	}
	got := loadDevices(t, s)
	if diff := cmp.Diff(map[string]*access.DeviceCompliance{"dev-1": d1, "dev-2": d2}, got, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("devices (-want +got):\n%s", diff)
	}
	d1b := *d1
	d1b.State, d1b.Revision = access.ComplianceNoncompliant, 6
	must(t, "apply", s.ApplyDevice(ctx, &d1b, 6, nil, nil))
	if rev, _, _ := s.FeedCursor(ctx); rev != 6 {
		t.Fatalf("cursor = %d, want 6", rev)
	}
	if got := loadDevices(t, s)["dev-1"]; got.State != access.ComplianceNoncompliant {
		t.Fatalf("dev-1 state = %v", got.State)
	}
	must(t, "replace again", s.ReplaceDevices(ctx, []*access.DeviceCompliance{d2}, 9, nil))
	if got := loadDevices(t, s); len(got) != 1 {
		t.Fatalf("after replace: %d devices, want 1", len(got))
	}
	must(t, "save cursor", s.SaveFeedCursor(ctx, 12))
	if rev, _, _ := s.FeedCursor(ctx); rev != 12 {
		t.Fatalf("cursor = %d, want 12", rev)
	}
}

func testSessions(t *testing.T, s access.Store) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	x1 := &access.Session{ID: "s1", UserID: "u-1", DeviceID: "dev-1", AppID: "payroll", State: access.SessionActive, CreateTime: t0, LastAccessTime: t0}
	x2 := &access.Session{ID: "s2", UserID: "u-2", DeviceID: "dev-2", AppID: "wiki", State: access.SessionActive, CreateTime: t0, LastAccessTime: t0}
	must(t, "batch", s.WriteBatch(ctx, nil, []*access.Session{x1, x2}))
	// Refresh: no second session_opened.
	x1b := *x1
	x1b.LastAccessTime = t0.Add(time.Minute)
	must(t, "refresh", s.WriteBatch(ctx, nil, []*access.Session{&x1b}))
	// Revoke s1, and s3 that was never written (opened then revoked in one tx).
	x3 := access.Session{ID: "s3", UserID: "u-1", DeviceID: "dev-1", AppID: "wiki", State: access.SessionActive, CreateTime: t0, LastAccessTime: t0}
	revs := []access.Revocation{}
	for _, x := range []access.Session{x1b, x3} {
		x.RevokeTime, x.RevokeReason = t0.Add(time.Hour), "DEVICE_NONCOMPLIANT"
		revs = append(revs, access.Revocation{Session: x, ReasonCode: "DEVICE_NONCOMPLIANT", ComplianceRevision: 7, TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
	}
	must(t, "apply with revocations", s.ApplyDevice(ctx, &access.DeviceCompliance{DeviceID: "dev-1", State: access.ComplianceNoncompliant, Revision: 7}, 7, revs, nil))
	// Revoking again is a no-op (idempotent apply).
	must(t, "apply again", s.ApplyDevice(ctx, nil, 7, revs, nil))
	// A late batch refresh of a revoked session keeps it revoked.
	must(t, "late refresh", s.WriteBatch(ctx, nil, []*access.Session{&x1b}))

	active, err := s.LoadActiveSessions(ctx)
	must(t, "load active", err)
	if len(active) != 1 || active[0].ID != "s2" {
		t.Fatalf("active = %+v, want s2 only", active)
	}
	must(t, "delete expired", s.DeleteSessions(ctx, []string{"s2", "nope"}))
	if active, _ := s.LoadActiveSessions(ctx); len(active) != 0 {
		t.Fatalf("after delete: active = %+v", active)
	}
	revoked, _, err := s.ListSessions(ctx, access.SessionFilter{DeviceID: "dev-1", State: access.SessionRevoked}, "", 10)
	must(t, "list", err)
	if len(revoked) != 2 || revoked[0].RevokeReason != "DEVICE_NONCOMPLIANT" || !revoked[0].LastAccessTime.Equal(x1b.LastAccessTime) {
		t.Fatalf("revoked = %+v", revoked)
	}

	type ev struct {
		Kind SessionKind
		ID   string
		Rev  int64
	}
	var got []ev
	var want = []ev{{"opened", "s1", 1}, {"opened", "s2", 2}, {"revoked", "s1", 3}, {"opened", "s3", 4}, {"revoked", "s3", 5}}
	if r := s.SessionRevision(); r != 5 {
		t.Fatalf("SessionRevision = %d, want 5", r)
	}
	errDone := errors.New("done")
	var tp string
	err = s.WatchSessionEvents(ctx, 0, func(e *access.SessionEvent) error {
		k := SessionKind("opened")
		if e.Kind == access.SessionRevokedEvent {
			k = "revoked"
			tp = e.TraceParent
			if e.ComplianceRevision != 7 || e.ReasonCode != "DEVICE_NONCOMPLIANT" || e.Session.State != access.SessionRevoked {
				t.Errorf("revoked event = %+v", e)
			}
		}
		got = append(got, ev{k, e.Session.ID, e.Revision})
		return nil
	}, func(int64) error { return errDone })
	wantErr(t, "watch", err, errDone)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
	if tp == "" {
		t.Fatal("revocation lost its trace context")
	}
}

// SessionKind names an event kind in test output.
type SessionKind string

func testSignIns(t *testing.T, s access.Store) {
	ctx := context.Background()
	var batch []*access.SignIn
	for i := range 10 {
		d := access.DecisionAllow
		if i%2 == 1 {
			d = access.DecisionBlock
		}
		// The trace id names the sign-in in this test; the store assigns the ID.
		batch = append(batch, &access.SignIn{Time: t0.Add(time.Duration(i) * time.Second),
			UserID: fmt.Sprintf("u-%d", i%3), DeviceID: "dev-1", AppID: "payroll", Decision: d, TraceID: fmt.Sprintf("si-%02d", i), Detail: []byte{byte(i)}})
	}
	must(t, "batch", s.WriteBatch(ctx, batch, nil))
	ids := map[string]bool{}
	for _, si := range batch {
		if si.ID == "" || ids[si.ID] {
			t.Fatalf("WriteBatch assigned ID %q (duplicate or empty)", si.ID)
		}
		ids[si.ID] = true
	}
	// Same time twice: still two ordered sign-ins.
	same := []*access.SignIn{{Time: t0.Add(time.Hour), TraceID: "x1"}, {Time: t0.Add(time.Hour), TraceID: "x2"}}
	must(t, "same time", s.WriteBatch(ctx, same, nil))
	if same[0].ID == same[1].ID || !same[1].Time.After(same[0].Time) {
		t.Fatalf("same-time sign-ins: %+v %+v", same[0], same[1])
	}
	n0, err := s.DeleteSignInsBefore(ctx, t0.Add(-time.Hour))
	must(t, "delete none", err)
	if n0 != 0 {
		t.Fatalf("deleted %d sign-ins older than all", n0)
	}
	list := func(f access.SignInFilter, limit int) []string {
		var ids []string
		tok := ""
		for {
			page, next, err := s.ListSignIns(ctx, f, tok, limit)
			must(t, "list", err)
			for _, si := range page {
				if si.TraceID[0] == 'x' {
					continue
				}
				if got := batch[si.Detail[0]]; got.ID != si.ID || !got.Time.Equal(si.Time) {
					t.Fatalf("listed %s at %v, written as %s at %v", si.ID, si.Time, got.ID, got.Time)
				}
				ids = append(ids, si.TraceID)
			}
			if next == "" {
				return ids
			}
			tok = next
		}
	}
	tests := []struct {
		name string
		f    access.SignInFilter
		want []string
	}{
		{"all newest first", access.SignInFilter{}, []string{"si-09", "si-08", "si-07", "si-06", "si-05", "si-04", "si-03", "si-02", "si-01", "si-00"}},
		{"user", access.SignInFilter{UserID: "u-1"}, []string{"si-07", "si-04", "si-01"}},
		{"blocked", access.SignInFilter{Decision: access.DecisionBlock, DeviceID: "dev-1", AppID: "payroll"}, []string{"si-09", "si-07", "si-05", "si-03", "si-01"}},
		{"time window", access.SignInFilter{After: t0.Add(2 * time.Second), Before: t0.Add(5 * time.Second)}, []string{"si-04", "si-03", "si-02"}},
		{"none", access.SignInFilter{UserID: "ghost"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, list(tt.f, 2)); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
	n, err := s.DeleteSignInsBefore(ctx, t0.Add(5*time.Second))
	must(t, "delete", err)
	if n != 5 || len(list(access.SignInFilter{Before: t0.Add(time.Minute)}, 100)) != 5 {
		t.Fatalf("deleted %d, want 5", n)
	}
}

// testSignInsMany writes sign-ins in many batches of varying sizes and checks every
// filter, page size and retention cut against a plain filter over what was written.
func testSignInsMany(t *testing.T, s access.Store) {
	ctx := context.Background()
	var all []*access.SignIn // in write (= key) order
	n := 0
	for b := range 40 {
		var batch []*access.SignIn
		for range 1 + (b*37)%90 {
			d := access.DecisionAllow
			if n%3 == 0 {
				d = access.DecisionBlock
			}
			batch = append(batch, &access.SignIn{Time: t0.Add(time.Duration(n) * time.Millisecond),
				UserID: fmt.Sprintf("u-%d", n%17), DeviceID: fmt.Sprintf("d-%d", n%23), AppID: fmt.Sprintf("app-%d", n%5),
				Decision: d, TraceID: fmt.Sprintf("t-%d", n), Detail: []byte(fmt.Sprintf("detail %d", n))})
			n++
		}
		must(t, "batch", s.WriteBatch(ctx, batch, nil))
		all = append(all, batch...)
	}
	want := func(f access.SignInFilter) []string {
		var out []string
		for i := len(all) - 1; i >= 0; i-- {
			si := all[i]
			if (f.UserID == "" || si.UserID == f.UserID) && (f.DeviceID == "" || si.DeviceID == f.DeviceID) &&
				(f.AppID == "" || si.AppID == f.AppID) && (f.Decision == 0 || si.Decision == f.Decision) &&
				(f.After.IsZero() || !si.Time.Before(f.After)) && (f.Before.IsZero() || si.Time.Before(f.Before)) {
				out = append(out, si.ID+" "+si.TraceID+" "+string(si.Detail))
			}
		}
		return out
	}
	list := func(f access.SignInFilter, limit int) []string {
		var out []string
		tok := ""
		for pages := 0; ; pages++ {
			page, next, err := s.ListSignIns(ctx, f, tok, limit)
			must(t, "list", err)
			if len(page) > limit || pages > len(all) {
				t.Fatalf("page of %d (limit %d), page %d", len(page), limit, pages)
			}
			for _, si := range page {
				out = append(out, si.ID+" "+si.TraceID+" "+string(si.Detail))
			}
			if next == "" {
				return out
			}
			tok = next
		}
	}
	filters := []access.SignInFilter{
		{},
		{UserID: "u-3"},
		{DeviceID: "d-7", Decision: access.DecisionBlock},
		{AppID: "app-2", UserID: "u-4"},
		{UserID: "nobody"},
		{After: t0.Add(300 * time.Millisecond), Before: t0.Add(1700 * time.Millisecond), AppID: "app-1"},
		{Before: t0.Add(5 * time.Millisecond)},
	}
	for _, f := range filters {
		for _, limit := range []int{1, 7, 100, 5000} {
			if diff := cmp.Diff(want(f), list(f, limit)); diff != "" {
				t.Fatalf("filter %+v, page size %d (-want +got):\n%s", f, limit, diff)
			}
		}
	}
	// A cut inside a batch: exactly the older sign-ins go.
	cut := all[len(all)/2].Time.Add(time.Nanosecond)
	var older int64
	for _, si := range all {
		if si.Time.Before(cut) {
			older++
		}
	}
	got, err := s.DeleteSignInsBefore(ctx, cut)
	must(t, "delete", err)
	if got != older {
		t.Fatalf("deleted %d sign-ins, want %d", got, older)
	}
	all = all[older:]
	for _, f := range filters {
		if diff := cmp.Diff(want(f), list(f, 13)); diff != "" {
			t.Fatalf("after the cut, filter %+v (-want +got):\n%s", f, diff)
		}
	}
	// New sign-ins after the cut keep increasing ids.
	more := []*access.SignIn{{Time: t0, UserID: "u-late"}}
	must(t, "late batch", s.WriteBatch(ctx, more, nil))
	if !more[0].Time.After(all[len(all)-1].Time) {
		t.Fatalf("a late sign-in got time %v, not after %v", more[0].Time, all[len(all)-1].Time)
	}
}

// testUserRevocations: disabling or deleting a user revokes its sessions in the same
// transaction; a failed update (stale etag) revokes nothing; RevokeSessions alone.
func testUserRevocations(t *testing.T, s access.Store) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, id := range []string{"u-1", "u-2"} {
		must(t, "create "+id, s.CreateUser(ctx, &access.User{ID: id, CreateTime: t0, UpdateTime: t0, Etag: "e1"}))
	}
	sess := func(id, user string) access.Session {
		return access.Session{ID: id, UserID: user, DeviceID: "dev-1", AppID: "payroll", State: access.SessionActive, CreateTime: t0, LastAccessTime: t0}
	}
	x1, x2, x3 := sess("s1", "u-1"), sess("s2", "u-2"), sess("s3", "u-1")
	must(t, "sessions", s.WriteBatch(ctx, nil, []*access.Session{&x1, &x2}))
	rev := func(x access.Session, reason string) access.Revocation {
		x.RevokeTime, x.RevokeReason = t0.Add(time.Hour), reason
		return access.Revocation{Session: x, ReasonCode: reason, TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	}
	disabled := access.User{ID: "u-1", Disabled: true, UpdateTime: t0.Add(time.Hour), Etag: "e2"}
	wantErr(t, "stale disable", s.UpdateUser(ctx, &disabled, "stale", []access.Revocation{rev(x1, "USER_DISABLED")}), access.ErrEtagMismatch)
	if r := s.SessionRevision(); r != 2 {
		t.Fatalf("a failed update appended events: revision %d, want 2", r)
	}
	// s3 was never written: opened and revoked in the same transaction.
	must(t, "disable", s.UpdateUser(ctx, &disabled, "e1", []access.Revocation{rev(x1, "USER_DISABLED"), rev(x3, "USER_DISABLED")}))
	must(t, "delete", s.DeleteUser(ctx, "u-2", "e1", []access.Revocation{rev(x2, "USER_DELETED")}))
	must(t, "revoke again", s.RevokeSessions(ctx, []access.Revocation{rev(x1, "USER_DISABLED")}, nil))
	after := false
	must(t, "revoke nothing", s.RevokeSessions(ctx, nil, func() { after = true }))
	if !after {
		t.Fatal("RevokeSessions did not run after")
	}
	if active, _ := s.LoadActiveSessions(ctx); len(active) != 0 {
		t.Fatalf("active sessions left: %+v", active)
	}
	type ev struct {
		Kind   SessionKind
		ID     string
		Reason string
	}
	var got []ev
	errDone := errors.New("done")
	err := s.WatchSessionEvents(ctx, 0, func(e *access.SessionEvent) error {
		k := SessionKind("opened")
		if e.Kind == access.SessionRevokedEvent {
			k = "revoked"
		}
		got = append(got, ev{k, e.Session.ID, e.ReasonCode})
		return nil
	}, func(int64) error { return errDone })
	wantErr(t, "watch", err, errDone)
	want := []ev{{"opened", "s1", ""}, {"opened", "s2", ""}, {"revoked", "s1", "USER_DISABLED"}, {"opened", "s3", ""}, {"revoked", "s3", "USER_DISABLED"}, {"revoked", "s2", "USER_DELETED"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
}

// testSignInsFollow follows the sign-in log with SignInsAfter (WatchSignIns): from
// the start and from LastSignInKey, with and without filters, in small pages that
// stop inside batches, every sign-in comes once, in key order; a sign-in written late
// (its decision time older than every stored one) still comes after the cursor.
func testSignInsFollow(t *testing.T, s access.Store) {
	ctx := context.Background()
	if last, err := s.LastSignInKey(ctx); err != nil || last != 0 {
		t.Fatalf("LastSignInKey of an empty log = %d, %v; want 0", last, err)
	}
	if _, _, err := s.SignInsAfter(ctx, access.SignInFilter{}, 0, 0); !errors.Is(err, access.ErrInvalid) {
		t.Errorf("SignInsAfter with limit 0 = %v, want ErrInvalid", err)
	}
	var all []*access.SignIn
	n := 0
	for b := range 30 {
		var batch []*access.SignIn
		for range b%7 + 1 {
			d := access.DecisionAllow
			if n%2 == 1 {
				d = access.DecisionBlock
			}
			batch = append(batch, &access.SignIn{Time: t0.Add(time.Duration(n) * time.Second), UserID: fmt.Sprintf("u-%d", n%3), DeviceID: "dev-1",
				AppID: "payroll", Decision: d, TraceID: fmt.Sprintf("t-%d", n)})
			n++
		}
		must(t, "batch", s.WriteBatch(ctx, batch, nil))
		all = append(all, batch...)
	}
	// follow returns the ids SignInsAfter gives from after until it is caught up, and
	// the cursor it reached.
	follow := func(f access.SignInFilter, after int64, limit int) ([]string, int64) {
		t.Helper()
		var ids []string
		for range 10_000 {
			page, reached, err := s.SignInsAfter(ctx, f, after, limit)
			must(t, "follow", err)
			if len(page) > limit || reached < after {
				t.Fatalf("page of %d (limit %d), cursor %d -> %d", len(page), limit, after, reached)
			}
			for _, si := range page {
				ids = append(ids, si.ID)
			}
			if reached == after {
				return ids, reached
			}
			after = reached
		}
		t.Fatal("SignInsAfter never caught up")
		return nil, 0
	}
	want := func(keep func(*access.SignIn) bool) []string {
		var ids []string
		for _, si := range all {
			if keep(si) {
				ids = append(ids, si.ID)
			}
		}
		return ids
	}
	for _, tt := range []struct {
		name  string
		f     access.SignInFilter
		limit int
		keep  func(*access.SignIn) bool
	}{
		{"all, pages of 3", access.SignInFilter{}, 3, func(*access.SignIn) bool { return true }},
		{"all, one page", access.SignInFilter{}, 1000, func(*access.SignIn) bool { return true }},
		{"user u-1, pages of 2", access.SignInFilter{UserID: "u-1"}, 2, func(si *access.SignIn) bool { return si.UserID == "u-1" }},
		{"blocked", access.SignInFilter{Decision: access.DecisionBlock}, 4, func(si *access.SignIn) bool { return si.Decision == access.DecisionBlock }},
		{"another device", access.SignInFilter{DeviceID: "dev-2"}, 4, func(*access.SignIn) bool { return false }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := follow(tt.f, 0, tt.limit)
			if w := want(tt.keep); !slices.Equal(got, w) {
				t.Errorf("followed %v\nwant %v", got, w)
			}
		})
	}
	last, err := s.LastSignInKey(ctx)
	must(t, "last key", err)
	if got, reached := follow(access.SignInFilter{}, last, 5); len(got) != 0 || reached != last {
		t.Fatalf("from LastSignInKey: %v (cursor %d -> %d), want nothing", got, last, reached)
	}
	// Written late: decided before every stored sign-in, stored now.
	late := []*access.SignIn{{Time: t0.Add(-time.Hour), UserID: "u-1", DeviceID: "dev-1", AppID: "payroll", Decision: access.DecisionBlock, TraceID: "late"}}
	must(t, "late batch", s.WriteBatch(ctx, late, nil))
	got, reached := follow(access.SignInFilter{UserID: "u-1"}, last, 5)
	if !slices.Equal(got, []string{late[0].ID}) || reached <= last {
		t.Errorf("after the late write: %v (cursor %d -> %d), want [%s]", got, last, reached, late[0].ID)
	}
}
