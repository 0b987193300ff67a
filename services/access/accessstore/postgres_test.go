package accessstore_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/condaccess/condaccess/internal/lease"
	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/services/access"
	"github.com/condaccess/condaccess/services/access/accessstore"
	"github.com/condaccess/condaccess/services/access/accessstore/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func openPG(t *testing.T, url string, o accessstore.PGOptions) *accessstore.Store {
	t.Helper()
	o.URL = url
	s, err := accessstore.OpenPG(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPostgresStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) access.Store { return openPG(t, pgtest.URL(t), accessstore.PGOptions{}) })
}

// acquire takes lease name for holder on s, waiting (with a deadline) until the
// previous holder's lease has expired.
func acquire(t *testing.T, s *accessstore.Store, name, holder string, d time.Duration) (*lease.PG, int64) {
	t.Helper()
	l := s.Lease(lease.PGOptions{Name: name, Holder: holder, Duration: d}).(*lease.PG)
	deadline := time.Now().Add(10 * time.Second)
	for {
		tok, err := l.TryAcquire(context.Background())
		if err == nil {
			return l, tok
		}
		if !errors.Is(err, lease.ErrHeld) || time.Now().After(deadline) {
			t.Fatalf("acquire %s for %s: %v", name, holder, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPostgresCursorWritesFenced: the compliance consumer's cursor writes pass only
// with the current lease token. A leader that stopped renewing (paused) and was
// taken over is refused on every cursor-advancing write, and nothing it sent is
// stored (cursor, device state); a write without a token is refused on a store that
// requires one; the new leader's writes pass.
func TestPostgresCursorWritesFenced(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	a := openPG(t, url, accessstore.PGOptions{RequireFence: true})
	b := openPG(t, url, accessstore.PGOptions{RequireFence: true})
	const dur = 300 * time.Millisecond
	la, ta := acquire(t, a, "access-consumer", "replica-a", dur)
	fa := accessstore.Fenced(ctx, la, ta)
	dev := func(state access.ComplianceState, rev int64) *access.DeviceCompliance {
		return &access.DeviceCompliance{DeviceID: "dev-1", State: state, Revision: rev}
	}
	if err := a.ApplyDevice(fa, dev(access.ComplianceCompliant, 5), 5, nil, nil); err != nil {
		t.Fatalf("leader's apply: %v", err)
	}
	// a stops renewing (paused); b takes over once a's lease has expired.
	lb, tb := acquire(t, b, "access-consumer", "replica-b", dur)
	if tb != ta+1 {
		t.Fatalf("takeover token = %d, want %d", tb, ta+1)
	}
	fb := accessstore.Fenced(ctx, lb, tb)
	attacks := []struct {
		name  string
		write func() error
		want  error
	}{
		{"paused leader applies a device", func() error { return a.ApplyDevice(fa, dev(access.ComplianceNoncompliant, 6), 6, nil, nil) }, lease.ErrFenced},
		{"paused leader saves progress", func() error { return a.SaveFeedCursor(fa, 9) }, lease.ErrFenced},
		{"paused leader resyncs", func() error {
			return a.ReplaceDevices(fa, []*access.DeviceCompliance{dev(access.ComplianceNoncompliant, 7)}, 7, nil)
		}, lease.ErrFenced},
		{"paused leader's token on the other replica", func() error { return b.SaveFeedCursor(fa, 9) }, lease.ErrFenced},
		{"no token at all", func() error { return b.SaveFeedCursor(ctx, 9) }, accessstore.ErrUnfenced},
		{"a token never issued", func() error { return b.SaveFeedCursor(accessstore.Fenced(ctx, lb, tb+1), 9) }, lease.ErrFenced},
	}
	for _, tt := range attacks {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.write(); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if rev, _, err := b.FeedCursor(ctx); err != nil || rev != 5 {
				t.Fatalf("cursor = %d (%v), want 5 (unchanged)", rev, err)
			}
			if d, err := b.LoadDevice(ctx, "dev-1"); err != nil || d.State != access.ComplianceCompliant || d.Revision != 5 {
				t.Fatalf("device = %+v (%v), want COMPLIANT at 5 (unchanged)", d, err)
			}
		})
	}
	riskAsOf := time.Now().Add(-3 * time.Second).UTC().Truncate(time.Microsecond)
	b.NoteRiskAsOf(riskAsOf)
	if err := b.ApplyDevice(fb, dev(access.ComplianceNoncompliant, 6), 6, nil, nil); err != nil {
		t.Fatalf("new leader's apply: %v", err)
	}
	if rev, _, err := a.FeedCursor(ctx); err != nil || rev != 6 {
		t.Fatalf("cursor after the new leader's apply = %d (%v), want 6", rev, err)
	}
	// The other replica reads the leader's contact and the risk_as_of it heard.
	if fc, err := a.FeedContact(ctx); err != nil || fc.Revision != 6 || time.Since(fc.Contact) > time.Minute || !fc.RiskAsOf.Equal(riskAsOf) {
		t.Fatalf("feed contact = %+v (%v), want revision 6, the new leader's write just now, risk as of %v", fc, err, riskAsOf)
	}
}

// TestPostgresStaleReplicaWriteRefused: an admin write validated against a model
// older than the change log (another replica changed it since) is refused with
// ErrEtagMismatch and stores nothing; one validated against the head passes and
// reports the change revision it took, which the other replica's watch delivers.
func TestPostgresStaleReplicaWriteRefused(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	a := openPG(t, url, accessstore.PGOptions{})
	b := openPG(t, url, accessstore.PGOptions{})
	pol := func(id string) *access.Policy {
		return &access.Policy{ID: id, DisplayName: id, State: access.PolicyReportOnly, Users: access.UserAssignment{All: true},
			Applications: access.ApplicationAssignment{All: true}, Grant: access.GrantControls{Block: true}, CreateTime: time.Unix(1, 0), UpdateTime: time.Unix(1, 0), Etag: "e"}
	}
	var took int64
	if err := a.CreatePolicy(access.ExpectChanges(ctx, 0, &took), pol("p-a")); err != nil {
		t.Fatal(err)
	}
	if took != 1 {
		t.Fatalf("took = %d, want change 1", took)
	}
	// b still validates against change 0: refused, nothing stored.
	if err := b.CreatePolicy(access.ExpectChanges(ctx, 0, new(int64)), pol("p-b")); !errors.Is(err, access.ErrEtagMismatch) {
		t.Fatalf("stale write: err = %v, want ErrEtagMismatch", err)
	}
	if _, err := b.GetPolicy(ctx, "p-b"); !errors.Is(err, access.ErrNotFound) {
		t.Fatalf("the refused policy was stored (%v)", err)
	}
	if err := b.CreatePolicy(access.ExpectChanges(ctx, 1, &took), pol("p-b")); err != nil || took != 2 {
		t.Fatalf("write at the head: err = %v, took %d, want nil and 2", err, took)
	}
	// a's follower sees both changes, in order.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var got []access.Change
	err := a.WatchChanges(wctx, 0, func(c access.Change) error {
		got = append(got, c)
		if len(got) == 2 {
			cancel()
		}
		return nil
	}, nil)
	want := []access.Change{{Revision: 1, Kind: "conditional_access_policy", ID: "p-a"}, {Revision: 2, Kind: "conditional_access_policy", ID: "p-b"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("changes (-want +got):\n%s (watch: %v)", diff, err)
	}
}

// TestPostgresSharedKey: replicas get one key per name (created once, by whichever
// asks first), so a reference sealed on one opens on the other.
func TestPostgresSharedKey(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	a := openPG(t, url, accessstore.PGOptions{})
	b := openPG(t, url, accessstore.PGOptions{})
	ka, err := a.SharedKey(ctx, "blocked-ref")
	if err != nil {
		t.Fatal(err)
	}
	kb, err := b.SharedKey(ctx, "blocked-ref")
	if err != nil {
		t.Fatal(err)
	}
	if len(ka) != 32 || !bytes.Equal(ka, kb) {
		t.Fatalf("keys %x and %x, want one 32-byte key", ka, kb)
	}
	other, err := b.SharedKey(ctx, "other")
	if err != nil || bytes.Equal(other, ka) {
		t.Fatalf("another name's key = %x (%v), want a different key", other, err)
	}
}

// TestConsoleSessionsOnPostgres: replicas share one console sealing key (not the
// blocked-page key); a sign-out recorded by one is seen by the other at once, only
// until it expires; expired sign-outs are deleted by the next one; a sign-out without
// a session id is refused.
func TestConsoleSessionsOnPostgres(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	open := func() *accessstore.ConsoleSessions {
		t.Helper()
		c, err := accessstore.OpenConsoleSessions(ctx, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a, b := open(), open()
	ka, err := a.Key(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := b.Key(ctx)
	if err != nil || len(ka) != 32 || !bytes.Equal(ka, kb) {
		t.Fatalf("keys %x and %x (%v), want one 32-byte key", ka, kb, err)
	}
	blocked, err := openPG(t, url, accessstore.PGOptions{}).SharedKey(ctx, "blocked-ref")
	if err != nil || bytes.Equal(blocked, ka) {
		t.Fatalf("blocked-page key %x (%v) equals the console key", blocked, err)
	}
	now := time.Now()
	if err := a.SignOut(ctx, "gone", now.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := a.SignOut(ctx, "s-1", now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := a.SignOut(ctx, "", now.Add(time.Hour)); err == nil {
		t.Error("a sign-out without a session id was recorded")
	}
	for _, tt := range []struct {
		id   string
		want bool
	}{{"s-1", true}, {"gone", false}, {"s-2", false}, {"", false}} {
		t.Run(tt.id, func(t *testing.T) {
			if got, err := b.SignedOut(ctx, tt.id); err != nil || got != tt.want {
				t.Errorf("SignedOut(%q) on the other replica = %v (%v), want %v", tt.id, got, err, tt.want)
			}
		})
	}
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM access.console_signouts WHERE id = 'gone'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("expired sign-outs left: %d (%v), want 0", n, err)
	}
}

// TestPostgresSignInsAcrossReplicas: a sign-in follower on replica A is woken by
// replica B's sign-in writes (NOTIFY), and finds, from the cursor it reached, a
// sign-in B writes late (decided a minute before the ones A already followed). With
// NoNotify there is no wake-up channel (followers poll).
func TestPostgresSignInsAcrossReplicas(t *testing.T) {
	url := pgtest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := openPG(t, url, accessstore.PGOptions{})
	b := openPG(t, url, accessstore.PGOptions{})
	if openPG(t, url, accessstore.PGOptions{NoNotify: true}).SignInsChanged() != nil {
		t.Error("NoNotify: a wake-up channel")
	}
	wait := func(ch <-chan struct{}, what string) {
		t.Helper()
		if ch == nil {
			t.Fatal("no wake-up channel on PostgreSQL")
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("%s: not woken", what)
		}
	}
	now := time.Now()
	first := []*access.SignIn{{Time: now, UserID: "u-1", DeviceID: "d", AppID: "a", Decision: access.DecisionAllow}}
	ch := a.SignInsChanged()
	if err := a.WriteBatch(ctx, first, nil); err != nil {
		t.Fatal(err)
	}
	wait(ch, "A's own write") // A's LISTEN is up from here on
	cursor, err := a.LastSignInKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ch = a.SignInsChanged()
	late := []*access.SignIn{{Time: now.Add(-time.Minute), UserID: "u-1", DeviceID: "d", AppID: "a", Decision: access.DecisionBlock}}
	if err := b.WriteBatch(ctx, late, nil); err != nil {
		t.Fatal(err)
	}
	wait(ch, "B's write")
	got, reached, err := a.SignInsAfter(ctx, access.SignInFilter{UserID: "u-1"}, cursor, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != late[0].ID || reached <= cursor {
		t.Fatalf("A followed %v (cursor %d -> %d) after B's late write, want only %s", got, cursor, reached, late[0].ID)
	}
}
