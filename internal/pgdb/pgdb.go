// Package pgdb is a service's PostgreSQL database (pgx through database/sql), in the service's own schema, with the same Write/Read shape as sqlitedb.
//
// Differences from sqlitedb that a store must know:
//   - Placeholders are $1, $2, ... (PostgreSQL), not ?.
//   - Each Write is its own transaction (READ COMMITTED) on a pooled connection:
//     Writes run concurrently, from any number of processes; there is no group
//     commit and no single writer, so a store must not keep write-path caches in
//     memory (another replica may have changed the rows).
//   - A Write whose transaction fails with a serialization failure or a deadlock
//     (SQLSTATE 40001, 40P01) is run again, up to 5 times, after its OnRollback
//     functions: fn must be safe to run again.
//   - Statements run with the caller's context; once COMMIT has been sent, Write
//     waits for its outcome whatever happens to ctx.
//   - A failed statement aborts the whole transaction (PostgreSQL): fn cannot
//     carry on after an error as it may on SQLite; use ON CONFLICT and the like.
//   - Migrations run in one transaction under an advisory lock, so replicas
//     starting together migrate once.
package pgdb

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"regexp"
	"runtime/debug"
	"sort"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/condaccess/condaccess/internal/dbtx"
)

// ErrMigrationMismatch is returned by Open when the schema's applied migrations do
// not match the ones given (an applied migration was edited, reordered, or the
// schema was migrated by a newer binary).
var ErrMigrationMismatch = errors.New("pgdb: schema migrations do not match the database")

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("pgdb: database closed")

// Options configures Open.
type Options struct {
	// URL is a PostgreSQL connection URL (postgres://user:pass@host:port/db?sslmode=...).
	URL string
	// Schema is the service's schema (lower-case identifier, e.g. "risk"), created if
	// missing; every connection's search_path is set to it alone, so unqualified
	// table names are the service's.
	Schema string
	// Migrations are applied in order, once each, tracked by position and checksum in
	// the schema's schema_migrations table (append only, as in sqlitedb).
	Migrations []string
	// MaxConns caps the pool (default 16).
	MaxConns int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// DB is one service's schema in a PostgreSQL database.
type DB struct {
	db     *sql.DB
	cfg    *pgx.ConnConfig
	schema string
	log    *slog.Logger
	closed chan struct{}
}

// Tx is the transaction a Write fn runs in.
type Tx struct {
	tx       *sql.Tx
	after    []func()
	rollback []func()
	local    map[any]any
}

var _ dbtx.Tx = (*Tx)(nil)

// ExecContext executes a statement in the transaction.
func (tx *Tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return tx.tx.ExecContext(ctx, query, args...)
}

// QueryContext runs a query in the transaction.
func (tx *Tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return tx.tx.QueryContext(ctx, query, args...)
}

// QueryRowContext runs a query returning at most one row in the transaction.
func (tx *Tx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return tx.tx.QueryRowContext(ctx, query, args...)
}

// AfterCommit registers f to run once COMMIT has succeeded, before Write returns.
func (tx *Tx) AfterCommit(f func()) { tx.after = append(tx.after, f) }

// OnRollback registers f to run (in reverse order) if the transaction does not commit.
func (tx *Tx) OnRollback(f func()) { tx.rollback = append(tx.rollback, f) }

// Local returns the value stored under key in this transaction (nil if none):
// per-transaction state of a helper, e.g. the revision an event log reserved.
func (tx *Tx) Local(key any) any { return tx.local[key] }

// SetLocal stores v under key for the rest of this transaction.
func (tx *Tx) SetLocal(key, v any) {
	if tx.local == nil {
		tx.local = map[any]any{}
	}
	tx.local[key] = v
}

var schemaRe = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Open connects, creates the schema if needed and applies pending migrations.
func Open(ctx context.Context, opts Options) (*DB, error) {
	if !schemaRe.MatchString(opts.Schema) {
		return nil, fmt.Errorf("pgdb: schema %q: want a lower-case identifier", opts.Schema)
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = 16
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	cfg, err := pgx.ParseConfig(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("pgdb: database URL: %w", err)
	}
	cfg.RuntimeParams["search_path"] = opts.Schema
	sdb := stdlib.OpenDB(*cfg)
	sdb.SetMaxOpenConns(opts.MaxConns)
	sdb.SetMaxIdleConns(opts.MaxConns)
	if err := sdb.PingContext(ctx); err != nil {
		sdb.Close()
		return nil, fmt.Errorf("pgdb: connect: %w", err)
	}
	db := &DB{db: sdb, cfg: cfg, schema: opts.Schema, log: opts.Logger, closed: make(chan struct{})}
	if err := db.migrate(ctx, opts.Migrations); err != nil {
		sdb.Close()
		return nil, err
	}
	return db, nil
}

func checksum(m string) string {
	sum := sha256.Sum256([]byte(m))
	return hex.EncodeToString(sum[:])
}

// migrate applies the pending migrations and records them, all in one transaction
// holding an advisory lock on the schema's name.
func (db *DB) migrate(ctx context.Context, migrations []string) error {
	tx, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("pgdb: migrate: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext('condaccess.migrate.' || $1))`, db.schema); err != nil {
		return fmt.Errorf("pgdb: migrate: lock: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `CREATE SCHEMA IF NOT EXISTS `+db.schema); err != nil {
		return fmt.Errorf("pgdb: create schema %s: %w", db.schema, err)
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY,
		applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
		checksum TEXT NOT NULL
	)`); err != nil {
		return fmt.Errorf("pgdb: create schema_migrations: %w", err)
	}
	applied := map[int]string{}
	rows, err := tx.QueryContext(ctx, `SELECT version, checksum FROM schema_migrations`)
	if err != nil {
		return fmt.Errorf("pgdb: read schema_migrations: %w", err)
	}
	for rows.Next() {
		var v int
		var sum string
		if err := rows.Scan(&v, &sum); err != nil {
			rows.Close()
			return fmt.Errorf("pgdb: read schema_migrations: %w", err)
		}
		applied[v] = sum
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("pgdb: read schema_migrations: %w", err)
	}
	for v := range applied {
		if v > len(migrations) {
			return fmt.Errorf("%w: schema %s has migration %d applied, this binary knows %d (it was migrated by a newer version)",
				ErrMigrationMismatch, db.schema, v, len(migrations))
		}
	}
	for i, m := range migrations {
		v, sum := i+1, checksum(m)
		if got, ok := applied[v]; ok {
			if got != sum {
				return fmt.Errorf("%w: the migration at position %d is not the one applied to schema %s (checksum %.12s, applied %.12s); migrations are append-only",
					ErrMigrationMismatch, v, db.schema, sum, got)
			}
			continue
		}
		if _, err := tx.ExecContext(ctx, m); err != nil {
			return fmt.Errorf("pgdb: migration %d: %w", v, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)`, v, sum); err != nil {
			return fmt.Errorf("pgdb: migration %d: %w", v, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("pgdb: migrate: commit: %w", err)
	}
	return nil
}

// Schema returns the service's schema name.
func (db *DB) Schema() string { return db.schema }

// ConnConfig returns a copy of the connection settings (search_path included), for
// a dedicated connection such as a LISTEN.
func (db *DB) ConnConfig() *pgx.ConnConfig { return db.cfg.Copy() }

// Read returns the connection pool for reads outside a Write.
func (db *DB) Read() *sql.DB { return db.db }

// Close closes the pool; later Writes fail with ErrClosed.
func (db *DB) Close() error {
	select {
	case <-db.closed:
		return nil
	default:
	}
	close(db.closed)
	return db.db.Close()
}

// maxAttempts bounds the runs of one Write on serialization failures and deadlocks.
const maxAttempts = 5

// Write runs fn in a transaction and commits it. If fn returns an error (or
// panics), the transaction is rolled back, its OnRollback functions run and the
// error is returned. AfterCommit functions run after a successful COMMIT, in
// registration order.
func (db *DB) Write(ctx context.Context, fn func(tx *Tx) error) error {
	for attempt := 1; ; attempt++ {
		select {
		case <-db.closed:
			return ErrClosed
		default:
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		err := db.write(ctx, fn)
		if err == nil || !Retryable(err) || attempt == maxAttempts {
			return err
		}
		db.log.Debug("pgdb: retrying write", "attempt", attempt, "err", err)
	}
}

// Retryable reports whether err is a serialization failure or a deadlock, after
// which the whole transaction may be run again.
func Retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

func (db *DB) write(ctx context.Context, fn func(tx *Tx) error) error {
	// Not ctx: database/sql rolls back a transaction whose BeginTx context ends,
	// which could happen while COMMIT is in flight. Statements use ctx.
	stx, err := db.db.BeginTx(context.WithoutCancel(ctx), nil)
	if err != nil {
		return fmt.Errorf("pgdb: begin: %w", err)
	}
	tx := &Tx{tx: stx}
	if err := runFn(fn, tx); err != nil {
		stx.Rollback()
		undo(tx.rollback)
		return err
	}
	if err := stx.Commit(); err != nil {
		undo(tx.rollback)
		return fmt.Errorf("pgdb: commit: %w", err)
	}
	for _, f := range tx.after {
		f()
	}
	return nil
}

func undo(fs []func()) {
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

func runFn(fn func(*Tx) error, tx *Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("pgdb: write fn panicked: %v\n%s", p, debug.Stack())
		}
	}()
	return fn(tx)
}

// MigrationFiles returns the contents of the files of fsys matching pattern, in name
// order: a store's embedded pgmigrations/*.sql. It panics on an error, which for an
// embedded file system is a build mistake.
func MigrationFiles(fsys fs.FS, pattern string) []string {
	names, err := fs.Glob(fsys, pattern)
	if err != nil {
		panic(err)
	}
	sort.Strings(names)
	out := make([]string, 0, len(names))
	for _, n := range names {
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			panic(err)
		}
		out = append(out, string(b))
	}
	return out
}
