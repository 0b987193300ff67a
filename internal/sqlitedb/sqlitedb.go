// Package sqlitedb is an embedded SQLite database (WAL, one writer connection) whose concurrent writes are grouped into one durable commit.
//
// Every Write runs its fn inside its own SAVEPOINT of a shared transaction that one
// writer goroutine commits for the whole group; an fn that fails is rolled back alone.
// Reads go through a separate read-only pool (Read). A Write must not call Write
// (it would deadlock: the writer goroutine is running the outer fn).
package sqlitedb

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("sqlitedb: database closed")

// Options configures Open.
type Options struct {
	// Path is the database file path.
	Path string
	// Migrations are applied in order, once each, tracked by index (1-based) and
	// the checksum of their text in the schema_migrations table. Append new
	// migrations; never edit or reorder applied ones (Open fails with
	// ErrMigrationMismatch if one was).
	Migrations []string
	// Synchronous is "FULL" (default: acknowledged writes survive power loss) or "NORMAL".
	Synchronous string
	// MaxBatch is the maximum number of write functions per group commit (default 256).
	MaxBatch int
	// ReadConns is the size of the read-only pool (default max(4, GOMAXPROCS)).
	ReadConns int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// DB is an SQLite database with one group-committing writer and a read-only pool.
type DB struct {
	w, r     *sql.DB
	log      *slog.Logger
	maxBatch int

	reqs    chan *writeReq
	closing chan struct{}
	done    chan struct{}
	once    sync.Once
}

type writeReq struct {
	ctx  context.Context
	fn   func(tx *Tx) error
	done chan error
}

// Tx is the transaction a Write fn runs in. Statement contexts keep their
// values (trace context) but not their cancellation: interrupting one statement
// would roll back the whole group.
type Tx struct {
	tx       *sql.Tx
	stmts    *stmtCache
	after    []func()
	rollback []func()
}

// stmtCache holds the statements prepared in one group transaction, by query text:
// the writes of a group mostly run the same few statements, and parsing each again
// was a large share of the write path's CPU. The statements close with the
// transaction.
type stmtCache struct {
	tx *sql.Tx
	m  map[string]*sql.Stmt
}

// maxCachedStmts bounds a group's cache (queries built with a varying number of
// placeholders would otherwise grow it).
const maxCachedStmts = 256

// get returns the prepared statement for query, or nil when it is not cacheable
// (several statements, a full cache, or a prepare error, which the uncached path
// then reports).
func (c *stmtCache) get(ctx context.Context, query string) *sql.Stmt {
	if c == nil {
		return nil
	}
	if st, ok := c.m[query]; ok {
		return st
	}
	if len(c.m) >= maxCachedStmts || strings.Contains(strings.TrimRight(strings.TrimSpace(query), ";"), ";") {
		return nil
	}
	st, err := c.tx.PrepareContext(ctx, query)
	if err != nil {
		return nil
	}
	c.m[query] = st
	return st
}

// ExecContext executes a statement in the transaction.
func (tx *Tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	ctx = context.WithoutCancel(ctx)
	if st := tx.stmts.get(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return tx.tx.ExecContext(ctx, query, args...)
}

// QueryContext runs a query in the transaction.
func (tx *Tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	ctx = context.WithoutCancel(ctx)
	if st := tx.stmts.get(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return tx.tx.QueryContext(ctx, query, args...)
}

// QueryRowContext runs a query returning at most one row in the transaction.
func (tx *Tx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	ctx = context.WithoutCancel(ctx)
	if st := tx.stmts.get(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return tx.tx.QueryRowContext(ctx, query, args...)
}

// AfterCommit registers f to run once the group's COMMIT has succeeded, before
// Write returns. Functions run on the writer goroutine, in registration order
// across the whole group (so in commit order); they must be fast and must not
// call Write. They are discarded if this fn fails or the commit fails.
func (tx *Tx) AfterCommit(f func()) { tx.after = append(tx.after, f) }

// OnRollback registers f to run, on the writer goroutine, if this fn's changes are
// discarded: the fn fails (its savepoint is rolled back) or the group does not
// commit. Functions of one fn run in reverse registration order, and fns in reverse
// order across the group, so state kept beside the database (for example a counter
// owned by the writer) can be restored to its value before the fn. They must be fast
// and must not call Write.
func (tx *Tx) OnRollback(f func()) { tx.rollback = append(tx.rollback, f) }

func undo(fs []func()) {
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

func dsn(path string, q url.Values) string {
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

// Open opens (creating if needed) the database at opts.Path, applies pending
// migrations and starts the writer goroutine.
func Open(ctx context.Context, opts Options) (*DB, error) {
	if opts.Path == "" {
		return nil, errors.New("sqlitedb: empty Path")
	}
	sync := strings.ToUpper(opts.Synchronous)
	switch sync {
	case "":
		sync = "FULL"
	case "FULL", "NORMAL":
	default:
		return nil, fmt.Errorf("sqlitedb: Synchronous %q: want FULL or NORMAL", opts.Synchronous)
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 256
	}
	if opts.ReadConns <= 0 {
		opts.ReadConns = max(4, runtime.GOMAXPROCS(0))
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous("+sync+")")
	q.Set("_txlock", "immediate")
	w, err := sql.Open("sqlite", dsn(opts.Path, q))
	if err != nil {
		return nil, fmt.Errorf("sqlitedb: open %s: %w", opts.Path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlitedb: open %s: %w", opts.Path, err)
	}
	if err := migrate(ctx, w, opts.Migrations); err != nil {
		w.Close()
		return nil, err
	}
	rq := url.Values{}
	rq.Add("_pragma", "busy_timeout(10000)")
	rq.Add("_pragma", "foreign_keys(1)")
	rq.Set("_query_only", "1")
	r, err := sql.Open("sqlite", dsn(opts.Path, rq))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlitedb: open read pool %s: %w", opts.Path, err)
	}
	r.SetMaxOpenConns(opts.ReadConns)
	r.SetMaxIdleConns(opts.ReadConns)
	if err := r.PingContext(ctx); err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("sqlitedb: open read pool %s: %w", opts.Path, err)
	}
	db := &DB{
		w: w, r: r, log: opts.Logger, maxBatch: opts.MaxBatch,
		reqs:    make(chan *writeReq),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	go db.writer()
	return db, nil
}

// ErrMigrationMismatch is returned by Open when the database's applied migrations do
// not match the ones given: an applied migration was edited, one was inserted before or
// reordered among applied ones, or the database was migrated by a newer binary.
var ErrMigrationMismatch = errors.New("sqlitedb: schema migrations do not match the database")

// checksum identifies a migration's text in schema_migrations.
func checksum(m string) string {
	sum := sha256.Sum256([]byte(m))
	return hex.EncodeToString(sum[:])
}

// migrate applies the pending migrations, each in its own transaction, recording its
// version (1-based index) and the checksum of its text. Versions are positions, so an
// applied migration must never change or move: a recorded checksum that differs from
// the migration now at that position (an edit, or a migration inserted before it)
// stops Open with ErrMigrationMismatch rather than skipping or re-running the wrong
// SQL. Rows written before checksums were recorded take the current text's checksum.
func migrate(ctx context.Context, w *sql.DB, migrations []string) error {
	if _, err := w.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY,
		applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
		checksum TEXT
	)`); err != nil {
		return fmt.Errorf("sqlitedb: create schema_migrations: %w", err)
	}
	var hasChecksum int
	if err := w.QueryRowContext(ctx, `SELECT count(*) FROM pragma_table_info('schema_migrations') WHERE name = 'checksum'`).Scan(&hasChecksum); err != nil {
		return fmt.Errorf("sqlitedb: read schema_migrations: %w", err)
	}
	if hasChecksum == 0 {
		// A database migrated before checksums were recorded.
		if _, err := w.ExecContext(ctx, `ALTER TABLE schema_migrations ADD COLUMN checksum TEXT`); err != nil {
			return fmt.Errorf("sqlitedb: add schema_migrations.checksum: %w", err)
		}
	}
	var newest int
	if err := w.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&newest); err != nil {
		return fmt.Errorf("sqlitedb: read schema_migrations: %w", err)
	}
	if newest > len(migrations) {
		return fmt.Errorf("%w: the database has %d migrations applied, this binary knows %d (it was migrated by a newer version; run that version, or restore a backup)",
			ErrMigrationMismatch, newest, len(migrations))
	}
	for i, m := range migrations {
		v, sum := i+1, checksum(m)
		if err := func() error {
			tx, err := w.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer tx.Rollback()
			var applied sql.NullString
			switch err := tx.QueryRowContext(ctx, `SELECT checksum FROM schema_migrations WHERE version = ?`, v).Scan(&applied); {
			case err == nil && !applied.Valid:
				if _, err := tx.ExecContext(ctx, `UPDATE schema_migrations SET checksum = ? WHERE version = ?`, sum, v); err != nil {
					return err
				}
				return tx.Commit()
			case err == nil && applied.String != sum:
				return fmt.Errorf("%w: the migration at position %d is not the one applied to this database (checksum %.12s, applied %.12s); migrations are append-only: never edit, reorder or insert before applied ones",
					ErrMigrationMismatch, v, sum, applied.String)
			case err == nil:
				return nil
			case !errors.Is(err, sql.ErrNoRows):
				return err
			}
			if _, err := tx.ExecContext(ctx, m); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, checksum) VALUES (?, ?)`, v, sum); err != nil {
				return err
			}
			return tx.Commit()
		}(); err != nil {
			return fmt.Errorf("sqlitedb: migration %d: %w", v, err)
		}
	}
	return nil
}

// Read returns the read-only connection pool. Each query outside an explicit
// transaction sees every commit acknowledged before it started.
func (db *DB) Read() *sql.DB { return db.r }

// Write runs fn inside a write transaction shared with concurrent Writes and
// returns after the group's COMMIT is durable (per Synchronous). If fn returns
// an error, its savepoint is rolled back, its AfterCommit functions are
// dropped, and only this Write returns that error. A panic in fn is returned
// as an error. If ctx ends before fn has started, fn does not run and
// ctx.Err() is returned; once fn has started, Write waits for the outcome.
// fn must not block on anything but tx and must not call Write.
func (db *DB) Write(ctx context.Context, fn func(tx *Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &writeReq{ctx: ctx, fn: fn, done: make(chan error, 1)}
	select {
	case db.reqs <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-db.closing:
		return ErrClosed
	}
	return <-r.done
}

// Close stops accepting writes, waits for the batch in progress and closes both pools.
func (db *DB) Close() error {
	db.once.Do(func() { close(db.closing) })
	<-db.done
	return errors.Join(db.w.Close(), db.r.Close())
}

func (db *DB) writer() {
	defer close(db.done)
	for {
		var first *writeReq
		select {
		case first = <-db.reqs:
		case <-db.closing:
			return
		}
		db.commit(first)
	}
}

type result struct {
	req      *writeReq
	err      error
	after    []func()
	rollback []func()
	ran      bool
}

// groupStmts are the savepoint statements, prepared once per group transaction
// (parsing them again for every fn was a visible share of the writer's CPU).
type groupStmts struct {
	savepoint, rollbackTo, release *sql.Stmt
}

func prepareGroup(ctx context.Context, tx *sql.Tx) (g groupStmts, err error) {
	if g.savepoint, err = tx.PrepareContext(ctx, "SAVEPOINT w"); err != nil {
		return g, err
	}
	if g.rollbackTo, err = tx.PrepareContext(ctx, "ROLLBACK TO w"); err != nil {
		return g, err
	}
	g.release, err = tx.PrepareContext(ctx, "RELEASE w")
	return g, err
}

// commit runs one group: BEGIN IMMEDIATE, one savepoint per fn, COMMIT. The group
// starts with first and every write already waiting, and keeps taking writes that
// arrive while its fns run (up to MaxBatch), so that the requests answered by the
// previous commit join this one instead of waiting for a commit of their own.
func (db *DB) commit(first *writeReq) {
	ctx := context.Background()
	res := make([]result, 0, 16)
	res = append(res, result{req: first})
	fail := func(err error) {
		for i := len(res) - 1; i >= 0; i-- {
			if res[i].ran {
				undo(res[i].rollback)
			}
		}
		for i := range res {
			if res[i].err == nil {
				res[i].err = err
			}
			res[i].req.done <- res[i].err
		}
	}
	sqlTx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		db.drain(&res)
		fail(fmt.Errorf("sqlitedb: begin: %w", err))
		return
	}
	g, err := prepareGroup(ctx, sqlTx)
	if err != nil {
		sqlTx.Rollback()
		db.drain(&res)
		fail(fmt.Errorf("sqlitedb: prepare savepoint: %w", err))
		return
	}
	stmts := &stmtCache{tx: sqlTx, m: map[string]*sql.Stmt{}}
	for i := 0; ; i++ {
		if i == len(res) {
			if len(res) >= db.maxBatch {
				break
			}
			select {
			case r := <-db.reqs:
				res = append(res, result{req: r})
			default:
			}
			if i == len(res) {
				break
			}
		}
		r := &res[i]
		if err := r.req.ctx.Err(); err != nil {
			r.err = err
			continue
		}
		if _, err := g.savepoint.ExecContext(ctx); err != nil {
			sqlTx.Rollback()
			fail(fmt.Errorf("sqlitedb: savepoint: %w", err))
			return
		}
		tx := &Tx{tx: sqlTx, stmts: stmts}
		ferr := runFn(r.req.fn, tx)
		if ferr != nil {
			r.err = ferr
			undo(tx.rollback)
			_, err := g.rollbackTo.ExecContext(ctx)
			if err == nil {
				_, err = g.release.ExecContext(ctx)
			}
			if err != nil {
				sqlTx.Rollback()
				fail(fmt.Errorf("sqlitedb: rollback to savepoint after %v: %w", ferr, err))
				return
			}
			continue
		}
		if _, err := g.release.ExecContext(ctx); err != nil {
			r.after, r.rollback, r.ran = tx.after, tx.rollback, true
			sqlTx.Rollback()
			fail(fmt.Errorf("sqlitedb: release savepoint: %w", err))
			return
		}
		r.after, r.rollback, r.ran = tx.after, tx.rollback, true
	}
	if err := sqlTx.Commit(); err != nil {
		for i := range res {
			if res[i].ran {
				res[i].err = fmt.Errorf("sqlitedb: commit: %w", err)
			}
		}
		fail(nil)
		return
	}
	for i := range res {
		for _, f := range res[i].after {
			f()
		}
	}
	for i := range res {
		res[i].req.done <- res[i].err
	}
}

// drain adds the writes already waiting to a group that failed before running any.
func (db *DB) drain(res *[]result) {
	for len(*res) < db.maxBatch {
		select {
		case r := <-db.reqs:
			*res = append(*res, result{req: r})
		default:
			return
		}
	}
}

func runFn(fn func(*Tx) error, tx *Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("sqlitedb: write fn panicked: %v\n%s", p, debug.Stack())
		}
	}()
	return fn(tx)
}
