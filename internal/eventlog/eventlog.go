// Package eventlog is a service's ordered, gap-free event log, appended in the caller's sqlitedb transaction and replayed then tailed by watchers.
//
// Additions beyond the agreed API: Options.CompactInterval, Log.Close, ErrClosed,
// CompactedError and SlowWatcherError (both match their sentinel with errors.Is).
package eventlog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/condaccess/condaccess/internal/sqlitedb"
)

// ErrCompacted: the start revision is older than the retained history.
var ErrCompacted = errors.New("eventlog: revision compacted")

// ErrSlowWatcher: the watcher fell behind its live buffer and was cut off.
var ErrSlowWatcher = errors.New("eventlog: watcher too slow")

// ErrClosed: the log was closed.
var ErrClosed = errors.New("eventlog: log closed")

// ErrEventTooLarge: the event's payload is over Options.MaxPayloadBytes, so some
// reader could not receive it; the change it records must not be committed.
var ErrEventTooLarge = errors.New("eventlog: event larger than its readers accept")

// DefaultMaxPayloadBytes is the default cap on one event's payload: half the 64 MiB
// a condaccess client receives, leaving room for the envelope (revision, time, trace
// context) a watch response adds.
const DefaultMaxPayloadBytes = 32 << 20

// CompactedError is returned (wrapped in nothing) for ErrCompacted.
type CompactedError struct {
	Start           int64 // the requested start revision
	CompactedBefore int64 // list and watch from a revision >= this
	Current         int64
}

func (e *CompactedError) Error() string {
	return fmt.Sprintf("eventlog: start revision %d is compacted (history starts after %d, current %d)", e.Start, e.CompactedBefore, e.Current)
}

// Is makes errors.Is(err, ErrCompacted) true.
func (e *CompactedError) Is(target error) bool { return target == ErrCompacted }

// SlowWatcherError is returned for ErrSlowWatcher.
type SlowWatcherError struct {
	LastRevision int64 // the last revision delivered to onEvent (or the start revision)
}

func (e *SlowWatcherError) Error() string {
	return fmt.Sprintf("eventlog: watcher too slow, cut off after revision %d", e.LastRevision)
}

// Is makes errors.Is(err, ErrSlowWatcher) true.
func (e *SlowWatcherError) Is(target error) bool { return target == ErrSlowWatcher }

// Event is one entry of the log.
type Event struct {
	Revision                int64 // service-wide, strictly increasing, no gaps, from 1
	Type                    string
	Key                     string
	Payload                 []byte
	TraceParent, TraceState string
	Time                    time.Time // set to now by Append when zero
}

// Options configures New.
type Options struct {
	Table            string        // default "events"
	Retention        int64         // keep at least this many newest events (0 = keep all)
	CompactInterval  time.Duration // background compaction period when Retention > 0 (default 1m; <0 disables)
	ProgressInterval time.Duration // idle progress interval for watchers (default 1s)
	SubscriberBuffer int           // per-watcher live buffer (default 1024)
	ReplayPage       int           // rows per replay query (default 512)
	// MaxPayloadBytes caps one event's payload (default DefaultMaxPayloadBytes);
	// Append refuses a larger one with ErrEventTooLarge, a writer-side backstop for
	// the limit chain (no event is written that a reader could not receive).
	MaxPayloadBytes int
	Logger          *slog.Logger
}

var identRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func table(name string) string {
	if name == "" {
		return "events"
	}
	if !identRe.MatchString(name) {
		panic(fmt.Sprintf("eventlog: invalid table name %q", name))
	}
	return name
}

// Migrations returns the schema the service appends to its own migrations
// (the log lives in the service's database so state and event commit together).
func Migrations(tableName string) []string {
	t := table(tableName)
	return []string{
		`CREATE TABLE ` + t + ` (
			revision INTEGER PRIMARY KEY,
			type TEXT NOT NULL,
			key TEXT NOT NULL,
			payload BLOB NOT NULL,
			traceparent TEXT NOT NULL DEFAULT '',
			tracestate TEXT NOT NULL DEFAULT '',
			time_unix_nano INTEGER NOT NULL
		);
		CREATE TABLE ` + t + `_state (
			id INTEGER PRIMARY KEY CHECK (id = 1),
			compacted_before INTEGER NOT NULL
		);
		INSERT INTO ` + t + `_state (id, compacted_before) VALUES (1, 0);`,
	}
}

// Log is one event log. Safe for concurrent use.
type Log struct {
	db   *sqlitedb.DB
	opts Options
	t    string
	log  *slog.Logger

	qNext, qInsert, qList string

	compacted atomic.Int64

	// next is the revision the next Append takes, 0 when unknown (then read from the
	// table). Only Write fns touch it, and they run one at a time on the database's
	// writer goroutine; OnRollback gives back the revisions of an fn or group that
	// does not commit.
	next int64

	mu     sync.Mutex
	rev    int64 // last published (committed) revision
	subs   map[*sub]struct{}
	closed bool

	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

type sub struct {
	ch   chan Event
	gone chan struct{} // closed when cut off (slow) or log closed
	err  error         // set before gone is closed
}

// New loads the current revision and compaction point and, when Retention > 0,
// starts background compaction (stopped by Close).
func New(ctx context.Context, db *sqlitedb.DB, opts Options) (*Log, error) {
	opts.Table = table(opts.Table)
	if opts.ProgressInterval <= 0 {
		opts.ProgressInterval = time.Second
	}
	if opts.SubscriberBuffer <= 0 {
		opts.SubscriberBuffer = 1024
	}
	if opts.ReplayPage <= 0 {
		opts.ReplayPage = 512
	}
	if opts.MaxPayloadBytes <= 0 {
		opts.MaxPayloadBytes = DefaultMaxPayloadBytes
	}
	if opts.CompactInterval == 0 {
		opts.CompactInterval = time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	t := opts.Table
	l := &Log{
		db: db, opts: opts, t: t, log: opts.Logger,
		subs:    map[*sub]struct{}{},
		stop:    make(chan struct{}),
		qNext:   `SELECT COALESCE((SELECT MAX(revision) FROM ` + t + `), (SELECT compacted_before FROM ` + t + `_state WHERE id = 1), 0) + 1`,
		qInsert: `INSERT INTO ` + t + ` (revision, type, key, payload, traceparent, tracestate, time_unix_nano) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		qList: `SELECT revision, type, key, payload, traceparent, tracestate, time_unix_nano FROM ` + t +
			` WHERE revision > ? ORDER BY revision LIMIT ?`,
	}
	var rev, compacted int64
	err := db.Read().QueryRowContext(ctx, `SELECT COALESCE((SELECT MAX(revision) FROM `+t+`), 0), compacted_before FROM `+t+`_state WHERE id = 1`).Scan(&rev, &compacted)
	if err != nil {
		return nil, fmt.Errorf("eventlog: load %s: %w", t, err)
	}
	l.rev = max(rev, compacted)
	l.compacted.Store(compacted)
	if opts.Retention > 0 && opts.CompactInterval > 0 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			compactEvery(l.stop, l.opts.CompactInterval, l.Compact, l.log, l.t)
		}()
	}
	return l, nil
}

// Close stops background compaction and ends every watcher with ErrClosed.
func (l *Log) Close() error {
	l.once.Do(func() {
		close(l.stop)
		l.mu.Lock()
		l.closed = true
		for s := range l.subs {
			s.err = ErrClosed
			close(s.gone)
			delete(l.subs, s)
		}
		l.mu.Unlock()
	})
	l.wg.Wait()
	return nil
}

// Append assigns the next revision inside the caller's transaction and
// publishes the event to live watchers after the commit, in revision order.
// The revision comes from a counter kept on the one writer (read from the table
// inside the transaction the first time); an fn that fails, or a group that does
// not commit, gives its revisions back, so revisions stay gap-free.
func (l *Log) Append(tx *sqlitedb.Tx, e Event) (int64, error) {
	ctx := context.Background()
	if len(e.Payload) > l.opts.MaxPayloadBytes {
		return 0, fmt.Errorf("%w: %s %q is %d bytes, limit %d", ErrEventTooLarge, e.Type, e.Key, len(e.Payload), l.opts.MaxPayloadBytes)
	}
	rev, err := l.Next(tx)
	if err != nil {
		return 0, err
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if e.Payload == nil {
		e.Payload = []byte{}
	}
	e.Revision = rev
	if _, err := tx.ExecContext(ctx, l.qInsert, rev, e.Type, e.Key, e.Payload, e.TraceParent, e.TraceState, e.Time.UnixNano()); err != nil {
		// Unknown again: the statement may have failed after changing the table.
		l.next = 0
		return 0, fmt.Errorf("eventlog: append: %w", err)
	}
	l.next = rev + 1
	tx.OnRollback(func() { l.next = rev })
	tx.AfterCommit(func() { l.publish(e) })
	return rev, nil
}

// Next returns the revision the next Append in tx will take (so that rows written
// before the event can refer to it). It must be called, like Append, inside a Write fn.
func (l *Log) Next(tx *sqlitedb.Tx) (int64, error) {
	if l.next == 0 {
		var rev int64
		if err := tx.QueryRowContext(context.Background(), l.qNext).Scan(&rev); err != nil {
			return 0, fmt.Errorf("eventlog: next revision: %w", err)
		}
		// Right for this transaction whatever happens to the fn: the rollback
		// functions of earlier Appends in the group restore smaller values.
		l.next = rev
	}
	return l.next, nil
}

func (l *Log) publish(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.Revision != l.rev+1 {
		// Cannot happen with one writer; a gap here would be a bug worth shouting about.
		l.log.Error("eventlog: published revision out of order", "table", l.t, "revision", e.Revision, "last", l.rev)
	}
	l.rev = e.Revision
	for s := range l.subs {
		select {
		case s.ch <- e:
		default:
			s.err = ErrSlowWatcher
			close(s.gone)
			delete(l.subs, s)
		}
	}
}

// Revision returns the last committed revision.
func (l *Log) Revision() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rev
}

// CompactedBefore returns the oldest revision still replayable minus one:
// Watch and List accept start revisions >= CompactedBefore().
func (l *Log) CompactedBefore() int64 { return l.compacted.Load() }

func (l *Log) compactedErr(start int64) error {
	return &CompactedError{Start: start, CompactedBefore: l.CompactedBefore(), Current: l.Revision()}
}

// Compact deletes all but the newest Retention events (no-op when Retention is 0).
func (l *Log) Compact(ctx context.Context) error {
	if l.opts.Retention <= 0 {
		return nil
	}
	return l.db.Write(ctx, func(tx *sqlitedb.Tx) error {
		var maxRev, cur int64
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE((SELECT MAX(revision) FROM `+l.t+`), 0), compacted_before FROM `+l.t+`_state WHERE id = 1`).Scan(&maxRev, &cur); err != nil {
			return err
		}
		target := maxRev - l.opts.Retention
		if target <= cur {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+l.t+` WHERE revision <= ?`, target); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE `+l.t+`_state SET compacted_before = ? WHERE id = 1`, target); err != nil {
			return err
		}
		tx.AfterCommit(func() { l.compacted.Store(target) })
		return nil
	})
}

// compactEvery runs compact every interval until stop is closed; both logs use it.
func compactEvery(stop <-chan struct{}, interval time.Duration, compact func(context.Context) error, log *slog.Logger, table string) {
	tk := time.NewTicker(interval)
	defer tk.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for {
		select {
		case <-stop:
			return
		case <-tk.C:
			if err := compact(ctx); err != nil {
				log.Warn("eventlog: compaction failed", "table", table, "err", err)
			}
		}
	}
}

// List returns up to limit events with Revision > after, in order. It returns
// a *CompactedError if after < CompactedBefore().
func (l *Log) List(ctx context.Context, after int64, limit int) ([]Event, error) {
	if after < l.CompactedBefore() {
		return nil, l.compactedErr(after)
	}
	evs, err := l.list(ctx, after, limit)
	if err != nil {
		return nil, err
	}
	// Compaction may have run between the check and the query.
	if len(evs) > 0 && evs[0].Revision != after+1 {
		return nil, l.compactedErr(after)
	}
	return evs, nil
}

func (l *Log) list(ctx context.Context, after int64, limit int) ([]Event, error) {
	if limit <= 0 {
		limit = l.opts.ReplayPage
	}
	rows, err := l.db.Read().QueryContext(ctx, l.qList, after, limit)
	if err != nil {
		return nil, fmt.Errorf("eventlog: list: %w", err)
	}
	return scanEvents(rows)
}

// scanEvents reads the rows of a list query (revision, type, key, payload,
// traceparent, tracestate, time_ns): the one reader of both the SQLite and the
// PostgreSQL log.
func scanEvents(rows *sql.Rows) ([]Event, error) {
	defer rows.Close()
	var evs []Event
	for rows.Next() {
		var e Event
		var ns int64
		if err := rows.Scan(&e.Revision, &e.Type, &e.Key, &e.Payload, &e.TraceParent, &e.TraceState, &ns); err != nil {
			return nil, fmt.Errorf("eventlog: list: %w", err)
		}
		e.Time = time.Unix(0, ns)
		evs = append(evs, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("eventlog: list: %w", err)
	}
	return evs, nil
}

// replay delivers stored events after *cursor up to and including to.
func (l *Log) replay(ctx context.Context, start int64, cursor *int64, to int64, onEvent func(Event) error) error {
	for *cursor < to {
		evs, err := l.list(ctx, *cursor, l.opts.ReplayPage)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if len(evs) == 0 || evs[0].Revision != *cursor+1 {
			return l.compactedErr(start)
		}
		for _, e := range evs {
			if e.Revision > to {
				return nil
			}
			if err := onEvent(e); err != nil {
				return err
			}
			*cursor = e.Revision
		}
	}
	return nil
}

// Watch delivers every event with Revision > start, in order, without gap or
// duplicate: it replays stored events in pages, then switches to the live
// tail. It calls onProgress(rev) when the watcher is caught up (once right
// after the switch to live, then whenever idle for ProgressInterval); rev is
// the revision through which everything has been delivered. It returns a
// *CompactedError if start < CompactedBefore() (also if compaction overtakes
// the replay), ctx.Err() when ctx ends, a *SlowWatcherError if it falls
// behind the live buffer (writers are never slowed), ErrClosed when the log
// is closed, or the first error of onEvent / onProgress. A start greater than
// the current revision is allowed: the watcher waits.
func (l *Log) Watch(ctx context.Context, start int64, onEvent func(Event) error, onProgress func(rev int64) error) error {
	if start < 0 {
		start = 0
	}
	if start < l.CompactedBefore() {
		return l.compactedErr(start)
	}
	cursor := start
	// Replay until close enough to the head that the live buffer can absorb the rest.
	var s *sub
	for s == nil {
		if err := l.replay(ctx, start, &cursor, l.Revision(), onEvent); err != nil {
			return err
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return ErrClosed
		}
		if l.rev-cursor <= int64(l.opts.SubscriberBuffer)/2 {
			s = &sub{ch: make(chan Event, l.opts.SubscriberBuffer), gone: make(chan struct{})}
			l.subs[s] = struct{}{}
			head := l.rev
			l.mu.Unlock()
			defer l.unsubscribe(s)
			// Events up to head are committed (in the table); later ones arrive on s.ch.
			if err := l.replay(ctx, start, &cursor, head, onEvent); err != nil {
				return err
			}
			break
		}
		l.mu.Unlock()
	}

	idle := time.NewTimer(0) // first progress as soon as caught up
	defer idle.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-s.ch:
			if e.Revision <= cursor {
				continue // already replayed, or before a future start
			}
			if e.Revision != cursor+1 {
				return fmt.Errorf("eventlog: internal error: live revision %d after %d", e.Revision, cursor)
			}
			if err := onEvent(e); err != nil {
				return err
			}
			cursor = e.Revision
			idle.Reset(l.opts.ProgressInterval)
		case <-s.gone:
			if s.err == ErrSlowWatcher {
				return &SlowWatcherError{LastRevision: cursor}
			}
			return s.err
		case <-idle.C:
			if len(s.ch) > 0 {
				idle.Reset(0)
				continue
			}
			if onProgress != nil {
				if err := onProgress(cursor); err != nil {
					return err
				}
			}
			idle.Reset(l.opts.ProgressInterval)
		}
	}
}

func (l *Log) unsubscribe(s *sub) {
	l.mu.Lock()
	delete(l.subs, s)
	l.mu.Unlock()
}
