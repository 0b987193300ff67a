package eventlog_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/condaccess/condaccess/internal/eventlog"
	"github.com/condaccess/condaccess/internal/sqlitedb"
)

const deadline = 20 * time.Second

func openDB(t *testing.T, path string) *sqlitedb.DB {
	t.Helper()
	db, err := sqlitedb.Open(context.Background(), sqlitedb.Options{
		Path:       path,
		Migrations: append([]string{`CREATE TABLE state (k TEXT PRIMARY KEY, v INTEGER NOT NULL)`}, eventlog.Migrations("")...),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func newLog(t *testing.T, db *sqlitedb.DB, opts eventlog.Options) *eventlog.Log {
	t.Helper()
	l, err := eventlog.New(context.Background(), db, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func setup(t *testing.T, opts eventlog.Options) (*sqlitedb.DB, *eventlog.Log) {
	db := openDB(t, filepath.Join(t.TempDir(), "db.sqlite"))
	return db, newLog(t, db, opts)
}

// appendEvent writes a state row and its event in one transaction.
func appendEvent(ctx context.Context, db *sqlitedb.DB, l *eventlog.Log, key string) (int64, error) {
	var rev int64
	err := db.Write(ctx, func(tx *sqlitedb.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO state (k, v) VALUES (?, 1) ON CONFLICT (k) DO UPDATE SET v = v + 1`, key); err != nil {
			return err
		}
		var err error
		rev, err = l.Append(tx, eventlog.Event{Type: "t", Key: key, Payload: []byte(key)})
		return err
	})
	return rev, err
}

// watcher runs Watch in a goroutine and forwards what it sees.
type watcher struct {
	events   chan eventlog.Event
	progress chan int64
	done     chan error
	cancel   context.CancelFunc
}

func watch(t *testing.T, l *eventlog.Log, start int64) *watcher {
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

// collect waits for n events and checks they are exactly after+1..after+n.
func (w *watcher) collect(t *testing.T, after int64, n int) []eventlog.Event {
	t.Helper()
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	var got []eventlog.Event
	for len(got) < n {
		select {
		case e := <-w.events:
			if want := after + int64(len(got)) + 1; e.Revision != want {
				t.Fatalf("event %d: revision %d, want %d", len(got), e.Revision, want)
			}
			got = append(got, e)
		case err := <-w.done:
			t.Fatalf("Watch ended after %d/%d events: %v", len(got), n, err)
		case <-timer.C:
			t.Fatalf("timeout: %d/%d events", len(got), n)
		}
	}
	return got
}

func (w *watcher) waitProgress(t *testing.T, want int64) {
	t.Helper()
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	for {
		select {
		case rev := <-w.progress:
			if rev == want {
				return
			}
		case err := <-w.done:
			t.Fatalf("Watch ended: %v", err)
		case <-timer.C:
			t.Fatalf("timeout waiting for progress %d", want)
		}
	}
}

func (w *watcher) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-w.done:
		return err
	case <-time.After(deadline):
		t.Fatal("timeout waiting for Watch to return")
		return nil
	}
}

func TestConcurrentAppendsGapFreeWithFailures(t *testing.T) {
	db, l := setup(t, eventlog.Options{})
	w := watch(t, l, 0)
	w.waitProgress(t, 0)
	ctx := context.Background()
	errFail := errors.New("fail")
	const writers, per = 50, 20
	var wg sync.WaitGroup
	var mu sync.Mutex
	okKeys := map[string]bool{}
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				key := fmt.Sprintf("k-%d-%d", g, i)
				fail := (g*per+i)%7 == 3
				err := db.Write(ctx, func(tx *sqlitedb.Tx) error {
					if _, err := l.Append(tx, eventlog.Event{Type: "t", Key: key}); err != nil {
						return err
					}
					if fail {
						return errFail // rolled back after Append: the revision must be reused
					}
					return nil
				})
				if fail != errors.Is(err, errFail) || (!fail && err != nil) {
					t.Errorf("write %s: %v", key, err)
				}
				if !fail {
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
	if got := l.Revision(); got != int64(n) {
		t.Fatalf("Revision() = %d, want %d", got, n)
	}
	for _, e := range w.collect(t, 0, n) {
		if !okKeys[e.Key] {
			t.Fatalf("event %d for failed/unknown write %q", e.Revision, e.Key)
		}
		delete(okKeys, e.Key)
	}
	// And the table agrees with the live stream.
	stored, err := l.List(ctx, 0, 10*n)
	if err != nil || len(stored) != n {
		t.Fatalf("List: %d events, %v; want %d", len(stored), err, n)
	}
	for i, e := range stored {
		if e.Revision != int64(i+1) {
			t.Fatalf("stored event %d has revision %d", i, e.Revision)
		}
	}
}

func TestReplayThenTailWithRacingAppends(t *testing.T) {
	for _, tt := range []struct {
		name  string
		start int64
	}{
		{"from zero", 0},
		{"from middle", 700},
		{"from head", 1500},
	} {
		t.Run(tt.name, func(t *testing.T) {
			db, l := setup(t, eventlog.Options{ReplayPage: 64, SubscriberBuffer: 256})
			ctx := context.Background()
			if err := db.Write(ctx, func(tx *sqlitedb.Tx) error {
				for i := range 1500 {
					if _, err := l.Append(tx, eventlog.Event{Type: "t", Key: fmt.Sprint("k", i%10)}); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			const more = 800
			appendersDone := make(chan struct{})
			go func() {
				defer close(appendersDone)
				var wg sync.WaitGroup
				for g := range 8 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range more / 8 {
							if _, err := appendEvent(ctx, db, l, fmt.Sprint("g", g)); err != nil {
								t.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
			}()
			w := watch(t, l, tt.start)
			w.collect(t, tt.start, int(1500+more-tt.start))
			<-appendersDone
			w.waitProgress(t, 1500+more)
			select {
			case e := <-w.events:
				t.Fatalf("unexpected extra event %d", e.Revision)
			default:
			}
		})
	}
}

func TestCompaction(t *testing.T) {
	db, l := setup(t, eventlog.Options{Retention: 10})
	ctx := context.Background()
	for range 50 {
		if _, err := appendEvent(ctx, db, l, "k"); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if got := l.CompactedBefore(); got != 40 {
		t.Fatalf("CompactedBefore = %d, want 40", got)
	}
	err := l.Watch(ctx, 39, func(eventlog.Event) error { return nil }, nil)
	if !errors.Is(err, eventlog.ErrCompacted) {
		t.Fatalf("Watch(39) = %v, want ErrCompacted", err)
	}
	st := status.Convert(eventlog.ToStatus(err))
	if st.Code() != codes.OutOfRange {
		t.Fatalf("code = %v, want OutOfRange", st.Code())
	}
	var info *errdetails.ErrorInfo
	for _, d := range st.Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok {
			info = i
		}
	}
	if info == nil || info.Reason != "REVISION_COMPACTED" || info.Domain != "condaccess.dev" ||
		info.Metadata["compacted_revision"] != "40" || info.Metadata["current_revision"] != "50" {
		t.Fatalf("ErrorInfo = %v", info)
	}
	if _, err := l.List(ctx, 0, 10); !errors.Is(err, eventlog.ErrCompacted) {
		t.Fatalf("List(0) = %v, want ErrCompacted", err)
	}
	w := watch(t, l, 40)
	w.collect(t, 40, 10)
	w.waitProgress(t, 50)
}

func TestSlowWatcherCutOffWithoutSlowingWriters(t *testing.T) {
	db, l := setup(t, eventlog.Options{SubscriberBuffer: 8})
	ctx := context.Background()
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	ready := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- l.Watch(ctx, 0,
			func(e eventlog.Event) error {
				select {
				case entered <- struct{}{}:
				default:
				}
				<-release // a stuck client
				return nil
			},
			func(int64) error {
				select {
				case ready <- struct{}{}:
				default:
				}
				return nil
			})
	}()
	select {
	case <-ready:
	case <-time.After(deadline):
		t.Fatal("watcher never went live")
	}
	writersDone := make(chan struct{})
	go func() {
		defer close(writersDone)
		for range 100 {
			if _, err := appendEvent(ctx, db, l, "k"); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	select {
	case <-writersDone: // writers finished while the watcher is stuck
	case <-time.After(deadline):
		t.Fatal("writers were slowed down by a stuck watcher")
	}
	<-entered
	close(release)
	var err error
	select {
	case err = <-done:
	case <-time.After(deadline):
		t.Fatal("slow watcher not cut off")
	}
	var se *eventlog.SlowWatcherError
	// Events already buffered may still be delivered after the release.
	if !errors.Is(err, eventlog.ErrSlowWatcher) || !errors.As(err, &se) || se.LastRevision < 1 || se.LastRevision > 9 {
		t.Fatalf("Watch = %v, want SlowWatcherError after revision 1..9", err)
	}
	if c := status.Code(eventlog.ToStatus(err)); c != codes.ResourceExhausted {
		t.Fatalf("code = %v, want ResourceExhausted", c)
	}
	// The client resumes from the last revision it received and gets the rest.
	w := watch(t, l, se.LastRevision)
	w.collect(t, se.LastRevision, int(100-se.LastRevision))
}

func TestProgressWhenIdle(t *testing.T) {
	db, l := setup(t, eventlog.Options{ProgressInterval: 10 * time.Millisecond})
	w := watch(t, l, 0)
	for range 3 {
		w.waitProgress(t, 0)
	}
	if _, err := appendEvent(context.Background(), db, l, "k"); err != nil {
		t.Fatal(err)
	}
	w.collect(t, 0, 1)
	w.waitProgress(t, 1)
	w.waitProgress(t, 1)
}

func TestFutureStartWaits(t *testing.T) {
	db, l := setup(t, eventlog.Options{})
	w := watch(t, l, 3)
	w.waitProgress(t, 3)
	for range 5 {
		if _, err := appendEvent(context.Background(), db, l, "k"); err != nil {
			t.Fatal(err)
		}
	}
	w.collect(t, 3, 2)
}

func TestWatchEnds(t *testing.T) {
	_, l := setup(t, eventlog.Options{})
	w := watch(t, l, 0)
	w.waitProgress(t, 0)
	w.cancel()
	if err := w.wait(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch after cancel = %v", err)
	}
	w2 := watch(t, l, 0)
	w2.waitProgress(t, 0)
	l.Close()
	err := w2.wait(t)
	if !errors.Is(err, eventlog.ErrClosed) || status.Code(eventlog.ToStatus(err)) != codes.Unavailable {
		t.Fatalf("Watch after Close = %v", err)
	}
}

func TestRestartContinuesRevisions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db.sqlite")
	ctx := context.Background()
	db := openDB(t, path)
	l := newLog(t, db, eventlog.Options{Retention: 2})
	for range 5 {
		if _, err := appendEvent(ctx, db, l, "k"); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	l.Close()
	db.Close()

	db = openDB(t, path)
	l = newLog(t, db, eventlog.Options{Retention: 2})
	if l.Revision() != 5 || l.CompactedBefore() != 3 {
		t.Fatalf("after reopen: Revision %d CompactedBefore %d, want 5, 3", l.Revision(), l.CompactedBefore())
	}
	rev, err := appendEvent(ctx, db, l, "k")
	if err != nil || rev != 6 {
		t.Fatalf("append after reopen: %d, %v; want 6", rev, err)
	}
	evs, err := l.List(ctx, 3, 100)
	if err != nil || len(evs) != 3 || evs[0].Revision != 4 || evs[2].Revision != 6 || string(evs[2].Payload) != "k" {
		t.Fatalf("List(3) = %v, %v", evs, err)
	}
}

// TestNextThenAppend: Next announces the revision Append takes, also after a failed
// fn gave its revisions back.
func TestNextThenAppend(t *testing.T) {
	db, l := setup(t, eventlog.Options{})
	ctx := context.Background()
	if _, err := appendEvent(ctx, db, l, "k"); err != nil {
		t.Fatal(err)
	}
	errBoom := errors.New("boom")
	err := db.Write(ctx, func(tx *sqlitedb.Tx) error {
		for range 3 {
			if _, err := l.Append(tx, eventlog.Event{Type: "t", Key: "lost"}); err != nil {
				return err
			}
		}
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("Write = %v, want boom", err)
	}
	if err := db.Write(ctx, func(tx *sqlitedb.Tx) error {
		next, err := l.Next(tx)
		if err != nil {
			return err
		}
		rev, err := l.Append(tx, eventlog.Event{Type: "t", Key: "k2"})
		if err != nil {
			return err
		}
		if next != 2 || rev != 2 {
			t.Errorf("Next = %d, Append = %d; want 2, 2 (the failed fn's revisions given back)", next, rev)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
