package access

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// RecorderConfig configures NewRecorder.
type RecorderConfig struct {
	Store Store
	// Buffer is the channel capacity (default 65536). When it is full a sign-in
	// is dropped and counted, never waited for: the decision path does not block.
	Buffer int
	// MaxBatch is the most records per store write (default 4096).
	MaxBatch int
	// Linger is how long the writer gathers records before a write (default
	// 20ms); a Flush writes at once.
	Linger time.Duration
	// Encode appends the detail of a sign-in, made from its source (the wire
	// response), to dst and returns it; it runs on the recorder goroutine. The
	// details of a batch share one buffer, reused after the batch is written.
	Encode func(dst []byte, si *SignIn, src any) []byte
	// OnDrop is called for each dropped record (metrics).
	OnDrop func()
	Logger *slog.Logger
}

type record struct {
	signIn  SignIn
	src     any
	session *Session
	flush   chan struct{}
}

// Recorder writes sign-ins and sessions off the decision path: a bounded
// channel drained by one goroutine that writes batches with one store write.
//
// The writer does not receive while it lingers: it sleeps, then drains what
// arrived. A decision's send then only copies into the buffer; were the writer
// parked on the channel, every send would hand the record over and wake it (a
// goroutine switch per decision).
type Recorder struct {
	cfg     RecorderConfig
	ch      chan record
	kick    chan struct{} // Flush wakes a lingering writer
	dropped atomic.Int64
	written atomic.Int64

	// mu orders key assignment and enqueueing: keys reach the writer in
	// increasing order, so the store keeps the key (and the ID) it was given.
	mu   sync.Mutex
	last int64

	// wmu guards wrote, closed (and replaced) after each batch of sign-ins is written.
	wmu   sync.Mutex
	wrote chan struct{}
}

// Wrote returns a channel closed once the next batch of sign-ins is written
// (WatchSignIns waits on it).
func (r *Recorder) Wrote() <-chan struct{} {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if r.wrote == nil {
		r.wrote = make(chan struct{})
	}
	return r.wrote
}

func (r *Recorder) notifyWrote() {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if r.wrote != nil {
		close(r.wrote)
		r.wrote = nil
	}
}

// NewRecorder returns a recorder; call Run.
func NewRecorder(cfg RecorderConfig) *Recorder {
	if cfg.Buffer <= 0 {
		cfg.Buffer = 65536
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 4096
	}
	if cfg.Linger <= 0 {
		cfg.Linger = 20 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Recorder{cfg: cfg, ch: make(chan record, cfg.Buffer), kick: make(chan struct{}, 1)}
}

// SignIn assigns the sign-in its key and ID (unique, increasing, from its
// time), calls setID (when not nil) with the ID before the record can reach the
// writer, and enqueues it; src is passed to Encode. It reports false when the
// record was dropped (the ID is then never stored).
func (r *Recorder) SignIn(si SignIn, src any, setID func(string)) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	si.Key = max(r.last+1, si.Time.UnixNano())
	r.last = si.Key
	si.Time = time.Unix(0, si.Key).UTC()
	si.ID = SignInID(si.Key)
	if setID != nil {
		setID(si.ID)
	}
	select {
	case r.ch <- record{signIn: si, src: src}:
		return si.ID, true
	default:
		r.drop()
		return si.ID, false
	}
}

// Session enqueues a session to upsert; false when dropped (a dropped session
// is still written by its next refresh or by its revocation).
func (r *Recorder) Session(s *Session) bool {
	select {
	case r.ch <- record{session: s}:
		return true
	default:
		r.drop()
		return false
	}
}

func (r *Recorder) drop() {
	r.dropped.Add(1)
	if r.cfg.OnDrop != nil {
		r.cfg.OnDrop()
	}
}

// Dropped returns how many records were dropped.
func (r *Recorder) Dropped() int64 { return r.dropped.Load() }

// Written returns how many sign-ins were written.
func (r *Recorder) Written() int64 { return r.written.Load() }

// Flush waits until every record enqueued before it has been written (tests, shutdown).
func (r *Recorder) Flush(ctx context.Context) error {
	done := make(chan struct{})
	select {
	case r.ch <- record{flush: done}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case r.kick <- struct{}{}:
	default:
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run drains the channel until ctx ends, then writes what is left and returns nil.
func (r *Recorder) Run(ctx context.Context) error {
	// A batch's sign-ins and their details live in a slab and an arena reused
	// from batch to batch (the store does not keep them after the write).
	var slab []SignIn
	var arena []byte
	var signIns []*SignIn
	var sessions []*Session
	var flushes []chan struct{}
	write := func() {
		if len(slab)+len(sessions) > 0 {
			signIns = signIns[:0]
			for i := range slab {
				signIns = append(signIns, &slab[i])
			}
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			if err := r.cfg.Store.WriteBatch(wctx, signIns, sessions); err != nil {
				r.cfg.Logger.Error("writing sign-ins and sessions failed; batch lost", "sign_ins", len(signIns), "sessions", len(sessions), "err", err)
				r.dropped.Add(int64(len(signIns) + len(sessions)))
			} else {
				r.written.Add(int64(len(signIns)))
				if len(signIns) > 0 {
					r.notifyWrote()
				}
			}
			cancel()
		}
		for _, f := range flushes {
			close(f)
		}
		clear(signIns)
		signIns, slab, arena, sessions, flushes = signIns[:0], slab[:0], arena[:0], sessions[:0], flushes[:0]
	}
	add := func(rec record) {
		switch {
		case rec.flush != nil:
			flushes = append(flushes, rec.flush)
		case rec.session != nil:
			sessions = append(sessions, rec.session)
		default:
			slab = append(slab, rec.signIn)
			if r.cfg.Encode != nil {
				si, start := &slab[len(slab)-1], len(arena)
				arena = r.cfg.Encode(arena, si, rec.src)
				si.Detail = arena[start:len(arena):len(arena)]
			}
		}
	}
	drain := func() {
		for {
			select {
			case rec := <-r.ch:
				add(rec)
			default:
				return
			}
		}
	}
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	full := false // the last batch stopped at MaxBatch: more is waiting
	for {
		select {
		case rec := <-r.ch:
			add(rec)
		case <-ctx.Done():
			drain()
			write()
			return nil
		}
		// Linger to gather a larger batch: the cost of a write is mostly per
		// commit and per page touched, so bigger batches cost less per sign-in.
		// Sleep rather than receive (see Recorder); a Flush wakes it.
		if !full && len(flushes) == 0 {
			linger.Reset(r.cfg.Linger)
			select {
			case <-linger.C:
			case <-r.kick:
			case <-ctx.Done():
			}
			linger.Stop()
		}
		full = false
	gather:
		for len(flushes) == 0 {
			if len(slab)+len(sessions) >= r.cfg.MaxBatch {
				full = true
				break
			}
			select {
			case rec := <-r.ch:
				add(rec)
			default:
				break gather
			}
		}
		write()
	}
}
