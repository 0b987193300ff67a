package audit

import (
	"context"
	"time"

	"github.com/condaccess/condaccess/internal/dbtx"
	"github.com/condaccess/condaccess/internal/pgdb"
)

// PGMigrations returns the audit table on PostgreSQL (a store appends it to its
// PostgreSQL migrations), with the same columns as Migrations.
func PGMigrations(tableName string) []string {
	t := table(tableName)
	return []string{`CREATE TABLE ` + t + ` (
		id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		time_unix_nano BIGINT NOT NULL,
		subject TEXT NOT NULL,
		roles TEXT NOT NULL DEFAULT '',
		method TEXT NOT NULL DEFAULT '',
		peer TEXT NOT NULL DEFAULT '',
		trace_id TEXT NOT NULL DEFAULT '',
		action TEXT NOT NULL,
		resource_type TEXT NOT NULL,
		resource_id TEXT NOT NULL,
		before_json BYTEA,
		after_json BYTEA,
		etag TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX ` + t + `_time ON ` + t + ` (time_unix_nano, id);`}
}

// NewPG returns the audit log kept in db (whose migrations include
// PGMigrations(opts.Table)), to list and compact: AuditService and RunRetention take
// it as they take a SQLite log. The store appends with its PGWriter.
func NewPG(db *pgdb.DB, opts Options) *Log {
	return newLog(db.Read(), func(ctx context.Context, fn func(tx dbtx.Tx) error) error {
		return db.Write(ctx, func(tx *pgdb.Tx) error { return fn(tx) })
	}, true, opts)
}

// PGWriter appends audit events to a store's PostgreSQL table in the caller's
// transaction, as Log.Append does on SQLite; NewPG lists and compacts that table.
type PGWriter struct {
	now     func() time.Time
	qInsert string
}

// NewPGWriter returns the writer of opts.Table (Source and Logger are unused).
func NewPGWriter(opts Options) *PGWriter {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &PGWriter{now: opts.Now,
		qInsert: `INSERT INTO ` + table(opts.Table) + ` (time_unix_nano, subject, roles, method, peer, trace_id, action, resource_type, resource_id, before_json, after_json, etag) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`}
}

// Append records c, made by the actor in ctx (SystemSubject without one), inside tx.
func (w *PGWriter) Append(ctx context.Context, tx dbtx.Tx, c Change) error {
	return appendChange(ctx, tx, w.qInsert, w.now(), c)
}
