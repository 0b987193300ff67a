// Package eventlogtest is the test suite both event log backends (eventlog.Log on SQLite, eventlog.PGLog on PostgreSQL) pass.
package eventlogtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/condaccess/condaccess/internal/eventlog"
)

// Log is what both backends offer besides Append and Next (whose transaction types differ).
type Log interface {
	Revision() int64
	CompactedBefore() int64
	List(ctx context.Context, after int64, limit int) ([]eventlog.Event, error)
	Watch(ctx context.Context, start int64, onEvent func(eventlog.Event) error, onProgress func(rev int64) error) error
	Compact(ctx context.Context) error
	Close() error
}

var (
	_ Log = (*eventlog.Log)(nil)
	_ Log = (*eventlog.PGLog)(nil)
)

// Instance is one open log and the transactions the suite runs on it.
type Instance struct {
	Log Log
	// Write runs one transaction that changes a state row and appends an event (type
	// "t", payload the key) per key, then returns fail: a non-nil fail rolls it back.
	Write func(ctx context.Context, keys []string, fail error) (revs []int64, err error)
	// NextThenAppend runs one transaction: Next, then Append of key.
	NextThenAppend func(ctx context.Context, key string) (next, rev int64, err error)
	// Close closes the log and its database.
	Close func()
}

// Opener opens the log of one store; called again after Close, it reopens the same store.
type Opener func(t *testing.T, opts eventlog.Options) Instance

// Run runs the suite; newStore returns the opener of a new, empty store.
func Run(t *testing.T, newStore func(t *testing.T) Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"ConcurrentAppendsGapFreeWithFailures", testConcurrent},
		{"ReplayThenTailWithRacingAppends", testReplayThenTail},
		{"Compaction", testCompaction},
		{"ProgressWhenIdle", testProgress},
		{"FutureStartWaits", testFutureStart},
		{"WatchEnds", testWatchEnds},
		{"RestartContinuesRevisions", testRestart},
		{"NextThenAppend", testNextThenAppend},
		{"EventTooLarge", testTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newStore(t)) })
	}
}

const deadline = 30 * time.Second

type watcher struct {
	events   chan eventlog.Event
	progress chan int64
	done     chan error
	cancel   context.CancelFunc
}

func watch(t *testing.T, l Log, start int64) *watcher {
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

func open(t *testing.T, o Opener, opts eventlog.Options) Instance {
	t.Helper()
	in := o(t, opts)
	t.Cleanup(in.Close)
	return in
}

func write1(t *testing.T, in Instance, key string) int64 {
	t.Helper()
	revs, err := in.Write(context.Background(), []string{key}, nil)
	if err != nil {
		t.Fatalf("write %s: %v", key, err)
	}
	return revs[0]
}

func testConcurrent(t *testing.T, o Opener) {
	in := open(t, o, eventlog.Options{})
	w := watch(t, in.Log, 0)
	w.waitProgress(t, 0)
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
					fail = errFail // rolled back after Append: the revision must be reused
				}
				if _, err := in.Write(ctx, []string{key}, fail); !errors.Is(err, fail) {
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
	if got := in.Log.Revision(); got != int64(n) {
		t.Fatalf("Revision() = %d, want %d", got, n)
	}
	for _, e := range w.collect(t, 0, n) {
		if !okKeys[e.Key] {
			t.Fatalf("event %d for a failed, unknown or repeated write %q", e.Revision, e.Key)
		}
		delete(okKeys, e.Key)
	}
	stored, err := in.Log.List(ctx, 0, 10*n)
	if err != nil || len(stored) != n {
		t.Fatalf("List: %d events, %v; want %d", len(stored), err, n)
	}
	for i, e := range stored {
		if e.Revision != int64(i+1) {
			t.Fatalf("stored event %d has revision %d", i, e.Revision)
		}
	}
}

func testReplayThenTail(t *testing.T, o Opener) {
	for _, tt := range []struct {
		name  string
		start int64
	}{
		{"from zero", 0},
		{"from middle", 300},
		{"from head", 600},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// The cases share one store (reopened): count from its revision.
			in := open(t, o, eventlog.Options{ReplayPage: 64, SubscriberBuffer: 256})
			base := in.Log.Revision()
			ctx := context.Background()
			keys := make([]string, 600)
			for i := range keys {
				keys[i] = fmt.Sprint("k", i%10)
			}
			if _, err := in.Write(ctx, keys, nil); err != nil {
				t.Fatal(err)
			}
			const more = 200
			appendersDone := make(chan struct{})
			go func() {
				defer close(appendersDone)
				var wg sync.WaitGroup
				for g := range 4 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range more / 4 {
							if _, err := in.Write(ctx, []string{fmt.Sprint("g", g)}, nil); err != nil {
								t.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
			}()
			w := watch(t, in.Log, base+tt.start)
			w.collect(t, base+tt.start, int(600+more-tt.start))
			<-appendersDone
			w.waitProgress(t, base+600+more)
			select {
			case e := <-w.events:
				t.Fatalf("unexpected extra event %d", e.Revision)
			default:
			}
		})
	}
}

func testCompaction(t *testing.T, o Opener) {
	in := open(t, o, eventlog.Options{Retention: 10, CompactInterval: -1})
	ctx := context.Background()
	for range 50 {
		write1(t, in, "k")
	}
	if err := in.Log.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if got := in.Log.CompactedBefore(); got != 40 {
		t.Fatalf("CompactedBefore = %d, want 40", got)
	}
	noop := func(eventlog.Event) error { return nil }
	for _, tt := range []struct {
		name string
		call func() error
	}{
		{"Watch(39)", func() error { return in.Log.Watch(ctx, 39, noop, nil) }},
		{"Watch(0)", func() error { return in.Log.Watch(ctx, 0, noop, nil) }},
		{"List(0)", func() error { _, err := in.Log.List(ctx, 0, 10); return err }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, eventlog.ErrCompacted) {
				t.Fatalf("%s = %v, want ErrCompacted", tt.name, err)
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
			if info == nil || info.Reason != eventlog.ReasonRevisionCompacted || info.Domain != eventlog.ErrorDomain ||
				info.Metadata["compacted_revision"] != "40" || info.Metadata["current_revision"] != "50" {
				t.Fatalf("ErrorInfo = %v", info)
			}
		})
	}
	w := watch(t, in.Log, 40)
	w.collect(t, 40, 10)
	w.waitProgress(t, 50)
}

func testProgress(t *testing.T, o Opener) {
	in := open(t, o, eventlog.Options{ProgressInterval: 10 * time.Millisecond})
	w := watch(t, in.Log, 0)
	for range 3 {
		w.waitProgress(t, 0)
	}
	write1(t, in, "k")
	w.collect(t, 0, 1)
	w.waitProgress(t, 1)
	w.waitProgress(t, 1)
}

func testFutureStart(t *testing.T, o Opener) {
	in := open(t, o, eventlog.Options{})
	w := watch(t, in.Log, 3)
	w.waitProgress(t, 3)
	for range 5 {
		write1(t, in, "k")
	}
	w.collect(t, 3, 2)
}

func testWatchEnds(t *testing.T, o Opener) {
	in := open(t, o, eventlog.Options{})
	w := watch(t, in.Log, 0)
	w.waitProgress(t, 0)
	w.cancel()
	if err := w.wait(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch after cancel = %v", err)
	}
	w2 := watch(t, in.Log, 0)
	w2.waitProgress(t, 0)
	in.Log.Close()
	err := w2.wait(t)
	if !errors.Is(err, eventlog.ErrClosed) || status.Code(eventlog.ToStatus(err)) != codes.Unavailable {
		t.Fatalf("Watch after Close = %v, want ErrClosed (UNAVAILABLE)", err)
	}
}

func testRestart(t *testing.T, o Opener) {
	ctx := context.Background()
	in := o(t, eventlog.Options{Retention: 2, CompactInterval: -1})
	for range 5 {
		write1(t, in, "k")
	}
	if err := in.Log.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	in.Close()

	in = open(t, o, eventlog.Options{Retention: 2, CompactInterval: -1})
	if in.Log.Revision() != 5 || in.Log.CompactedBefore() != 3 {
		t.Fatalf("after reopen: Revision %d CompactedBefore %d, want 5, 3", in.Log.Revision(), in.Log.CompactedBefore())
	}
	if rev := write1(t, in, "k"); rev != 6 {
		t.Fatalf("append after reopen: %d; want 6", rev)
	}
	evs, err := in.Log.List(ctx, 3, 100)
	if err != nil || len(evs) != 3 || evs[0].Revision != 4 || evs[2].Revision != 6 || string(evs[2].Payload) != "k" {
		t.Fatalf("List(3) = %v, %v", evs, err)
	}
}

// testNextThenAppend: Next announces the revision Append takes, also after a failed
// transaction gave its revisions back.
func testNextThenAppend(t *testing.T, o Opener) {
	in := open(t, o, eventlog.Options{})
	ctx := context.Background()
	write1(t, in, "k")
	errBoom := errors.New("boom")
	if _, err := in.Write(ctx, []string{"lost", "lost", "lost"}, errBoom); !errors.Is(err, errBoom) {
		t.Fatalf("Write = %v, want boom", err)
	}
	next, rev, err := in.NextThenAppend(ctx, "k2")
	if err != nil || next != 2 || rev != 2 {
		t.Fatalf("Next = %d, Append = %d, %v; want 2, 2 (the failed transaction's revisions given back)", next, rev, err)
	}
}

// testTooLarge: an event over MaxPayloadBytes fails its transaction; nothing is stored.
func testTooLarge(t *testing.T, o Opener) {
	in := open(t, o, eventlog.Options{MaxPayloadBytes: 8})
	ctx := context.Background()
	if _, err := in.Write(ctx, []string{"123456789"}, nil); !errors.Is(err, eventlog.ErrEventTooLarge) {
		t.Fatalf("Write of a 9-byte payload = %v, want ErrEventTooLarge", err)
	}
	if rev := write1(t, in, "12345678"); rev != 1 {
		t.Fatalf("next revision = %d, want 1", rev)
	}
}
