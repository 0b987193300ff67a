// Package audit is the audit log of admin changes, appended in the same store transaction as the change it records and listed across the stores a process holds.
//
// The actor comes from the context (NewContext), which the gRPC layer fills from the
// authenticated identity (see auditgrpc); a change made without one (the service's own
// automation) is recorded with the subject "system". Domain packages record a change
// with one call inside their store transaction:
//
//	err := log.Append(ctx, tx, audit.Change{ResourceType: "policy", ResourceID: id, Before: old, After: p})
package audit

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/condaccess/condaccess/internal/dbtx"
	"github.com/condaccess/condaccess/internal/sqlitedb"
)

// SystemSubject is the actor of changes made without an authenticated caller (the
// service's own automation, consumers, timers).
const SystemSubject = "system"

// Actions of an event, derived from Change.Before and Change.After.
const (
	ActionCreate = "create"
	ActionUpdate = "update"
	ActionDelete = "delete"
)

// Actor is who made a change and over which call. Only the gRPC layer sets it, from the
// authenticated identity; nothing in a request can.
type Actor struct {
	Subject string   `json:"subject"`
	Roles   []string `json:"roles,omitempty"`
	Method  string   `json:"method,omitempty"`  // full gRPC method, e.g. /condaccess.access.v1.ConditionalAccessPolicyService/DeletePolicy
	Peer    string   `json:"peer,omitempty"`    // the caller's network address
	TraceID string   `json:"traceId,omitempty"` // W3C trace id of the call
}

type actorKey struct{}

// NewContext returns a copy of ctx carrying a.
func NewContext(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// FromContext returns the actor in ctx, if any.
func FromContext(ctx context.Context) (Actor, bool) {
	a, ok := ctx.Value(actorKey{}).(Actor)
	return a, ok
}

// Change is one admin change to record.
type Change struct {
	// ResourceType names the kind of resource, e.g. "compliance_policy".
	ResourceType string
	// ResourceID identifies it within its type.
	ResourceID string
	// Before and After are the resource before and after the change (nil when it did
	// not exist before / no longer exists). A proto.Message is encoded as proto JSON,
	// anything else with encoding/json.
	Before, After any
	// Etag is the resource's etag after the change (before it, for a delete), if any.
	Etag string
}

// Event is one recorded change.
type Event struct {
	ID           int64 // per store, increasing
	Source       string
	Time         time.Time
	Actor        Actor
	Action       string // ActionCreate, ActionUpdate or ActionDelete
	ResourceType string
	ResourceID   string
	Before       []byte // JSON, nil when there was none
	After        []byte // JSON, nil when there is none
	Etag         string
}

var identRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// DefaultTable is the table Migrations and New use when none is given.
const DefaultTable = "audit_events"

func table(name string) string {
	if name == "" {
		return DefaultTable
	}
	if !identRe.MatchString(name) {
		panic(fmt.Sprintf("audit: invalid table name %q", name))
	}
	return name
}

// Migrations returns the schema a store appends (at the end) to its own migrations.
func Migrations(tableName string) []string {
	t := table(tableName)
	return []string{`CREATE TABLE ` + t + ` (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		time_unix_nano INTEGER NOT NULL,
		subject TEXT NOT NULL,
		roles TEXT NOT NULL DEFAULT '',
		method TEXT NOT NULL DEFAULT '',
		peer TEXT NOT NULL DEFAULT '',
		trace_id TEXT NOT NULL DEFAULT '',
		action TEXT NOT NULL,
		resource_type TEXT NOT NULL,
		resource_id TEXT NOT NULL,
		before_json BLOB,
		after_json BLOB,
		etag TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX ` + t + `_time ON ` + t + ` (time_unix_nano, id);`}
}

// Options configures New.
type Options struct {
	// Source names the store in listed events, e.g. "access".
	Source string
	// Table defaults to DefaultTable.
	Table string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now defaults to time.Now.
	Now func() time.Time
}

// Log is the audit log in one store's database, on SQLite (New) or PostgreSQL
// (NewPG): both list and compact with the same code, only the placeholders differ.
// Safe for concurrent use.
type Log struct {
	read    *sql.DB
	write   func(ctx context.Context, fn func(tx dbtx.Tx) error) error
	pg      bool // $n placeholders instead of ?
	source  string
	t       string
	log     *slog.Logger
	now     func() time.Time
	removed atomic.Int64
	qInsert string
}

// New returns the audit log kept in db (whose migrations include Migrations(opts.Table)).
func New(db *sqlitedb.DB, opts Options) *Log {
	l := newLog(db.Read(), func(ctx context.Context, fn func(tx dbtx.Tx) error) error {
		return db.Write(ctx, func(tx *sqlitedb.Tx) error { return fn(tx) })
	}, false, opts)
	l.qInsert = `INSERT INTO ` + l.t + ` (time_unix_nano, subject, roles, method, peer, trace_id, action, resource_type, resource_id, before_json, after_json, etag) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	return l
}

func newLog(read *sql.DB, write func(context.Context, func(dbtx.Tx) error) error, pg bool, opts Options) *Log {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Log{read: read, write: write, pg: pg, source: opts.Source, t: table(opts.Table), log: opts.Logger, now: opts.Now}
}

// placeholder returns the n-th (from 1) placeholder of the log's database.
func (l *Log) placeholder(n int) string {
	if l.pg {
		return "$" + strconv.Itoa(n)
	}
	return "?"
}

// Source is the name given in Options.Source.
func (l *Log) Source() string { return l.source }

// Removed is the number of events compaction has deleted since New.
func (l *Log) Removed() int64 { return l.removed.Load() }

func encode(v any) ([]byte, error) {
	if v == nil {
		return nil, nil
	}
	if m, ok := v.(proto.Message); ok {
		if isNil(m) {
			return nil, nil
		}
		return protojson.Marshal(m)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if string(b) == "null" {
		return nil, nil
	}
	return b, nil
}

func isNil(m proto.Message) bool {
	return m == nil || !m.ProtoReflect().IsValid()
}

// ErrInvalidChange is returned by Append for a change without a resource type or id.
var ErrInvalidChange = errors.New("audit: change needs a resource type and id")

// Append records c, made by the actor in ctx (SystemSubject without one), inside tx: it
// commits or rolls back with the change it records. An error must fail the caller's
// write fn, so that no change is stored unaudited. It is for a log from New; a
// PostgreSQL store appends with its PGWriter.
func (l *Log) Append(ctx context.Context, tx *sqlitedb.Tx, c Change) error {
	return appendChange(ctx, tx, l.qInsert, l.now(), c)
}

// appendChange inserts c with query qInsert (the store's placeholders) in tx: the
// one append of both the SQLite log and the PostgreSQL writer.
func appendChange(ctx context.Context, tx dbtx.Tx, qInsert string, now time.Time, c Change) error {
	if c.ResourceType == "" || c.ResourceID == "" {
		return ErrInvalidChange
	}
	before, err := encode(c.Before)
	if err != nil {
		return fmt.Errorf("audit: encode %s %s before: %w", c.ResourceType, c.ResourceID, err)
	}
	after, err := encode(c.After)
	if err != nil {
		return fmt.Errorf("audit: encode %s %s after: %w", c.ResourceType, c.ResourceID, err)
	}
	action := ActionUpdate
	switch {
	case before == nil && after != nil:
		action = ActionCreate
	case before != nil && after == nil:
		action = ActionDelete
	}
	a, ok := FromContext(ctx)
	if !ok || a.Subject == "" {
		a.Subject = SystemSubject
	}
	if _, err := tx.ExecContext(ctx, qInsert, now.UnixNano(), a.Subject, strings.Join(a.Roles, ","), a.Method, a.Peer, a.TraceID,
		action, c.ResourceType, c.ResourceID, before, after, c.Etag); err != nil {
		return fmt.Errorf("audit: append: %w", err)
	}
	return nil
}

// Compact deletes the events older than before and returns how many it deleted; it
// logs the count and adds it to Removed, so that nothing leaves the log silently.
//
// On PostgreSQL every replica compacts (no lease): the DELETE by time is idempotent,
// and when two replicas run it at once the second waits for the first's row locks
// and skips the rows already gone, so each counts (RowsAffected) only the events it
// removed itself and the replicas' counts add up to what left the table.
func (l *Log) Compact(ctx context.Context, before time.Time) (int64, error) {
	var n, oldest int64
	err := l.write(ctx, func(tx dbtx.Tx) error {
		n, oldest = 0, 0
		var found int64
		if err := tx.QueryRowContext(ctx, `SELECT count(*), COALESCE(MIN(time_unix_nano), 0) FROM `+l.t+` WHERE time_unix_nano < `+l.placeholder(1), before.UnixNano()).Scan(&found, &oldest); err != nil {
			return err
		}
		if found == 0 {
			return nil
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM `+l.t+` WHERE time_unix_nano < `+l.placeholder(1), before.UnixNano())
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("audit: compact %s: %w", l.source, err)
	}
	if n > 0 {
		l.removed.Add(n)
		l.log.Info("audit: retention removed events", "source", l.source, "removed", n,
			"oldest", time.Unix(0, oldest).UTC(), "before", before.UTC(), "removed_total", l.removed.Load())
	}
	return n, nil
}

// RunRetention deletes, every interval until ctx ends, the events of logs older than
// retention (retention <= 0 keeps everything).
func RunRetention(ctx context.Context, logs []*Log, retention, interval time.Duration) {
	if retention <= 0 || len(logs) == 0 {
		return
	}
	if interval <= 0 {
		interval = time.Hour
	}
	tk := time.NewTicker(interval)
	defer tk.Stop()
	for {
		for _, l := range logs {
			if _, err := l.Compact(ctx, l.now().Add(-retention)); err != nil && ctx.Err() == nil {
				l.log.Warn("audit: retention failed", "source", l.source, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
	}
}
