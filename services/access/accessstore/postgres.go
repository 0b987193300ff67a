package accessstore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/dbtx"
	"github.com/condaccess/condaccess/internal/eventlog"
	"github.com/condaccess/condaccess/internal/lease"
	"github.com/condaccess/condaccess/internal/pgdb"
	"github.com/condaccess/condaccess/internal/sqlitedb"
	"github.com/condaccess/condaccess/services/access"
)

//go:embed pgmigrations/*.sql
var pgMigrationFiles embed.FS

// PGSchema is the access service's schema in a shared PostgreSQL database.
const PGSchema = "access"

// changeTable is the log of the directory and policy changes every replica's
// model follows, deviceTable that of the device compliance the consumer leader
// stores (PostgreSQL only: on SQLite the one process makes them all itself). Two
// logs, so that a replica's admin write is validated against the directory and
// policies only, however busy the compliance feed.
const (
	changeTable = "changes"
	deviceTable = "device_changes"
)

// Change kinds besides the audited resource types.
const (
	changeDevice  = access.ChangeDevice
	changeDevices = access.ChangeDevices
)

// PGMigrations returns the PostgreSQL store's schema migrations, in order (append
// only): the shared parts (event logs, audit, leases) first, then the files of
// pgmigrations/ in name order, so that a new file appends.
func PGMigrations() []string {
	out := append([]string(nil), eventlog.PGMigrations(eventTable)...)
	out = append(out, eventlog.PGMigrations(changeTable)...)
	out = append(out, eventlog.PGMigrations(deviceTable)...)
	out = append(out, audit.PGMigrations("")...)
	out = append(out, lease.PGMigrations()...)
	out = append(out, pgdb.MigrationFiles(pgMigrationFiles, "pgmigrations/*.sql")...)
	return out
}

// PGOptions configures OpenPG.
type PGOptions struct {
	// URL is the PostgreSQL database URL; the store lives in schema Schema (default PGSchema).
	URL    string
	Schema string
	// EventRetention and ProgressInterval: as in Options (session events).
	EventRetention   int64
	ProgressInterval time.Duration
	// ChangeRetention keeps at least this many newest change-log entries (default
	// 100,000); a replica further behind reloads everything.
	ChangeRetention int64
	// PollInterval is the event logs' fallback poll for other replicas' events (default 1s).
	PollInterval time.Duration
	// NoNotify turns LISTEN/NOTIFY off (an engine without it): replicas learn of
	// each other's changes by polling only.
	NoNotify bool
	// RequireFence refuses a write that advances the compliance cursor unless its
	// context carries a lease token (Fenced) that is still current.
	RequireFence bool
	Logger       *slog.Logger
}

// pgParts is what a Store on PostgreSQL holds instead of the SQLite database.
type pgParts struct {
	db           *pgdb.DB
	log          *eventlog.PGLog // session events
	changes      *eventlog.PGLog // directory and policy changes, which replicas follow
	devices      *eventlog.PGLog // device compliance changes, which replicas follow
	audit        *audit.PGWriter
	requireFence bool
	// signIns wakes sign-in followers on every replica's writes (nil with NoNotify);
	// signInChannel is its NOTIFY channel.
	signIns       *notifier
	signInChannel string
	// riskAsOf is the compliance service's risk_as_of this process's consumer
	// last heard (unix nanos, 0 unknown), stored with each cursor write.
	riskAsOf atomic.Int64
}

// OpenPG opens (creating or migrating) the store in its schema of opts.URL. Any
// number of replicas may open the same schema. Every write locks the session log's
// counter row first, so writes from every replica run one at a time and each
// read-then-write (an etag check, a sign-in key, a session upsert) stays as safe
// as on the one SQLite writer; nothing on the write path is cached. Each admin
// change and each device compliance write appends an entry to the change log
// (WatchChanges), which every replica follows to keep its decision engine current.
//
// Differences from the SQLite store: audit events are appended with a PGWriter to
// the schema's audit_events table, which Audit lists and compacts; DB returns nil.
func OpenPG(ctx context.Context, opts PGOptions) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Schema == "" {
		opts.Schema = PGSchema
	}
	if opts.ChangeRetention == 0 {
		opts.ChangeRetention = 100_000
	}
	db, err := pgdb.Open(ctx, pgdb.Options{URL: opts.URL, Schema: opts.Schema, Migrations: PGMigrations(), Logger: opts.Logger})
	if err != nil {
		return nil, fmt.Errorf("accessstore: %w", err)
	}
	sessions, err := eventlog.NewPG(ctx, db, eventlog.PGOptions{
		Options:      eventlog.Options{Table: eventTable, Retention: opts.EventRetention, ProgressInterval: opts.ProgressInterval, Logger: opts.Logger},
		PollInterval: opts.PollInterval, NoNotify: opts.NoNotify,
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("accessstore: %w", err)
	}
	changes, err := eventlog.NewPG(ctx, db, eventlog.PGOptions{
		Options:      eventlog.Options{Table: changeTable, Retention: opts.ChangeRetention, ProgressInterval: opts.ProgressInterval, Logger: opts.Logger},
		PollInterval: opts.PollInterval, NoNotify: opts.NoNotify,
	})
	if err != nil {
		sessions.Close()
		db.Close()
		return nil, fmt.Errorf("accessstore: %w", err)
	}
	devices, err := eventlog.NewPG(ctx, db, eventlog.PGOptions{
		Options:      eventlog.Options{Table: deviceTable, Retention: opts.ChangeRetention, ProgressInterval: opts.ProgressInterval, Logger: opts.Logger},
		PollInterval: opts.PollInterval, NoNotify: opts.NoNotify,
	})
	if err != nil {
		changes.Close()
		sessions.Close()
		db.Close()
		return nil, fmt.Errorf("accessstore: %w", err)
	}
	ao := audit.Options{Source: "access", Logger: opts.Logger}
	pg := &pgParts{db: db, log: sessions, changes: changes, devices: devices, audit: audit.NewPGWriter(ao),
		requireFence: opts.RequireFence}
	if !opts.NoNotify {
		pg.signInChannel = opts.Schema + "_signins"
		retry := opts.PollInterval
		if retry <= 0 {
			retry = time.Second
		}
		pg.signIns = newNotifier(db, pg.signInChannel, retry, opts.Logger)
	}
	return &Store{audit: audit.NewPG(db, ao), pg: pg}, nil
}

// Lease returns a leader lease kept in the store's schema (PostgreSQL), or the
// always-held local lease (SQLite).
func (s *Store) Lease(opts lease.PGOptions) lease.Lease {
	if s.pg == nil {
		return lease.Local{}
	}
	return lease.NewPG(s.pg.db.Read(), opts)
}

type fenceKey struct{}

type fence struct {
	l     lease.Lease
	token int64
}

// Fenced returns ctx carrying the consumer leader's lease and token: a write made
// with it that advances the compliance cursor (SaveFeedCursor, ApplyDevice,
// ReplaceDevices) checks l.Fence(token) in its transaction and fails with
// lease.ErrFenced, storing nothing, once another replica has taken the lease over.
func Fenced(ctx context.Context, l lease.Lease, token int64) context.Context {
	return context.WithValue(ctx, fenceKey{}, fence{l, token})
}

// ErrUnfenced is returned on a store opened with RequireFence by a cursor write
// whose context carries no lease token.
var ErrUnfenced = errors.New("accessstore: the compliance cursor is written only by the lease holder (no lease token)")

// checkFence runs the fence of ctx, if any, in tx (the transaction advances the cursor).
func (s *Store) checkFence(ctx context.Context, tx dbtx.Tx) error {
	f, ok := ctx.Value(fenceKey{}).(fence)
	if !ok {
		if s.pg != nil && s.pg.requireFence {
			return ErrUnfenced
		}
		return nil
	}
	if p, ok := tx.(pgTx); ok {
		return f.l.Fence(ctx, p.tx, f.token)
	}
	return f.l.Fence(ctx, tx, f.token)
}

// querier is what reads need of a pool or a read transaction.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// write runs fn in a write transaction. On PostgreSQL it first locks the session
// log's counter row, serializing writes across replicas.
func (s *Store) write(ctx context.Context, fn func(tx dbtx.Tx) error) error {
	if s.pg == nil {
		return s.db.Write(ctx, func(tx *sqlitedb.Tx) error { return fn(tx) })
	}
	return s.pg.db.Write(ctx, func(tx *pgdb.Tx) error {
		if _, err := s.pg.log.Next(tx); err != nil {
			return err
		}
		return fn(pgTx{tx})
	})
}

// read returns the pool for reads outside a write.
func (s *Store) read() querier {
	if s.pg == nil {
		return s.db.Read()
	}
	return pgQuerier{s.pg.db.Read()}
}

// readTx begins a read-only transaction (one snapshot); done ends it.
func (s *Store) readTx(ctx context.Context) (q querier, done func() error, err error) {
	if s.pg == nil {
		tx, err := s.db.Read().BeginTx(ctx, nil)
		if err != nil {
			return nil, nil, err
		}
		return tx, tx.Rollback, nil
	}
	tx, err := s.pg.db.Read().BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead})
	if err != nil {
		return nil, nil, err
	}
	return pgQuerier{tx}, tx.Rollback, nil
}

func (s *Store) appendLog(tx dbtx.Tx, e eventlog.Event) (int64, error) {
	if s.pg == nil {
		return s.log.Append(tx.(*sqlitedb.Tx), e)
	}
	return s.pg.log.Append(tx.(pgTx).tx, e)
}

// appendAudit records an audited change; on PostgreSQL it also appends the change
// to the change log, so that every replica reloads what it changed.
func (s *Store) appendAudit(ctx context.Context, tx dbtx.Tx, c audit.Change) error {
	if s.pg == nil {
		return s.audit.Append(ctx, tx.(*sqlitedb.Tx), c)
	}
	ptx := tx.(pgTx).tx
	if err := s.pg.audit.Append(ctx, ptx, c); err != nil {
		return err
	}
	if exp, took, ok := access.ExpectedChanges(ctx); ok {
		next, err := s.pg.changes.Next(ptx)
		if err != nil {
			return err
		}
		if next-1 != exp {
			return fmt.Errorf("%w: %s %q: the directory or policies were changed on another replica (change %d, this replica had %d): read it again and retry",
				access.ErrEtagMismatch, c.ResourceType, c.ResourceID, next-1, exp)
		}
		if took != nil {
			ptx.AfterCommit(func() { *took = next })
		}
	}
	return s.noteChange(tx, c.ResourceType, c.ResourceID)
}

// noteChange appends a change-log entry (PostgreSQL only).
func (s *Store) noteChange(tx dbtx.Tx, kind, id string) error {
	if s.pg == nil {
		return nil
	}
	l := s.pg.changes
	if kind == changeDevice || kind == changeDevices {
		l = s.pg.devices
	}
	_, err := l.Append(tx.(pgTx).tx, eventlog.Event{Type: kind, Key: id})
	return err
}

// saveCursor stores the compliance cursor, after the fence of ctx (if any); on
// PostgreSQL with the time of this contact, which the other replicas read.
func (s *Store) saveCursor(ctx context.Context, tx dbtx.Tx, rev int64) error {
	if err := s.checkFence(ctx, tx); err != nil {
		return err
	}
	if s.pg == nil {
		_, err := tx.ExecContext(ctx, `INSERT INTO feed_cursor (id, revision) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET revision = excluded.revision`, rev)
		return err
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO feed_cursor (id, revision, contact_ns, risk_as_of_ns) VALUES (1, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET revision = excluded.revision, contact_ns = excluded.contact_ns, risk_as_of_ns = excluded.risk_as_of_ns`,
		rev, time.Now().UnixNano(), s.pg.riskAsOf.Load())
	return err
}

// NoteRiskAsOf implements access.ChangeFeed.
func (s *Store) NoteRiskAsOf(t time.Time) {
	if s.pg != nil {
		s.pg.riskAsOf.Store(ns(t))
	}
}

// touchSessionSQL raises a stored session's last access time.
func (s *Store) touchSessionSQL() string {
	if s.pg == nil {
		return `UPDATE sessions SET last_access_ns = max(last_access_ns, ?) WHERE id = ?`
	}
	return `UPDATE sessions SET last_access_ns = GREATEST(last_access_ns, ?) WHERE id = ?`
}

// ---- the change feed (access.ChangeFeed) ----

var _ access.ChangeFeed = (*Store)(nil)

// Replicated implements access.ChangeFeed: true on PostgreSQL.
func (s *Store) Replicated() bool { return s.pg != nil }

// ChangeHead implements access.ChangeFeed: the change log's committed head.
func (s *Store) ChangeHead(ctx context.Context) (int64, error) {
	if s.pg == nil {
		return 0, nil
	}
	return s.pg.changes.Head(ctx)
}

// WatchChanges implements access.ChangeFeed.
func (s *Store) WatchChanges(ctx context.Context, start int64, onChange func(access.Change) error, onProgress func(int64) error) error {
	if s.pg == nil {
		<-ctx.Done()
		return ctx.Err()
	}
	return watchChanges(ctx, s.pg.changes, start, onChange, onProgress)
}

// DeviceChangeHead implements access.ChangeFeed.
func (s *Store) DeviceChangeHead(ctx context.Context) (int64, error) {
	if s.pg == nil {
		return 0, nil
	}
	return s.pg.devices.Head(ctx)
}

// WatchDeviceChanges implements access.ChangeFeed.
func (s *Store) WatchDeviceChanges(ctx context.Context, start int64, onChange func(access.Change) error, onProgress func(int64) error) error {
	if s.pg == nil {
		<-ctx.Done()
		return ctx.Err()
	}
	return watchChanges(ctx, s.pg.devices, start, onChange, onProgress)
}

func watchChanges(ctx context.Context, l *eventlog.PGLog, start int64, onChange func(access.Change) error, onProgress func(int64) error) error {
	if onProgress == nil {
		onProgress = func(int64) error { return nil }
	}
	return l.Watch(ctx, start, func(e eventlog.Event) error {
		return onChange(access.Change{Revision: e.Revision, Kind: e.Type, ID: e.Key})
	}, onProgress)
}

// LoadDevice implements access.ChangeFeed.
func (s *Store) LoadDevice(ctx context.Context, id string) (*access.DeviceCompliance, error) {
	var out *access.DeviceCompliance
	rows, err := s.read().QueryContext(ctx, `SELECT device_id, state, risk, platform, revision, detail FROM device_compliance WHERE device_id = ?`, id)
	err = scanDevices(rows, err, func(d *access.DeviceCompliance) { out = d })
	if err == nil && out == nil {
		err = fmt.Errorf("%w: device %q", access.ErrNotFound, id)
	}
	return out, err
}

// FeedContact implements access.ChangeFeed.
func (s *Store) FeedContact(ctx context.Context) (access.FeedContact, error) {
	if s.pg == nil {
		rev, _, err := s.FeedCursor(ctx)
		return access.FeedContact{Revision: rev}, err
	}
	var rev, contact, riskAsOf int64
	err := s.read().QueryRowContext(ctx, `SELECT revision, contact_ns, risk_as_of_ns FROM feed_cursor WHERE id = 1`).Scan(&rev, &contact, &riskAsOf)
	if errors.Is(err, sql.ErrNoRows) {
		return access.FeedContact{}, nil
	}
	return access.FeedContact{Revision: rev, Contact: fromNS(contact), RiskAsOf: fromNS(riskAsOf)}, err
}

// ---- placeholders ----

// pgTx is a PostgreSQL write transaction that takes the store's ? placeholders.
type pgTx struct{ tx *pgdb.Tx }

func (t pgTx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(ctx, rebind(q), args...)
}

func (t pgTx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, rebind(q), args...)
}

func (t pgTx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(ctx, rebind(q), args...)
}

func (t pgTx) AfterCommit(f func()) { t.tx.AfterCommit(f) }
func (t pgTx) OnRollback(f func())  { t.tx.OnRollback(f) }

// pgQuerier is a PostgreSQL pool or read transaction that takes ? placeholders.
type pgQuerier struct{ q querier }

func (p pgQuerier) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return p.q.QueryContext(ctx, rebind(q), args...)
}

func (p pgQuerier) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return p.q.QueryRowContext(ctx, rebind(q), args...)
}

var rebound sync.Map // query with ? -> with $n

// rebind turns the store's ? placeholders into PostgreSQL's $1, $2, ... (the
// store's statements hold no ? inside string literals).
func rebind(q string) string {
	if v, ok := rebound.Load(q); ok {
		return v.(string)
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	out := b.String()
	rebound.Store(q, out)
	return out
}

// SharedKey returns the random 32-byte key stored under name, created by the first
// replica that asks (PostgreSQL only: every replica gets the same key).
func (s *Store) SharedKey(ctx context.Context, name string) ([]byte, error) {
	if s.pg == nil {
		return nil, errors.New("accessstore: shared keys are kept on PostgreSQL only")
	}
	return sharedKey(ctx, s.pg.db.Read(), name)
}
