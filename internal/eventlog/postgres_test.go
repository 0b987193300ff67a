package eventlog_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/condaccess/condaccess/internal/eventlog"
	"github.com/condaccess/condaccess/internal/pgdb"
	"github.com/condaccess/condaccess/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// pgReplica is one process's view of a log on PostgreSQL: its own pool and PGLog.
type pgReplica struct {
	db *pgdb.DB
	l  *eventlog.PGLog
}

func pgOpen(t *testing.T, url string, opts eventlog.PGOptions) pgReplica {
	t.Helper()
	ctx := context.Background()
	db, err := pgdb.Open(ctx, pgdb.Options{URL: url, Schema: "svc",
		Migrations: append([]string{`CREATE TABLE state (k TEXT PRIMARY KEY, v INTEGER NOT NULL)`}, eventlog.PGMigrations("")...)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	l, err := eventlog.NewPG(ctx, db, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return pgReplica{db: db, l: l}
}

// appendPG writes a state row and its event in one transaction; fail makes the fn
// fail after the Append.
func (r pgReplica) append(ctx context.Context, key string, fail error) (int64, error) {
	var rev int64
	err := r.db.Write(ctx, func(tx *pgdb.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO state (k, v) VALUES ($1, 1) ON CONFLICT (k) DO UPDATE SET v = state.v + 1`, key); err != nil {
			return err
		}
		var err error
		if rev, err = r.l.Append(tx, eventlog.Event{Type: "t", Key: key, Payload: []byte(key)}); err != nil {
			return err
		}
		return fail
	})
	return rev, err
}

func pgWatch(t *testing.T, l *eventlog.PGLog, start int64) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{events: make(chan eventlog.Event, 100000), progress: make(chan int64, 100000), done: make(chan error, 1), cancel: cancel}
	go func() {
		w.done <- l.Watch(ctx, start,
			func(e eventlog.Event) error { w.events <- e; return nil },
			func(rev int64) error { w.progress <- rev; return nil })
	}()
	t.Cleanup(cancel)
	return w
}

// TestPGConcurrentAppendsTwoReplicasGapFree: writers on two replicas, some failing
// after their Append; the committed events are exactly 1..n, each a committed
// write, seen in order by a watcher on either replica and by List.
func TestPGConcurrentAppendsTwoReplicasGapFree(t *testing.T) {
	url := pgtest.URL(t)
	reps := []pgReplica{pgOpen(t, url, eventlog.PGOptions{}), pgOpen(t, url, eventlog.PGOptions{})}
	ws := []*watcher{pgWatch(t, reps[0].l, 0), pgWatch(t, reps[1].l, 0)}
	for _, w := range ws {
		w.waitProgress(t, 0)
	}
	ctx := context.Background()
	errFail := errors.New("fail")
	const writers, per = 16, 12
	var wg sync.WaitGroup
	var mu sync.Mutex
	okKeys := map[string]bool{}
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				key := fmt.Sprintf("k-%d-%d", g, i)
				var fail error
				if (g*per+i)%7 == 3 {
					fail = errFail
				}
				_, err := reps[(g+i)%2].append(ctx, key, fail)
				if !errors.Is(err, fail) {
					t.Errorf("write %s: %v, want %v", key, err, fail)
				}
				if fail == nil {
					mu.Lock()
					okKeys[key] = true
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	n := len(okKeys)
	if n == 0 || n == writers*per {
		t.Fatalf("bad test: %d successful writes", n)
	}
	for i, w := range ws {
		seen := map[string]bool{}
		for _, e := range w.collect(t, 0, n) {
			if !okKeys[e.Key] || seen[e.Key] {
				t.Fatalf("replica %d: event %d for a failed, unknown or repeated write %q", i, e.Revision, e.Key)
			}
			seen[e.Key] = true
		}
		w.waitProgress(t, int64(n))
	}
	stored, err := reps[1].l.List(ctx, 0, 10*n)
	if err != nil || len(stored) != n {
		t.Fatalf("List: %d events, %v; want %d", len(stored), err, n)
	}
	for i, e := range stored {
		if e.Revision != int64(i+1) {
			t.Fatalf("stored event %d has revision %d", i, e.Revision)
		}
	}
	var rows int
	if err := reps[0].db.Read().QueryRowContext(ctx, `SELECT COALESCE(SUM(v), 0) FROM state`).Scan(&rows); err != nil || rows != n {
		t.Fatalf("state rows count %d writes (%v), want %d: a failed fn left its change", rows, err, n)
	}
}

// TestPGWatchWokenAcrossReplicas: a watcher on one replica gets an event committed on
// another, woken by NOTIFY (polling set to an hour, so nothing else could wake it)
// or, with NOTIFY disabled, by polling alone.
func TestPGWatchWokenAcrossReplicas(t *testing.T) {
	tests := []struct {
		name string
		opts eventlog.PGOptions
	}{
		{"notify", eventlog.PGOptions{PollInterval: time.Hour, Options: eventlog.Options{ProgressInterval: time.Hour}}},
		{"polling only", eventlog.PGOptions{NoNotify: true, PollInterval: 20 * time.Millisecond, Options: eventlog.Options{ProgressInterval: time.Hour}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := pgtest.URL(t)
			a, b := pgOpen(t, url, tt.opts), pgOpen(t, url, tt.opts)
			w := pgWatch(t, b.l, 0)
			w.waitProgress(t, 0)
			ctx := context.Background()
			for i := range 3 {
				rev, err := a.append(ctx, fmt.Sprint("k", i), nil)
				if err != nil || rev != int64(i+1) {
					t.Fatalf("append %d = %d, %v", i, rev, err)
				}
				if e := w.collect(t, int64(i), 1)[0]; e.Key != fmt.Sprint("k", i) || string(e.Payload) != e.Key {
					t.Fatalf("event %+v", e)
				}
			}
			// The other replica's Revision follows too.
			waitFor(t, func() bool { return b.l.Revision() == 3 }, "replica b's Revision to reach 3")
		})
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timeout waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPGCompaction: history older than the retention is refused with OUT_OF_RANGE,
// also on a replica that has not yet heard of the compaction, and a watcher from the
// compaction point gets the rest.
func TestPGCompaction(t *testing.T) {
	url := pgtest.URL(t)
	a := pgOpen(t, url, eventlog.PGOptions{Options: eventlog.Options{Retention: 10, CompactInterval: -1}})
	b := pgOpen(t, url, eventlog.PGOptions{PollInterval: time.Hour, NoNotify: true})
	ctx := context.Background()
	for range 50 {
		if _, err := a.append(ctx, "k", nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.l.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if got := a.l.CompactedBefore(); got != 40 {
		t.Fatalf("CompactedBefore = %d, want 40", got)
	}
	noop := func(eventlog.Event) error { return nil }
	tests := []struct {
		name string
		call func() error
	}{
		{"Watch(39)", func() error { return a.l.Watch(ctx, 39, noop, nil) }},
		{"List(0)", func() error { _, err := a.l.List(ctx, 0, 10); return err }},
		{"other replica List(0)", func() error { _, err := b.l.List(ctx, 0, 10); return err }},
		{"other replica Watch(10)", func() error { return b.l.Watch(ctx, 10, noop, nil) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var ce *eventlog.CompactedError
			if !errors.As(err, &ce) || ce.CompactedBefore != 40 {
				t.Fatalf("%s = %v, want CompactedError before 40", tt.name, err)
			}
			if c := status.Code(eventlog.ToStatus(err)); c != codes.OutOfRange {
				t.Fatalf("code = %v, want OutOfRange", c)
			}
		})
	}
	w := pgWatch(t, b.l, 40)
	w.collect(t, 40, 10)
	w.waitProgress(t, 50)
}
