package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/condaccess/condaccess/internal/consumer"
	"github.com/condaccess/condaccess/internal/consumer/consumertest"
)

const deadline = 20 * time.Second

type ev struct{ Key string }

// store is a fake transactional consumer store: derived state and cursor change together.
type store struct {
	t       *testing.T
	mu      sync.Mutex
	cursor  int64
	has     bool
	applied []int64
	state   map[string]int64
	resyncs int
	failAt  map[int64]int // rev -> remaining injected Apply failures
}

func newStore(t *testing.T) *store {
	return &store{t: t, state: map[string]int64{}, failAt: map[int64]int{}}
}

func (s *store) config(src *consumertest.Source[ev]) consumer.Config[ev] {
	return consumer.Config[ev]{
		Name:   "test",
		Source: src,
		Cursor: func(context.Context) (int64, bool, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.cursor, s.has, nil
		},
		Resync: func(context.Context) (int64, error) {
			evs, rev := src.Snapshot()
			s.mu.Lock()
			defer s.mu.Unlock()
			s.resyncs++
			clear(s.state)
			for _, e := range evs {
				s.state[e.Key]++
			}
			s.cursor, s.has = rev, true
			return rev, nil
		},
		Apply: func(_ context.Context, e ev, rev int64) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.failAt[rev] > 0 {
				s.failAt[rev]--
				return errors.New("injected apply failure")
			}
			if rev != s.cursor+1 {
				s.t.Errorf("Apply(%d) with cursor %d: out of order or duplicate", rev, s.cursor)
			}
			s.applied = append(s.applied, rev)
			s.state[e.Key]++
			s.cursor, s.has = rev, true
			return nil
		},
		OnProgress: func(_ context.Context, rev int64) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.cursor, s.has = rev, true
			return nil
		},
		Logger:     slog.New(slog.DiscardHandler),
		MinBackoff: time.Millisecond,
		MaxBackoff: 5 * time.Millisecond,
	}
}

func (s *store) snapshot() (applied []int64, resyncs int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.applied), s.resyncs
}

// watchSignal wraps a Source to report each Watch call.
type watchSignal struct {
	*consumertest.Source[ev]
	calls chan int64
}

func (w watchSignal) Watch(ctx context.Context, start int64) (consumer.Stream[ev], error) {
	w.calls <- start
	return w.Source.Watch(ctx, start)
}

func start(t *testing.T, cfg consumer.Config[ev]) (*consumer.Consumer[ev], func() error) {
	t.Helper()
	c := consumer.New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(deadline):
				t.Error("Run did not return after cancel")
			}
		})
		return runErr
	}
	t.Cleanup(func() { stop() })
	return c, stop
}

func waitRev(t *testing.T, c *consumer.Consumer[ev], rev int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if err := c.WaitRevision(ctx, rev); err != nil {
		t.Fatalf("WaitRevision(%d): %v (status %+v)", rev, err, c.Status())
	}
}

func seq(from, to int64) []int64 {
	var r []int64
	for i := from; i <= to; i++ {
		r = append(r, i)
	}
	return r
}

var unavailable = status.Error(codes.Unavailable, "connection refused")

func TestExactlyOnceInOrderAcrossFailures(t *testing.T) {
	src := consumertest.NewSource[ev]()
	for i := range 10 {
		src.Append(ev{fmt.Sprint("k", i%3)})
	}
	st := newStore(t)
	st.failAt[25] = 2
	c, stop := start(t, st.config(src))
	waitRev(t, c, 10) // no cursor: resync first
	src.FailWatch(unavailable)
	for i := range 50 {
		src.Append(ev{fmt.Sprint("k", i%3)})
		switch i % 10 {
		case 4:
			src.Disconnect(unavailable)
			src.FailWatch(unavailable, errors.New("dial failed"))
		case 8:
			src.Disconnect(status.Error(codes.Internal, "stream reset"))
		}
	}
	waitRev(t, c, 60)
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	applied, resyncs := st.snapshot()
	if !slices.Equal(applied, seq(11, 60)) {
		t.Fatalf("applied = %v, want 11..60 once each", applied)
	}
	if resyncs != 1 {
		t.Fatalf("resyncs = %d, want 1", resyncs)
	}
	if got := c.Status(); got.Reconnects < 5 || got.Revision != 60 || got.Connected {
		t.Fatalf("Status = %+v, want >=5 reconnects, revision 60, not connected after stop", got)
	}
	if st.state["k0"]+st.state["k1"]+st.state["k2"] != 60 {
		t.Fatalf("derived state %v does not count 60 events", st.state)
	}
}

func TestRestartResumesFromStoredCursor(t *testing.T) {
	src := consumertest.NewSource[ev]()
	st := newStore(t)
	st.has = true // an empty but existing cursor at 0: no resync
	c, stop := start(t, st.config(src))
	for range 20 {
		src.Append(ev{"k"})
	}
	waitRev(t, c, 20)
	stop()

	for range 10 {
		src.Append(ev{"k"}) // appended while no consumer runs
	}
	src.FailWatch() // no-op, keep API exercised
	c2, _ := start(t, st.config(src))
	waitRev(t, c2, 30)
	applied, resyncs := st.snapshot()
	if !slices.Equal(applied, seq(1, 30)) || resyncs != 0 {
		t.Fatalf("applied = %v, resyncs = %d; want 1..30 once each, no resync", applied, resyncs)
	}
	if w := src.Watches(); w[len(w)-1] != 20 {
		t.Fatalf("restart watched from %d, want 20 (watches %v)", w[len(w)-1], w)
	}
}

func TestResyncOnCompaction(t *testing.T) {
	src := consumertest.NewSource[ev]()
	for range 30 {
		src.Append(ev{"k"})
	}
	src.Compact(20)
	st := newStore(t)
	st.cursor, st.has = 5, true
	c, _ := start(t, st.config(src))
	waitRev(t, c, 30)
	src.Append(ev{"new"})
	waitRev(t, c, 31)
	applied, resyncs := st.snapshot()
	if resyncs != 1 || !slices.Equal(applied, []int64{31}) {
		t.Fatalf("resyncs = %d, applied = %v; want 1 resync then [31]", resyncs, applied)
	}
	if w := src.Watches(); !slices.Equal(w[:2], []int64{5, 30}) {
		t.Fatalf("watches = %v, want [5 30 ...]", w)
	}

	// Compaction reported mid-stream (OUT_OF_RANGE from Recv) also resyncs.
	src.Disconnect(status.Error(codes.OutOfRange, "compacted"))
	src.Append(ev{"k"})
	waitRev(t, c, 32)
	if _, resyncs := st.snapshot(); resyncs != 2 {
		t.Fatalf("resyncs = %d after mid-stream OUT_OF_RANGE, want 2", resyncs)
	}
}

func TestStaleness(t *testing.T) {
	const bound = time.Hour // judged with explicit clocks: no sleeping
	src := consumertest.NewSource[ev]()
	ws := watchSignal{Source: src, calls: make(chan int64, 100)}
	st := newStore(t)
	st.has = true
	cfg := st.config(src)
	cfg.Source = ws

	c := consumer.New(cfg)
	if !c.Stale(bound, time.Now()) {
		t.Fatal("not stale before Run")
	}
	src.FailWatch(unavailable, unavailable, unavailable)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)
	waitCall := func() {
		t.Helper()
		select {
		case <-ws.calls:
		case <-time.After(deadline):
			t.Fatal("no Watch call")
		}
	}
	waitCall()
	waitCall() // second call: the first failure has been recorded
	s := c.Status()
	if s.Connected || s.BrokenSince.IsZero() || s.Reconnects < 1 {
		t.Fatalf("Status while failing = %+v", s)
	}
	if c.Stale(bound, time.Now()) {
		t.Fatal("stale before the bound has passed since Run")
	}
	if !c.Stale(bound, time.Now().Add(bound+time.Second)) {
		t.Fatal("not stale after the bound without any contact")
	}

	waitCall()
	waitCall() // fourth call succeeds
	src.Append(ev{"k"})
	waitRev(t, c, 1)
	s = c.Status()
	if !s.Connected || !s.BrokenSince.IsZero() || s.LastContact.IsZero() {
		t.Fatalf("Status after reconnect = %+v", s)
	}
	if c.Stale(bound, time.Now()) {
		t.Fatal("stale right after contact")
	}
	if !c.Stale(bound, s.LastContact.Add(bound+time.Second)) {
		t.Fatal("not stale when contact is older than the bound")
	}

	// A broken feed is stale once the bound has passed since the last contact.
	src.FailWatch(unavailable, unavailable)
	src.Disconnect(unavailable)
	waitCall()
	s = c.Status()
	if s.Connected || s.BrokenSince.IsZero() {
		t.Fatalf("Status after disconnect = %+v", s)
	}
	if !c.Stale(bound, s.BrokenSince.Add(bound+time.Second)) {
		t.Fatal("not stale after the bound while broken")
	}
	// Reconnecting clears the broken state.
	waitCall()
	waitCall()
	src.Progress()
	src.Append(ev{"k"})
	waitRev(t, c, 2)
	if s := c.Status(); !s.Connected || !s.BrokenSince.IsZero() {
		t.Fatalf("Status after second reconnect = %+v", s)
	}
}

func TestWaitRevisionHonoursContext(t *testing.T) {
	src := consumertest.NewSource[ev]()
	st := newStore(t)
	c, _ := start(t, st.config(src))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.WaitRevision(ctx, 99); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitRevision = %v", err)
	}
}
