package accessstore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"log/slog"
	"time"

	"github.com/condaccess/condaccess/internal/pgdb"
)

// ConsoleSessionKey is the shared_keys name of the key that seals console sessions.
const ConsoleSessionKey = "console-session"

// ConsoleSessions is the console's session state on PostgreSQL, in the access schema,
// shared by every replica on the database: the key that seals session cookies (a
// shared key, like the blocked-page key) and the sign-outs, which every replica
// refuses from the moment they are committed until the session would have expired.
type ConsoleSessions struct {
	db  *pgdb.DB
	now func() time.Time
}

// OpenConsoleSessions opens the access schema of url (migrating it like OpenPG) with a
// small pool of its own, so the console needs no access service in this process.
func OpenConsoleSessions(ctx context.Context, url string, logger *slog.Logger) (*ConsoleSessions, error) {
	db, err := pgdb.Open(ctx, pgdb.Options{URL: url, Schema: PGSchema, Migrations: PGMigrations(), MaxConns: 4, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("accessstore: console sessions: %w", err)
	}
	return &ConsoleSessions{db: db, now: time.Now}, nil
}

// Key returns the 32-byte session sealing key, created by the first replica that asks.
func (c *ConsoleSessions) Key(ctx context.Context) ([]byte, error) {
	return sharedKey(ctx, c.db.Read(), ConsoleSessionKey)
}

// SignOut records that session id is signed out until expires, and deletes the
// sign-outs that have expired.
func (c *ConsoleSessions) SignOut(ctx context.Context, id string, expires time.Time) error {
	if id == "" {
		return fmt.Errorf("accessstore: console sign-out without a session id")
	}
	now := c.now().Unix()
	return c.db.Write(ctx, func(tx *pgdb.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM console_signouts WHERE expires_unix <= $1`, now); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO console_signouts (id, expires_unix) VALUES ($1, $2)
			ON CONFLICT (id) DO UPDATE SET expires_unix = GREATEST(console_signouts.expires_unix, EXCLUDED.expires_unix)`, id, expires.Unix())
		return err
	})
}

// SignedOut reports whether session id was signed out (on any replica) and has not
// yet expired.
func (c *ConsoleSessions) SignedOut(ctx context.Context, id string) (bool, error) {
	var n int
	err := c.db.Read().QueryRowContext(ctx, `SELECT count(*) FROM console_signouts WHERE id = $1 AND expires_unix > $2`, id, c.now().Unix()).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("accessstore: console sign-outs: %w", err)
	}
	return n > 0, nil
}

// Close closes the pool.
func (c *ConsoleSessions) Close() error { return c.db.Close() }

// sharedKey returns the random 32-byte key stored under name in shared_keys, created
// by the first replica that asks (every replica gets the same key).
func sharedKey(ctx context.Context, db *sql.DB, name string) ([]byte, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO shared_keys (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`, name, key); err != nil {
		return nil, fmt.Errorf("accessstore: shared key %s: %w", name, err)
	}
	if err := db.QueryRowContext(ctx, `SELECT value FROM shared_keys WHERE name = $1`, name).Scan(&key); err != nil {
		return nil, fmt.Errorf("accessstore: shared key %s: %w", name, err)
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("accessstore: shared key %s: %d bytes, want 32", name, len(key))
	}
	return key, nil
}
