// Package consumer follows an upstream event stream: it resumes from the stored cursor (or lists first), applies each event once in order, reconnects with backoff, resyncs when history is compacted, and reports lag.
package consumer

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// Source opens the upstream's event stream.
type Source[E any] interface {
	// Watch opens the upstream stream from start (exclusive).
	Watch(ctx context.Context, start int64) (Stream[E], error)
}

// Stream yields events or progress revisions. Recv returns either an event
// with its revision, or (isProgress) a revision through which nothing more
// will come. An error whose gRPC code is OUT_OF_RANGE means start was compacted.
type Stream[E any] interface {
	Recv() (ev E, rev int64, isProgress bool, err error)
}

// Config configures a Consumer.
type Config[E any] struct {
	Name   string
	Source Source[E]
	// Cursor returns the last applied revision stored by the consumer (0 and false when none).
	Cursor func(ctx context.Context) (rev int64, ok bool, err error)
	// Resync lists the upstream's full state and replaces what the consumer
	// derived from it, storing the list's revision as the cursor in the same
	// transaction; returns that revision. Called when there is no cursor and
	// when Watch fails with OUT_OF_RANGE.
	Resync func(ctx context.Context) (rev int64, err error)
	// Apply applies one event and stores rev as the cursor in the same
	// transaction. Must be idempotent for rev <= cursor (the consumer also skips those).
	Apply func(ctx context.Context, ev E, rev int64) error
	// OnProgress is optional (e.g. store the cursor).
	OnProgress func(ctx context.Context, rev int64) error
	// MinBackoff, MaxBackoff default to 50ms and 5s; waits are jittered.
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
	// Health and HealthName, when set, report the consumer's service NOT_SERVING under
	// HealthName while the consumer is stuck, and SERVING again once it applies the event.
	Health     HealthSetter
	HealthName string
}

// HealthSetter is the part of *health.Server a consumer uses.
type HealthSetter interface {
	SetServingStatus(service string, status healthpb.HealthCheckResponse_ServingStatus)
}

// Status is a snapshot of a consumer's health.
type Status struct {
	Connected   bool      // a stream is open and has delivered an event or progress
	Revision    int64     // last applied (or progressed / resynced) revision
	LastContact time.Time // last event, progress or successful resync
	BrokenSince time.Time // zero when connected
	Reconnects  int64     // stream failures so far
	// Stuck is set while the consumer cannot apply (or cannot receive) the event at
	// StuckRevision: it stops there and retries, it never skips. StuckCause is the
	// last error, StuckSince when it first failed.
	Stuck         bool
	StuckRevision int64
	StuckCause    string
	StuckSince    time.Time
}

// Consumer follows one upstream. Safe for concurrent use; Run must be called once.
type Consumer[E any] struct {
	cfg Config[E]
	log *slog.Logger

	mu      sync.Mutex
	st      Status
	started time.Time
	known   bool          // st.Revision is loaded
	changed chan struct{} // closed and replaced when st.Revision advances
}

// New returns a Consumer; it does nothing until Run.
func New[E any](cfg Config[E]) *Consumer[E] {
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 50 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = cfg.MinBackoff
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Consumer[E]{cfg: cfg, log: cfg.Logger.With("consumer", cfg.Name), changed: make(chan struct{})}
	register(cfg.Name, c.Status)
	return c
}

// Run follows the upstream until ctx ends, then returns ctx.Err(). Any error
// (Watch, Recv, Cursor, Apply, Resync) drops the stream and reconnects after a
// jittered exponential backoff, resuming from the stored cursor; OUT_OF_RANGE
// triggers Resync and a watch from the revision it returns.
func (c *Consumer[E]) Run(ctx context.Context) error {
	c.mu.Lock()
	c.started = time.Now()
	c.mu.Unlock()
	attempt := 0
	for {
		contacted, err := c.session(ctx)
		if ctx.Err() != nil {
			c.setBroken()
			return ctx.Err()
		}
		if contacted {
			attempt = 0
		}
		c.setBroken()
		c.mu.Lock()
		c.st.Reconnects++
		c.mu.Unlock()
		d := c.backoff(attempt)
		attempt++
		c.log.WarnContext(ctx, "event feed broken, reconnecting", "err", err, "backoff", d)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (c *Consumer[E]) backoff(attempt int) time.Duration {
	d := c.cfg.MinBackoff
	for range attempt {
		d *= 2
		if d >= c.cfg.MaxBackoff {
			d = c.cfg.MaxBackoff
			break
		}
	}
	// Jitter in [d/2, d].
	return d/2 + rand.N(d/2+1)
}

// session runs one stream; it reports whether any contact was made.
func (c *Consumer[E]) session(ctx context.Context) (contacted bool, err error) {
	cur, ok, err := c.cfg.Cursor(ctx)
	if err != nil {
		return false, fmt.Errorf("read cursor: %w", err)
	}
	if !ok {
		if cur, err = c.resync(ctx); err != nil {
			return false, err
		}
		contacted = true
	} else {
		c.advance(cur, false)
	}
	for {
		compacted, err := c.stream(ctx, cur, &contacted)
		if !compacted {
			return contacted, err
		}
		c.log.InfoContext(ctx, "start revision compacted upstream, resyncing", "revision", cur, "err", err)
		if cur, err = c.resync(ctx); err != nil {
			return contacted, err
		}
		contacted = true
	}
}

func (c *Consumer[E]) resync(ctx context.Context) (int64, error) {
	rev, err := c.cfg.Resync(ctx)
	if err != nil {
		return 0, fmt.Errorf("resync: %w", err)
	}
	c.advance(rev, true)
	return rev, nil
}

// stream watches from cur; compacted reports an OUT_OF_RANGE failure.
func (c *Consumer[E]) stream(ctx context.Context, cur int64, contacted *bool) (compacted bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := c.cfg.Source.Watch(ctx, cur)
	if err != nil {
		return status.Code(err) == codes.OutOfRange, fmt.Errorf("watch from %d: %w", cur, err)
	}
	for {
		ev, rev, isProgress, err := s.Recv()
		if err != nil {
			if undeliverable(err) {
				// The next event reached us but could not be received (too large, or
				// not decodable): as stuck as an event that cannot be applied.
				c.setStuck(ctx, cur+1, err)
			}
			return status.Code(err) == codes.OutOfRange, fmt.Errorf("recv after %d: %w", cur, err)
		}
		*contacted = true
		switch {
		case rev <= cur:
			// Duplicate or stale progress: already applied.
			c.advance(cur, true)
		case isProgress:
			if c.cfg.OnProgress != nil {
				if err := c.cfg.OnProgress(ctx, rev); err != nil {
					return false, fmt.Errorf("store progress %d: %w", rev, err)
				}
			}
			cur = rev
			c.advance(cur, true)
			c.clearStuck(ctx) // nothing was waiting at cur+1
		default:
			if err := c.cfg.Apply(ctx, ev, rev); err != nil {
				if ctx.Err() == nil {
					c.setStuck(ctx, rev, err)
				}
				return false, fmt.Errorf("apply %d: %w", rev, err)
			}
			cur = rev
			c.advance(cur, true)
			c.clearStuck(ctx)
		}
	}
}

// advance records rev as applied; contact marks the feed healthy.
func (c *Consumer[E]) advance(rev int64, contact bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if contact {
		c.st.LastContact = time.Now()
		c.st.Connected = true
		c.st.BrokenSince = time.Time{}
	}
	if !c.known || rev != c.st.Revision {
		c.known = true
		c.st.Revision = rev
		close(c.changed)
		c.changed = make(chan struct{})
	}
}

// undeliverable reports a Recv error that retrying the same stream cannot fix: the
// event is larger than this client receives, or does not decode.
// A RESOURCE_EXHAUSTED with details is a server's limit (e.g. TOO_MANY_WATCHES), not
// the client's receive limit, whose error carries none.
func undeliverable(err error) bool {
	st := status.Convert(err)
	switch st.Code() {
	case codes.ResourceExhausted:
		return len(st.Details()) == 0
	case codes.Internal, codes.DataLoss:
		return true
	}
	return false
}

// setStuck records that the event at rev cannot be applied: loudly (an ERROR log
// line on the first failure, the condaccess_consumer_stuck metric, the health status).
func (c *Consumer[E]) setStuck(ctx context.Context, rev int64, cause error) {
	c.mu.Lock()
	first := !c.st.Stuck || c.st.StuckRevision != rev
	c.st.Stuck, c.st.StuckRevision, c.st.StuckCause = true, rev, cause.Error()
	if first {
		c.st.StuckSince = time.Now()
	}
	c.mu.Unlock()
	if first {
		c.log.ErrorContext(ctx, "consumer stuck: cannot apply event; retrying it, never skipping it", "revision", rev, "err", cause)
		if c.cfg.Health != nil && c.cfg.HealthName != "" {
			c.cfg.Health.SetServingStatus(c.cfg.HealthName, healthpb.HealthCheckResponse_NOT_SERVING)
		}
	}
}

func (c *Consumer[E]) clearStuck(ctx context.Context) {
	c.mu.Lock()
	was := c.st.Stuck
	rev := c.st.StuckRevision
	c.st.Stuck, c.st.StuckRevision, c.st.StuckCause, c.st.StuckSince = false, 0, "", time.Time{}
	c.mu.Unlock()
	if was {
		c.log.InfoContext(ctx, "consumer unstuck: applied the event it was stuck at", "revision", rev)
		if c.cfg.Health != nil && c.cfg.HealthName != "" {
			c.cfg.Health.SetServingStatus(c.cfg.HealthName, healthpb.HealthCheckResponse_SERVING)
		}
	}
}

func (c *Consumer[E]) setBroken() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.Connected = false
	if c.st.BrokenSince.IsZero() {
		c.st.BrokenSince = time.Now()
	}
}

// Status returns a snapshot.
func (c *Consumer[E]) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}

// Stale reports whether what was derived from the feed must be treated as
// stale at now: true when there has been no contact (event, progress or
// resync) for longer than bound — whether the stream failed or silently
// stalled — including before the first contact once bound has passed since
// Run started, and before Run. bound must exceed the upstream's progress interval.
func (c *Consumer[E]) Stale(bound time.Duration, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started.IsZero() {
		return true
	}
	last := c.st.LastContact
	if last.IsZero() || last.Before(c.started) {
		last = c.started
	}
	return now.Sub(last) > bound
}

// WaitRevision blocks until the consumer has applied (or resynced or
// progressed past) rev, or ctx ends.
func (c *Consumer[E]) WaitRevision(ctx context.Context, rev int64) error {
	for {
		c.mu.Lock()
		done := c.known && c.st.Revision >= rev
		ch := c.changed
		c.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}
