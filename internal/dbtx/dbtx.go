// Package dbtx is the dialect-neutral write transaction that both store backends (sqlitedb, pgdb) hand to a Write fn.
//
// Code that must run inside either backend's transaction (a leader lease's fence,
// later shared helpers) takes a dbtx.Tx. The SQL text itself is not neutral: SQLite
// takes ? placeholders, PostgreSQL $1; each store keeps its own statements per
// backend (riskstore: store.go for SQLite, postgres.go for PostgreSQL).
package dbtx

import (
	"context"
	"database/sql"
)

// Tx is one Write fn's transaction.
type Tx interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	// AfterCommit registers f to run once the transaction has committed, before
	// Write returns; it is dropped if the fn fails or the commit fails.
	AfterCommit(f func())
	// OnRollback registers f to run if the fn's changes are discarded.
	OnRollback(f func())
}
