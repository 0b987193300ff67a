package eventlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/condaccess/condaccess/internal/pgdb"
)

// PGMigrations returns the PostgreSQL schema of a log (append to the service's
// migrations, as Migrations for SQLite). The state row's head is the revision
// counter: Append advances it with UPDATE ... RETURNING in the caller's transaction,
// which holds the row lock until that transaction ends, so revisions are assigned
// and become visible in order, without gaps (a sequence could commit out of order).
func PGMigrations(tableName string) []string {
	t := table(tableName)
	return []string{
		`CREATE TABLE ` + t + ` (
			revision BIGINT PRIMARY KEY,
			type TEXT NOT NULL,
			key TEXT NOT NULL,
			payload BYTEA NOT NULL,
			traceparent TEXT NOT NULL DEFAULT '',
			tracestate TEXT NOT NULL DEFAULT '',
			time_unix_nano BIGINT NOT NULL
		);
		CREATE TABLE ` + t + `_state (
			id INTEGER PRIMARY KEY CHECK (id = 1),
			head BIGINT NOT NULL,
			compacted_before BIGINT NOT NULL
		);
		INSERT INTO ` + t + `_state (id, head, compacted_before) VALUES (1, 0, 0);`,
	}
}

// PGOptions configures NewPG: Options, plus how watchers learn of new events.
type PGOptions struct {
	Options
	// PollInterval is how often the log reads the head revision when no
	// notification arrived (default 1s): the fallback that keeps watchers going on
	// an engine without LISTEN/NOTIFY or while the LISTEN connection is down.
	PollInterval time.Duration
	// NoNotify disables LISTEN/NOTIFY (watchers are woken by polling and by this
	// process's own commits only).
	NoNotify bool
}

// PGLog is the event log of a service on PostgreSQL. Every replica opens one on the
// same schema; each serves List and Watch from the table, so a watcher on any
// replica sees the events appended on all of them. Appends NOTIFY a channel after
// commit (a hint only); a background loop LISTENs and also polls the head every
// PollInterval, then wakes the watchers, which read the new events from the table.
// Watchers are never cut off as slow (they read at their own pace), so
// SlowWatcherError does not occur; compaction overtaking a watcher gives a
// *CompactedError as on SQLite.
type PGLog struct {
	db      *pgdb.DB
	opts    PGOptions
	t       string
	channel string
	log     *slog.Logger

	qAppend, qAppendNotify, qList, qState string

	rev       atomic.Int64 // highest committed revision seen
	compacted atomic.Int64

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when rev may have moved
	closed  bool
	gone    chan struct{} // closed by Close

	wg sync.WaitGroup
}

// pgNotifiedKey marks, in a transaction's locals, that the log's NOTIFY was queued.
type pgNotifiedKey struct{ l *PGLog }

// pgHeadKey holds, in a transaction's locals, the head revision the transaction
// has locked (by Next or Append).
type pgHeadKey struct{ l *PGLog }

// NewPG loads the head and compaction point and starts the background loop (LISTEN
// and polling; compaction when Retention > 0), stopped by Close.
func NewPG(ctx context.Context, db *pgdb.DB, opts PGOptions) (*PGLog, error) {
	opts.Table = table(opts.Table)
	if opts.ProgressInterval <= 0 {
		opts.ProgressInterval = time.Second
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
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	t := opts.Table
	l := &PGLog{
		db: db, opts: opts, t: t, log: opts.Logger,
		channel: db.Schema() + "_" + t,
		changed: make(chan struct{}),
		gone:    make(chan struct{}),
		qAppend: `WITH h AS (UPDATE ` + t + `_state SET head = head + 1 WHERE id = 1 RETURNING head)
			INSERT INTO ` + t + ` (revision, type, key, payload, traceparent, tracestate, time_unix_nano)
			SELECT head, $1, $2, $3, $4, $5, $6 FROM h RETURNING revision`,
		// The same, queuing the NOTIFY (sent at commit) in the same round trip.
		qAppendNotify: `WITH h AS (UPDATE ` + t + `_state SET head = head + 1 WHERE id = 1 RETURNING head),
			n AS (SELECT pg_notify($7, ''))
			INSERT INTO ` + t + ` (revision, type, key, payload, traceparent, tracestate, time_unix_nano)
			SELECT head, $1, $2, $3, $4, $5, $6 FROM h, n RETURNING revision`,
		qList: `SELECT revision, type, key, payload, traceparent, tracestate, time_unix_nano FROM ` + t +
			` WHERE revision > $1 ORDER BY revision LIMIT $2`,
		qState: `SELECT head, compacted_before FROM ` + t + `_state WHERE id = 1`,
	}
	if len(l.channel) > 63 {
		l.channel = l.channel[:63]
	}
	// LISTEN before reading the head, so that no commit after the read goes unnoticed.
	var conn *pgx.Conn
	if !opts.NoNotify {
		conn = l.listen(ctx)
	}
	if err := l.poll(ctx); err != nil {
		if conn != nil {
			conn.Close(context.Background())
		}
		return nil, fmt.Errorf("eventlog: load %s: %w", t, err)
	}
	l.wg.Add(1)
	go l.loop(conn)
	if opts.Retention > 0 && opts.CompactInterval > 0 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			compactEvery(l.gone, l.opts.CompactInterval, l.Compact, l.log, l.t)
		}()
	}
	return l, nil
}

// poll reads the committed head and compaction point and wakes watchers if the head moved.
func (l *PGLog) poll(ctx context.Context) error {
	var head, compacted int64
	if err := l.db.Read().QueryRowContext(ctx, l.qState).Scan(&head, &compacted); err != nil {
		return err
	}
	storeMax(&l.compacted, compacted)
	if storeMax(&l.rev, head) {
		l.wake()
	}
	return nil
}

// storeMax raises a to v; it reports whether a changed.
func storeMax(a *atomic.Int64, v int64) bool {
	for {
		cur := a.Load()
		if v <= cur {
			return false
		}
		if a.CompareAndSwap(cur, v) {
			return true
		}
	}
}

func (l *PGLog) wake() {
	l.mu.Lock()
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

func (l *PGLog) changedCh() chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

// loop LISTENs for the log's channel (unless NoNotify) and polls the head after
// every notification and every PollInterval without one.
// listen opens the LISTEN connection; nil (logged) when it fails.
func (l *PGLog) listen(ctx context.Context) *pgx.Conn {
	c, err := pgx.ConnectConfig(ctx, l.db.ConnConfig())
	if err == nil {
		if _, err = c.Exec(ctx, `LISTEN "`+l.channel+`"`); err != nil {
			c.Close(context.Background())
		}
	}
	if err != nil {
		if ctx.Err() == nil {
			l.log.Warn("eventlog: LISTEN failed, polling only until it works", "table", l.t, "err", err)
		}
		return nil
	}
	return c
}

func (l *PGLog) loop(first *pgx.Conn) {
	defer l.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-l.gone
		cancel()
	}()
	conn := first
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for ctx.Err() == nil {
		if conn == nil && !l.opts.NoNotify {
			if conn = l.listen(ctx); conn != nil {
				// Events committed while not listening.
				if err := l.poll(ctx); err != nil && ctx.Err() == nil {
					l.log.Warn("eventlog: reading the head failed", "table", l.t, "err", err)
				}
			}
		}
		wctx, wcancel := context.WithTimeout(ctx, l.opts.PollInterval)
		if conn != nil {
			_, err := conn.WaitForNotification(wctx)
			if err != nil && wctx.Err() == nil && ctx.Err() == nil {
				l.log.Warn("eventlog: LISTEN connection lost", "table", l.t, "err", err)
				conn.Close(context.Background())
				conn = nil
				// Wait out the interval before reconnecting.
				<-wctx.Done()
			}
		} else {
			<-wctx.Done()
		}
		wcancel()
		if ctx.Err() != nil {
			return
		}
		if err := l.poll(ctx); err != nil && ctx.Err() == nil {
			l.log.Warn("eventlog: reading the head failed", "table", l.t, "err", err)
		}
	}
}

// Close stops the background loops and ends every watcher with ErrClosed.
func (l *PGLog) Close() error {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.gone)
	}
	l.mu.Unlock()
	l.wg.Wait()
	return nil
}

// Append assigns the next revision in the caller's transaction: it advances the
// log's counter row (UPDATE ... RETURNING, holding its lock until the transaction
// ends) and inserts the event, so the revision is used exactly when the
// transaction commits and gap-free whatever the other replicas do.
func (l *PGLog) Append(tx *pgdb.Tx, e Event) (int64, error) {
	ctx := context.Background()
	if len(e.Payload) > l.opts.MaxPayloadBytes {
		return 0, fmt.Errorf("%w: %s %q is %d bytes, limit %d", ErrEventTooLarge, e.Type, e.Key, len(e.Payload), l.opts.MaxPayloadBytes)
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if e.Payload == nil {
		e.Payload = []byte{}
	}
	q, args := l.qAppend, []any{e.Type, e.Key, e.Payload, e.TraceParent, e.TraceState, e.Time.UnixNano()}
	notify := tx.Local(pgNotifiedKey{l}) == nil && !l.opts.NoNotify
	if notify {
		q, args = l.qAppendNotify, append(args, l.channel)
	}
	var rev int64
	if err := tx.QueryRowContext(ctx, q, args...).Scan(&rev); err != nil {
		return 0, fmt.Errorf("eventlog: append: %w", err)
	}
	if h, ok := tx.Local(pgHeadKey{l}).(int64); ok && rev != h+1 {
		// Cannot happen: the row is locked by this transaction since Next.
		return 0, fmt.Errorf("eventlog: append: revision %d after reserved head %d", rev, h)
	}
	tx.SetLocal(pgHeadKey{l}, rev)
	if notify {
		tx.SetLocal(pgNotifiedKey{l}, true)
	}
	tx.AfterCommit(func() {
		if storeMax(&l.rev, rev) {
			l.wake()
		}
	})
	return rev, nil
}

// Next returns the revision the next Append in tx will take. It locks the log's
// counter row for the rest of the transaction (as Append does), so no other
// transaction can take that revision meanwhile.
func (l *PGLog) Next(tx *pgdb.Tx) (int64, error) {
	if h, ok := tx.Local(pgHeadKey{l}).(int64); ok {
		return h + 1, nil
	}
	var h int64
	if err := tx.QueryRowContext(context.Background(), `SELECT head FROM `+l.t+`_state WHERE id = 1 FOR UPDATE`).Scan(&h); err != nil {
		return 0, fmt.Errorf("eventlog: next revision: %w", err)
	}
	tx.SetLocal(pgHeadKey{l}, h)
	return h + 1, nil
}

// Revision returns the highest committed revision this process has seen (its own
// commits at once, other replicas' within a notification or PollInterval).
func (l *PGLog) Revision() int64 { return l.rev.Load() }

// Head reads the committed head revision from the database (every replica's
// commits so far) and raises Revision to it.
func (l *PGLog) Head(ctx context.Context) (int64, error) {
	if err := l.poll(ctx); err != nil {
		return 0, fmt.Errorf("eventlog: head: %w", err)
	}
	return l.Revision(), nil
}

// CompactedBefore returns the compaction point this process has seen.
func (l *PGLog) CompactedBefore() int64 { return l.compacted.Load() }

// Compact deletes all but the newest Retention events (no-op when Retention is 0).
// Replicas may all run it: the state row's lock makes one run at a time.
func (l *PGLog) Compact(ctx context.Context) error {
	if l.opts.Retention <= 0 {
		return nil
	}
	return l.db.Write(ctx, func(tx *pgdb.Tx) error {
		var head, cur int64
		if err := tx.QueryRowContext(ctx, l.qState+` FOR UPDATE`).Scan(&head, &cur); err != nil {
			return err
		}
		target := head - l.opts.Retention
		if target <= cur {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+l.t+` WHERE revision <= $1`, target); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE `+l.t+`_state SET compacted_before = $1 WHERE id = 1`, target); err != nil {
			return err
		}
		tx.AfterCommit(func() { storeMax(&l.compacted, target) })
		return nil
	})
}

func (l *PGLog) compactedErr(ctx context.Context, start int64) error {
	_ = l.poll(ctx)
	return &CompactedError{Start: start, CompactedBefore: l.CompactedBefore(), Current: l.Revision()}
}

// List returns up to limit events with Revision > after, in order. It returns a
// *CompactedError if after is older than the retained history.
func (l *PGLog) List(ctx context.Context, after int64, limit int) ([]Event, error) {
	if after < l.CompactedBefore() {
		return nil, l.compactedErr(ctx, after)
	}
	return l.list(ctx, after, limit)
}

// list reads the events after after; a first event that is not after+1, or none
// while the history starts later, means compaction has passed after.
func (l *PGLog) list(ctx context.Context, after int64, limit int) ([]Event, error) {
	if limit <= 0 {
		limit = l.opts.ReplayPage
	}
	rows, err := l.db.Read().QueryContext(ctx, l.qList, after, limit)
	if err != nil {
		return nil, fmt.Errorf("eventlog: list: %w", err)
	}
	evs, err := scanEvents(rows)
	if err != nil {
		return nil, err
	}
	if len(evs) > 0 && evs[0].Revision == after+1 {
		return evs, nil
	}
	var head, compacted int64
	if err := l.db.Read().QueryRowContext(ctx, l.qState).Scan(&head, &compacted); err != nil {
		return nil, fmt.Errorf("eventlog: list: %w", err)
	}
	storeMax(&l.compacted, compacted)
	if after < compacted {
		return nil, &CompactedError{Start: after, CompactedBefore: compacted, Current: max(head, l.Revision())}
	}
	if len(evs) > 0 {
		return nil, fmt.Errorf("eventlog: internal error: revision %d follows %d", evs[0].Revision, after)
	}
	return nil, nil
}

// Watch delivers every event with Revision > start, in order, without gap or
// duplicate, reading them from the table: it drains what is stored, calls
// onProgress(rev) once caught up and then whenever idle for ProgressInterval, and
// waits to be woken (own commit, NOTIFY or poll). It returns a *CompactedError if
// start is (or compaction makes it) older than the retained history, ctx.Err(),
// ErrClosed when the log is closed, or the first error of onEvent / onProgress.
func (l *PGLog) Watch(ctx context.Context, start int64, onEvent func(Event) error, onProgress func(rev int64) error) error {
	if start < 0 {
		start = 0
	}
	if start < l.CompactedBefore() {
		return l.compactedErr(ctx, start)
	}
	cursor := start
	var idle *time.Timer // started once caught up the first time
	defer func() {
		if idle != nil {
			idle.Stop()
		}
	}()
	for {
		changed := l.changedCh() // before reading, so no wake-up is missed
		delivered := false
		// Once caught up, read only when the head known to this process has moved
		// past the cursor (it is raised before every wake-up).
		for idle == nil || l.Revision() > cursor {
			evs, err := l.list(ctx, cursor, l.opts.ReplayPage)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				var ce *CompactedError
				if errors.As(err, &ce) {
					ce.Start = start
				}
				return err
			}
			for _, e := range evs {
				if err := onEvent(e); err != nil {
					return err
				}
				cursor = e.Revision
				delivered = true
			}
			if len(evs) < l.opts.ReplayPage {
				break
			}
		}
		switch {
		case idle == nil:
			if onProgress != nil {
				if err := onProgress(cursor); err != nil {
					return err
				}
			}
			idle = time.NewTimer(l.opts.ProgressInterval)
		case delivered:
			idle.Reset(l.opts.ProgressInterval)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-l.gone:
			return ErrClosed
		case <-changed:
		case <-idle.C:
			if onProgress != nil {
				if err := onProgress(cursor); err != nil {
					return err
				}
			}
			idle.Reset(l.opts.ProgressInterval)
		}
	}
}
