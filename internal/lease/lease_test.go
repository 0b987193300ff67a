package lease_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/condaccess/condaccess/internal/lease"
	"github.com/condaccess/condaccess/internal/pgdb"
	"github.com/condaccess/condaccess/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

const deadline = 20 * time.Second

func openDB(t *testing.T, url string) *pgdb.DB {
	t.Helper()
	db, err := pgdb.Open(context.Background(), pgdb.Options{URL: url, Schema: "svc",
		Migrations: append(lease.PGMigrations(), `CREATE TABLE cursor (id INTEGER PRIMARY KEY, rev BIGINT NOT NULL); INSERT INTO cursor VALUES (1, 0)`)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// advance is a consumer's cursor write: fenced, then the cursor moves to rev.
func advance(ctx context.Context, db *pgdb.DB, l lease.Lease, token, rev int64) error {
	return db.Write(ctx, func(tx *pgdb.Tx) error {
		if err := l.Fence(ctx, tx, token); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE cursor SET rev = $1 WHERE id = 1`, rev)
		return err
	})
}

func cursor(t *testing.T, db *pgdb.DB) int64 {
	t.Helper()
	var rev int64
	if err := db.Read().QueryRowContext(context.Background(), `SELECT rev FROM cursor WHERE id = 1`).Scan(&rev); err != nil {
		t.Fatal(err)
	}
	return rev
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timeout waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPausedHolderFenced: a holder that stops renewing (paused) loses the lease to
// another replica once it expires; from then on every fenced write of the old
// holder is refused and changes nothing, while the new holder's pass.
func TestPausedHolderFenced(t *testing.T) {
	url := pgtest.URL(t)
	dbA, dbB := openDB(t, url), openDB(t, url)
	ctx := context.Background()
	const d = 300 * time.Millisecond
	a := lease.NewPG(dbA.Read(), lease.PGOptions{Name: "consumer", Holder: "a", Duration: d})
	b := lease.NewPG(dbB.Read(), lease.PGOptions{Name: "consumer", Holder: "b", Duration: d})

	tokA, err := a.TryAcquire(ctx)
	if err != nil || tokA != 1 {
		t.Fatalf("a acquires = %d, %v; want token 1", tokA, err)
	}
	if _, err := b.TryAcquire(ctx); !errors.Is(err, lease.ErrHeld) {
		t.Fatalf("b takes a live lease: %v, want ErrHeld", err)
	}
	if err := advance(ctx, dbA, a, tokA, 1); err != nil {
		t.Fatalf("leader's fenced write: %v", err)
	}
	// a pauses (no renewal); b takes over after expiry.
	var tokB int64
	waitFor(t, "b to take over the expired lease", func() bool {
		var err error
		tokB, err = b.TryAcquire(ctx)
		return err == nil
	})
	if tokB != tokA+1 {
		t.Fatalf("b's token = %d, want %d", tokB, tokA+1)
	}
	if err := advance(ctx, dbB, b, tokB, 2); err != nil {
		t.Fatalf("new leader's fenced write: %v", err)
	}

	tests := []struct {
		name  string
		l     lease.Lease
		db    *pgdb.DB
		token int64
	}{
		{"old leader resumes with its token", a, dbA, tokA},
		{"old leader presents the new token", a, dbA, tokB},
		{"new leader presents the old token", b, dbB, tokA},
		{"a token never issued", b, dbB, tokB + 1},
		{"the local lease's token on PostgreSQL", b, dbB, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := advance(ctx, tt.db, tt.l, tt.token, 99); !errors.Is(err, lease.ErrFenced) {
				t.Fatalf("fenced write = %v, want ErrFenced", err)
			}
			if got := cursor(t, tt.db); got != 2 {
				t.Fatalf("cursor = %d after a refused write, want 2", got)
			}
		})
	}
	if err := a.Renew(ctx, tokA); !errors.Is(err, lease.ErrFenced) {
		t.Fatalf("old leader renews: %v, want ErrFenced", err)
	}
	if err := b.Renew(ctx, tokB); err != nil {
		t.Fatalf("new leader renews: %v", err)
	}
}

// TestTakeoverWaitsForFencedTxInFlight: a transaction fenced before the lease
// expired holds the lease row; a takeover waits for it to commit, so the old
// leader's last write is ordered before the new leader's first.
func TestTakeoverWaitsForFencedTxInFlight(t *testing.T) {
	url := pgtest.URL(t)
	dbA, dbB := openDB(t, url), openDB(t, url)
	ctx := context.Background()
	const d = 200 * time.Millisecond
	a := lease.NewPG(dbA.Read(), lease.PGOptions{Name: "consumer", Holder: "a", Duration: d})
	b := lease.NewPG(dbB.Read(), lease.PGOptions{Name: "consumer", Holder: "b", Duration: d})
	tokA, err := a.TryAcquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fenced, commit := make(chan struct{}), make(chan struct{})
	wrote := make(chan error, 1)
	go func() {
		wrote <- dbA.Write(ctx, func(tx *pgdb.Tx) error {
			if err := a.Fence(ctx, tx, tokA); err != nil {
				return err
			}
			close(fenced)
			<-commit
			_, err := tx.ExecContext(ctx, `UPDATE cursor SET rev = 1 WHERE id = 1`)
			return err
		})
	}()
	<-fenced
	waitFor(t, "a's lease to expire", func() bool {
		var expired bool
		err := dbB.Read().QueryRowContext(ctx, `SELECT expires_at <= clock_timestamp() FROM leases WHERE name = 'consumer'`).Scan(&expired)
		return err == nil && expired
	})
	type res struct {
		tok    int64
		err    error
		cursor int64
	}
	took := make(chan res, 1)
	go func() {
		tok, err := b.TryAcquire(ctx)
		var c int64
		if err == nil {
			err = dbB.Read().QueryRowContext(ctx, `SELECT rev FROM cursor WHERE id = 1`).Scan(&c)
		}
		took <- res{tok, err, c}
	}()
	waitFor(t, "b's takeover to wait on the lease row", func() bool {
		var n int
		err := dbB.Read().QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n)
		return err == nil && n == 1
	})
	select {
	case r := <-took:
		t.Fatalf("b took over while a's fenced transaction was in flight: %+v", r)
	default:
	}
	close(commit)
	if err := <-wrote; err != nil {
		t.Fatalf("a's fenced write: %v", err)
	}
	r := <-took
	if r.err != nil || r.tok != tokA+1 || r.cursor != 1 {
		t.Fatalf("b's takeover = %+v; want token %d after a's write (cursor 1)", r, tokA+1)
	}
}

// TestRunFailover: of two replicas running the same lease, one leads; when it stops
// (its Run ends) the other leads with the next token, and a leader whose lease is
// taken from it sees its context end.
func TestRunFailover(t *testing.T) {
	url := pgtest.URL(t)
	dbA, dbB := openDB(t, url), openDB(t, url)
	const d = 300 * time.Millisecond
	a := lease.NewPG(dbA.Read(), lease.PGOptions{Name: "consumer", Holder: "a", Duration: d})
	b := lease.NewPG(dbB.Read(), lease.PGOptions{Name: "consumer", Holder: "b", Duration: d})
	type lead struct {
		who   string
		token int64
		ctx   context.Context
	}
	leads := make(chan lead, 10)
	run := func(l *lease.PG, who string) context.CancelFunc {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			l.Run(ctx, func(ctx context.Context, tok int64) error {
				leads <- lead{who, tok, ctx}
				<-ctx.Done()
				return nil
			})
		}()
		t.Cleanup(func() { cancel(); <-done })
		return cancel
	}
	next := func() lead {
		t.Helper()
		select {
		case l := <-leads:
			return l
		case <-time.After(deadline):
			t.Fatal("timeout waiting for a leader")
			return lead{}
		}
	}
	stopA := run(a, "a")
	first := next()
	if first.who != "a" || first.token != 1 {
		t.Fatalf("first leader %s token %d, want a 1", first.who, first.token)
	}
	run(b, "b")
	stopA()
	second := next()
	if second.who != "b" || second.token != 2 {
		t.Fatalf("after a stopped: leader %s token %d, want b 2", second.who, second.token)
	}
	// Someone takes the lease from b (its row expired and re-acquired by "c").
	if _, err := dbA.Read().ExecContext(context.Background(), `UPDATE leases SET holder = 'c', token = token + 1 WHERE name = 'consumer'`); err != nil {
		t.Fatal(err)
	}
	select {
	case <-second.ctx.Done():
	case <-time.After(deadline):
		t.Fatal("b kept leading after its lease moved on")
	}
}

// TestLocal: the single-process lease always leads with token 1.
func TestLocal(t *testing.T) {
	var got int64
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := (lease.Local{}).Run(ctx, func(_ context.Context, tok int64) error { got = tok; return nil }); !errors.Is(err, context.Canceled) || got != 1 {
		t.Fatalf("Run: token %d, err %v", got, err)
	}
	for _, tt := range []struct {
		token int64
		want  error
	}{{1, nil}, {2, lease.ErrFenced}, {0, lease.ErrFenced}} {
		if err := (lease.Local{}).Fence(ctx, nil, tt.token); !errors.Is(err, tt.want) {
			t.Errorf("Fence(%d) = %v, want %v", tt.token, err, tt.want)
		}
	}
}

// TestRunFailingWorkDoesNotSpin: a leader whose work fails at once gives the lease up
// and leads again no sooner than Duration/3 later.
func TestRunFailingWorkDoesNotSpin(t *testing.T) {
	db := openDB(t, pgtest.URL(t))
	const d = 300 * time.Millisecond
	l := lease.NewPG(db.Read(), lease.PGOptions{Name: "consumer", Duration: d})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var starts []time.Time
	var tokens []int64
	done := make(chan error, 1)
	go func() {
		done <- l.Run(ctx, func(_ context.Context, tok int64) error {
			starts = append(starts, time.Now())
			tokens = append(tokens, tok)
			if len(starts) == 3 {
				cancel()
			}
			return errors.New("work failed")
		})
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run = %v, want context.Canceled", err)
		}
	case <-time.After(deadline):
		t.Fatal("timeout: the work did not run three times")
	}
	for i := 1; i < len(starts); i++ {
		if gap := starts[i].Sub(starts[i-1]); gap < d/3 {
			t.Fatalf("led again %v after failing, want >= %v", gap, d/3)
		}
		if tokens[i] != tokens[i-1]+1 {
			t.Fatalf("tokens %v: each leadership takes the next token", tokens)
		}
	}
}
