package ssf

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/condaccess/condaccess/internal/lease"
	"github.com/condaccess/condaccess/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// onPostgres, set by TestStoreTestsOnPostgres, makes openTestStore open PostgreSQL
// stores: the same tests then run on both backends.
var (
	onPostgres bool
	pgMu       sync.Mutex
	pgURLs     = map[string]string{} // a test's store "directory" → its database
)

// openTestStore opens the test's store in dir: SQLite there, or (onPostgres) the
// database that stands for dir, so that reopening dir reopens the same store.
func openTestStore(t *testing.T, dir string) *Store {
	t.Helper()
	var st *Store
	var err error
	if onPostgres {
		pgMu.Lock()
		url, ok := pgURLs[dir]
		if !ok {
			url = pgtest.URL(t)
			pgURLs[dir] = url
		}
		pgMu.Unlock()
		st, err = OpenPGStore(context.Background(), url, slog.New(slog.DiscardHandler))
	} else {
		st, err = OpenStore(context.Background(), filepath.Join(dir, "ssf.db"), slog.New(slog.DiscardHandler))
	}
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestStoreTestsOnPostgres runs the store's tests (streams, poll, push, outbox bound,
// inactivity, subjects, receiver, resume) again on the PostgreSQL store.
func TestStoreTestsOnPostgres(t *testing.T) {
	pgtest.URL(t) // skips (or fails, when required) without PostgreSQL
	onPostgres = true
	t.Cleanup(func() { onPostgres = false })
	for name, fn := range map[string]func(*testing.T){
		"TestStreamManagementAuth":                     TestStreamManagementAuth,
		"TestStreamConfigValidation":                   TestStreamConfigValidation,
		"TestPoll":                                     TestPoll,
		"TestPushRetriesWithSameJTIAndSurvivesRestart": TestPushRetriesWithSameJTIAndSurvivesRestart,
		"TestPushFollowsAnUpdatedEndpoint":             TestPushFollowsAnUpdatedEndpoint,
		"TestLongPollEndsWhenTheTransmitterStops":      TestLongPollEndsWhenTheTransmitterStops,
		"TestResumeAfterCompaction":                    TestResumeAfterCompaction,
		"TestOutboxBound":                              TestOutboxBound,
		"TestStreamManagementByAdminCertificate":       TestStreamManagementByAdminCertificate,
		"TestPushDeliversStreamUpdatedWhilePaused":     TestPushDeliversStreamUpdatedWhilePaused,
		"TestInactivityTimeout":                        TestInactivityTimeout,
		"TestAddSubjectVerified":                       TestAddSubjectVerified,
		"TestReceiver":                                 TestReceiver,
		"TestPushRefusesDNSRebinding":                  TestPushRefusesDNSRebinding,
	} {
		t.Run(name, fn)
	}
}

// TestFencedLeaderChangesNothing: once another replica holds the "ssf" lease, the
// former leader's writes (marking a pushed SET delivered, counting an attempt,
// applying a feed event with its cursor) fail with lease.ErrFenced and change
// nothing; the new leader's succeed.
func TestFencedLeaderChangesNothing(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	st, err := OpenPGStore(ctx, url, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.AddReceiver(ctx, "rp-a", NewToken()); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateStream(ctx, &Stream{Receiver: "rp-a", Status: StatusEnabled, Config: StreamConfig{StreamID: "s1"}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Enqueue(ctx, []Outgoing{{StreamID: "s1", JTI: "jti-1", Token: "set-1"}}, Bound{}); err != nil {
		t.Fatal(err)
	}
	if err := st.SetCursor(ctx, "compliance", 5); err != nil {
		t.Fatal(err)
	}
	const dur = 300 * time.Millisecond
	a := st.Lease(lease.PGOptions{Holder: "a", Duration: dur, Logger: slog.New(slog.DiscardHandler)})
	b := st.Lease(lease.PGOptions{Holder: "b", Duration: dur, Logger: slog.New(slog.DiscardHandler)})
	tokA, err := a.TryAcquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.TryAcquire(ctx); !errors.Is(err, lease.ErrHeld) {
		t.Fatalf("b acquires a live lease: %v, want ErrHeld", err)
	}
	// a stops renewing (paused): b takes over once the lease has expired.
	var tokB int64
	deadline := time.Now().Add(10 * time.Second)
	for {
		if tokB, err = b.TryAcquire(ctx); err == nil {
			break
		}
		if !errors.Is(err, lease.ErrHeld) || time.Now().After(deadline) {
			t.Fatalf("b never took over: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // the lease expires by the database's clock
	}
	if tokB <= tokA {
		t.Fatalf("token %d after %d, want it to grow", tokB, tokA)
	}

	fenced := WithFence(ctx, a, tokA)
	attacks := []struct {
		name string
		do   func() error
	}{
		{"mark the SET delivered", func() error { return st.Ack(fenced, "s1", []string{"jti-1"}) }},
		{"count a push attempt", func() error { return st.RecordAttempt(fenced, "jti-1") }},
		{"advance the cursor", func() error { return st.SetCursor(fenced, "compliance", 9) }},
		{"apply a feed event", func() error {
			_, err := st.ApplyFeed(fenced, "compliance", 9, []Outgoing{{StreamID: "s1", JTI: "jti-2", Token: "set-2"}}, nil, Bound{})
			return err
		}},
	}
	for _, tt := range attacks {
		t.Run("former leader: "+tt.name, func(t *testing.T) {
			if err := tt.do(); !errors.Is(err, lease.ErrFenced) {
				t.Fatalf("err = %v, want %v", err, lease.ErrFenced)
			}
		})
	}
	ps, _, err := st.PendingSETs(ctx, "s1", 10, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || ps[0].JTI != "jti-1" {
		t.Fatalf("pending after the fenced writes: %+v, want jti-1 alone", ps)
	}
	var attempts int
	if err := st.read.QueryRowContext(ctx, `SELECT attempts FROM outbox WHERE jti = 'jti-1'`).Scan(&attempts); err != nil || attempts != 0 {
		t.Fatalf("attempts = %d, %v; want 0", attempts, err)
	}
	if rev, _, err := st.Cursor(ctx, "compliance"); err != nil || rev != 5 {
		t.Fatalf("cursor = %d, %v; want 5", rev, err)
	}

	// The new leader delivers.
	if err := st.Ack(WithFence(ctx, b, tokB), "s1", []string{"jti-1"}); err != nil {
		t.Fatalf("new leader's ack: %v", err)
	}
	if ps, _, err := st.PendingSETs(ctx, "s1", 10, false); err != nil || len(ps) != 0 {
		t.Fatalf("pending after the leader's ack: %+v, %v", ps, err)
	}
}

// TestPGKeyRingShared: replicas opening the store at once agree on one signing key;
// a rotation reaches every replica, which then signs with the new key and still
// publishes the previous one; a SET signed before verifies against the new JWKS.
func TestPGKeyRingShared(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	rings := make([]*PGKeyRing, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range rings {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := OpenPGStore(ctx, url, slog.New(slog.DiscardHandler))
			if err != nil {
				errs[i] = err
				return
			}
			t.Cleanup(func() { st.Close() })
			rings[i], errs[i] = OpenPGKeyRing(ctx, st)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	kids := func(r *PGKeyRing) []string {
		var out []string
		for _, k := range r.JWKS().Keys {
			out = append(out, k.KeyID)
		}
		return out
	}
	before := kids(rings[0])
	if len(before) != 1 || !slices.Equal(before, kids(rings[1])) {
		t.Fatalf("replicas publish %v and %v, want one shared key", before, kids(rings[1]))
	}
	old, err := rings[1].Sign(map[string]any{"jti": "before-rotation"})
	if err != nil {
		t.Fatal(err)
	}
	kid, err := RotatePGKey(ctx, rings[0].st)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rings {
		r.mu.Lock()
		r.refresh = 0 // read the keys again on the next use
		r.mu.Unlock()
		if got := kids(r); !slices.Equal(got, []string{kid, before[0]}) {
			t.Fatalf("replica %d publishes %v after the rotation, want [%s %s]", i, got, kid, before[0])
		}
		tok, err := r.Sign(map[string]any{"jti": "after-rotation"})
		if err != nil {
			t.Fatal(err)
		}
		for _, set := range []string{tok, old} {
			jws, err := jose.ParseSigned(set, []jose.SignatureAlgorithm{jose.RS256})
			if err != nil {
				t.Fatal(err)
			}
			jwks := r.JWKS()
			keys := jwks.Key(jws.Signatures[0].Header.KeyID)
			if len(keys) != 1 {
				t.Fatalf("replica %d: kid %s not published", i, jws.Signatures[0].Header.KeyID)
			}
			if _, err := jws.Verify(keys[0].Public()); err != nil {
				t.Fatalf("replica %d: %v", i, err)
			}
		}
		if jws, _ := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256}); jws.Signatures[0].Header.KeyID != kid {
			t.Fatalf("replica %d signs with %s, want the new key %s", i, jws.Signatures[0].Header.KeyID, kid)
		}
	}
	// The SQLite store has no shared key ring (its keys are files).
	sq, err := OpenStore(ctx, filepath.Join(t.TempDir(), "ssf.db"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer sq.Close()
	if _, err := OpenPGKeyRing(ctx, sq); err == nil {
		t.Fatal("OpenPGKeyRing on the SQLite store: no error")
	}
	if _, err := RotatePGKey(ctx, sq); err == nil {
		t.Fatal("RotatePGKey on the SQLite store: no error")
	}
}
