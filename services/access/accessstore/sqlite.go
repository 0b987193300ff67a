// Package accessstore is the access service's store, on SQLite (embedded) or PostgreSQL (shared by replicas).
package accessstore

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/dbtx"
	"github.com/condaccess/condaccess/internal/eventlog"
	"github.com/condaccess/condaccess/internal/sqlitedb"
	"github.com/condaccess/condaccess/services/access"
)

const eventTable = "session_events"

// Migrations is the store's schema (append only).
func Migrations() []string {
	return append([]string{`
CREATE TABLE users (
	id TEXT PRIMARY KEY, display_name TEXT NOT NULL, disabled INTEGER NOT NULL,
	emergency INTEGER NOT NULL, create_ns INTEGER NOT NULL, update_ns INTEGER NOT NULL, etag TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE dir_groups (
	id TEXT PRIMARY KEY, display_name TEXT NOT NULL,
	create_ns INTEGER NOT NULL, update_ns INTEGER NOT NULL, etag TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE group_users (
	group_id TEXT NOT NULL REFERENCES dir_groups(id) ON DELETE CASCADE,
	user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;
CREATE INDEX group_users_user ON group_users(user_id, group_id);
CREATE TABLE group_groups (
	group_id TEXT NOT NULL REFERENCES dir_groups(id) ON DELETE CASCADE,
	member_id TEXT NOT NULL REFERENCES dir_groups(id) ON DELETE CASCADE,
	PRIMARY KEY (group_id, member_id)
) WITHOUT ROWID;
CREATE INDEX group_groups_member ON group_groups(member_id, group_id);
CREATE TABLE applications (
	id TEXT PRIMARY KEY, display_name TEXT NOT NULL,
	create_ns INTEGER NOT NULL, update_ns INTEGER NOT NULL, etag TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE policies (
	id TEXT PRIMARY KEY, state INTEGER NOT NULL, body TEXT NOT NULL,
	create_ns INTEGER NOT NULL, update_ns INTEGER NOT NULL, etag TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE device_compliance (
	device_id TEXT PRIMARY KEY, state INTEGER NOT NULL, risk INTEGER NOT NULL,
	platform INTEGER NOT NULL, revision INTEGER NOT NULL, detail TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE feed_cursor (id INTEGER PRIMARY KEY CHECK (id = 1), revision INTEGER NOT NULL);
CREATE TABLE sessions (
	id TEXT PRIMARY KEY, user_id TEXT NOT NULL, device_id TEXT NOT NULL, app_id TEXT NOT NULL,
	state INTEGER NOT NULL, create_ns INTEGER NOT NULL, last_access_ns INTEGER NOT NULL,
	revoke_ns INTEGER NOT NULL, revoke_reason TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_device ON sessions(device_id);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE INDEX sessions_state ON sessions(state);
CREATE TABLE signins (
	key INTEGER PRIMARY KEY, user_id TEXT NOT NULL, device_id TEXT NOT NULL, app_id TEXT NOT NULL,
	decision INTEGER NOT NULL, trace_id TEXT NOT NULL, detail BLOB NOT NULL
);
CREATE INDEX signins_user ON signins(user_id, key);
CREATE INDEX signins_device ON signins(device_id, key);
`}, append(append(append(eventlog.Migrations(eventTable), signInBatchesMigration), audit.Migrations("")...), userExternalIDMigration)...)
}

// userExternalIDMigration adds the users' external ids ("" = none), unique when set.
const userExternalIDMigration = `
ALTER TABLE users ADD COLUMN external_id TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX users_external_id ON users(external_id) WHERE external_id <> '';
`

// Options configures Open.
type Options struct {
	// Path is the SQLite file.
	Path string
	// EventRetention keeps at least this many newest session events (0 = all).
	EventRetention int64
	// ProgressInterval is the idle progress interval of session event watchers.
	ProgressInterval time.Duration
	// Synchronous is passed to sqlitedb ("FULL" default, or "NORMAL").
	Synchronous string
	Logger      *slog.Logger
}

// Store is the access.Store on SQLite (Open) or PostgreSQL (OpenPG): the same
// statements on both (PostgreSQL's transactions rebind the ? placeholders).
type Store struct {
	db    *sqlitedb.DB // SQLite only
	log   *eventlog.Log
	audit *audit.Log // listed and compacted on both; appended here on SQLite only
	pg    *pgParts   // PostgreSQL only
}

var _ access.Store = (*Store)(nil)

// Open opens the store.
func Open(ctx context.Context, o Options) (*Store, error) {
	db, err := sqlitedb.Open(ctx, sqlitedb.Options{Path: o.Path, Migrations: Migrations(), Synchronous: o.Synchronous, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	// A larger page cache for the writer: sign-in inserts land on random pages of
	// the user and device indexes, which outgrow the 2 MB default quickly.
	if err := db.Write(ctx, func(tx *sqlitedb.Tx) error {
		_, err := tx.ExecContext(ctx, `PRAGMA cache_size = -65536`)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("accessstore: cache size: %w", err)
	}
	l, err := eventlog.New(ctx, db, eventlog.Options{Table: eventTable, Retention: o.EventRetention, ProgressInterval: o.ProgressInterval, Logger: o.Logger})
	if err != nil {
		db.Close()
		return nil, err
	}
	st := &Store{db: db, log: l, audit: audit.New(db, audit.Options{Source: "access", Logger: o.Logger})}
	if err := st.convertLegacySignIns(ctx); err != nil {
		st.Close()
		return nil, err
	}
	return st, nil
}

// Close closes the event log and the database.
func (s *Store) Close() error {
	if s.pg != nil {
		if s.pg.signIns != nil {
			s.pg.signIns.close()
		}
		return errors.Join(s.pg.devices.Close(), s.pg.changes.Close(), s.pg.log.Close(), s.pg.db.Close())
	}
	return errors.Join(s.log.Close(), s.db.Close())
}

// Audit is the audit log of the store's admin changes (on PostgreSQL, every
// replica's).
func (s *Store) Audit() *audit.Log { return s.audit }

// Audited resource types.
const (
	auditUser        = "user"
	auditGroup       = "group"
	auditApplication = "application"
	auditPolicy      = "conditional_access_policy"
	auditImport      = "directory_import"
)

// current reads the resource of an audited type as it is in tx (nil when absent).
func current(ctx context.Context, tx dbtx.Tx, typ, id string) (any, string, error) {
	var v any
	var etag string
	var err error
	switch typ {
	case auditUser:
		var u *access.User
		if u, err = scanUser(tx.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE id = ?`, id)); err == nil {
			v, etag = u, u.Etag
		}
	case auditGroup:
		var g *access.Group
		if g, err = scanGroup(tx.QueryRowContext(ctx, `SELECT `+groupCols+` FROM dir_groups WHERE id = ?`, id)); err == nil {
			if g.MemberUserIDs, err = txStrings(ctx, tx, `SELECT user_id FROM group_users WHERE group_id = ? ORDER BY user_id`, id); err != nil {
				return nil, "", err
			}
			if g.MemberGroupIDs, err = txStrings(ctx, tx, `SELECT member_id FROM group_groups WHERE group_id = ? ORDER BY member_id`, id); err != nil {
				return nil, "", err
			}
			v, etag = g, g.Etag
		}
	case auditApplication:
		var a *access.Application
		if a, err = scanApp(tx.QueryRowContext(ctx, `SELECT `+appCols+` FROM applications WHERE id = ?`, id)); err == nil {
			v, etag = a, a.Etag
		}
	case auditPolicy:
		var p *access.Policy
		if p, err = scanPolicy(tx.QueryRowContext(ctx, `SELECT body, create_ns, update_ns, etag FROM policies WHERE id = ?`, id)); err == nil {
			v, etag = p, p.Etag
		}
	default:
		return nil, "", fmt.Errorf("accessstore: no audited type %q", typ)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return nil, "", nil
	}
	return v, etag, err
}

func txStrings(ctx context.Context, tx dbtx.Tx, q string, args ...any) ([]string, error) {
	return scanStrings(tx.QueryContext(ctx, q, args...))
}

// scanStrings reads a one-column string result (the rows and error of a query).
func scanStrings(rows *sql.Rows, err error) ([]string, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// audited runs change in tx and appends its audit event (the resource before and
// after, the actor from ctx) in the same transaction.
func (s *Store) audited(ctx context.Context, tx dbtx.Tx, typ, id string, change func() error) error {
	before, beforeEtag, err := current(ctx, tx, typ, id)
	if err != nil {
		return err
	}
	if err := change(); err != nil {
		return err
	}
	after, etag, err := current(ctx, tx, typ, id)
	if err != nil {
		return err
	}
	if after == nil {
		etag = beforeEtag
	}
	return s.appendAudit(ctx, tx, audit.Change{ResourceType: typ, ResourceID: id, Before: before, After: after, Etag: etag})
}

// DB exposes the SQLite database (for tests and metrics; nil on PostgreSQL).
func (s *Store) DB() *sqlitedb.DB { return s.db }

func ns(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNS(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func encToken(parts ...string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strings.Join(parts, "\x00")))
}

func decToken(tok string, n int) ([]string, error) {
	if tok == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return nil, fmt.Errorf("%w: malformed page_token", access.ErrInvalid)
	}
	p := strings.Split(string(b), "\x00")
	if len(p) != n {
		return nil, fmt.Errorf("%w: malformed page_token", access.ErrInvalid)
	}
	return p, nil
}

// checkEtag loads the row's etag; ErrNotFound / ErrEtagMismatch.
func checkEtag(ctx context.Context, tx dbtx.Tx, table, id, etag, what string) error {
	var cur string
	err := tx.QueryRowContext(ctx, `SELECT etag FROM `+table+` WHERE id = ?`, id).Scan(&cur)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: %s %q", access.ErrNotFound, what, id)
	}
	if err != nil {
		return err
	}
	if etag != "" && etag != cur {
		return fmt.Errorf("%w: %s %q was changed (etag %q, current %q): read it again", access.ErrEtagMismatch, what, id, etag, cur)
	}
	return nil
}

func exists(ctx context.Context, tx dbtx.Tx, table, id string) (bool, error) {
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM `+table+` WHERE id = ?`, id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// ---- users ----

// CreateUser implements access.Store.
func (s *Store) CreateUser(ctx context.Context, u *access.User) error {
	return s.write(ctx, func(tx dbtx.Tx) error {
		ok, err := exists(ctx, tx, "users", u.ID)
		if err != nil {
			return err
		}
		if ok {
			return fmt.Errorf("%w: user %q", access.ErrAlreadyExists, u.ID)
		}
		return s.audited(ctx, tx, auditUser, u.ID, func() error { return putUser(ctx, tx, u) })
	})
}

func putUser(ctx context.Context, tx dbtx.Tx, u *access.User) error {
	if err := externalIDFree(ctx, tx, u); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO users (id, display_name, disabled, emergency, create_ns, update_ns, etag, external_id) VALUES (?,?,?,?,?,?,?,?)
		ON CONFLICT (id) DO UPDATE SET display_name = excluded.display_name, disabled = excluded.disabled,
		emergency = excluded.emergency, update_ns = excluded.update_ns, etag = excluded.etag, external_id = excluded.external_id`,
		u.ID, u.DisplayName, b2i(u.Disabled), b2i(u.EmergencyAccess), ns(u.CreateTime), ns(u.UpdateTime), u.Etag, u.ExternalID)
	return err
}

// externalIDFree fails with ErrAlreadyExists when another user has u's external id
// (the unique index would refuse it too, with a less useful error).
func externalIDFree(ctx context.Context, tx dbtx.Tx, u *access.User) error {
	if u.ExternalID == "" {
		return nil
	}
	var other string
	err := tx.QueryRowContext(ctx, `SELECT id FROM users WHERE external_id = ? AND id <> ?`, u.ExternalID, u.ID).Scan(&other)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil
	case err != nil:
		return err
	}
	return fmt.Errorf("%w: external id %q belongs to user %q", access.ErrAlreadyExists, u.ExternalID, other)
}

const userCols = `id, display_name, disabled, emergency, create_ns, update_ns, etag, external_id`

func scanUser(sc interface{ Scan(...any) error }) (*access.User, error) {
	var u access.User
	var c, up int64
	if err := sc.Scan(&u.ID, &u.DisplayName, &u.Disabled, &u.EmergencyAccess, &c, &up, &u.Etag, &u.ExternalID); err != nil {
		return nil, err
	}
	u.CreateTime, u.UpdateTime = fromNS(c), fromNS(up)
	return &u, nil
}

// GetUser implements access.Store.
func (s *Store) GetUser(ctx context.Context, id string) (*access.User, error) {
	u, err := scanUser(s.read().QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: user %q", access.ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	u.GroupIDs, err = s.strings(ctx, `SELECT group_id FROM group_users WHERE user_id = ? ORDER BY group_id`, id)
	return u, err
}

// UserByExternalID implements access.Store.
func (s *Store) UserByExternalID(ctx context.Context, ext string) (*access.User, error) {
	if ext == "" {
		return nil, fmt.Errorf("%w: empty external id", access.ErrNotFound)
	}
	u, err := scanUser(s.read().QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE external_id = ?`, ext))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: user with external id %q", access.ErrNotFound, ext)
	}
	return u, err
}

func (s *Store) strings(ctx context.Context, q string, args ...any) ([]string, error) {
	return scanStrings(s.read().QueryContext(ctx, q, args...))
}

// page runs a keyset query by id and returns the rows plus the next token.
// queryAll runs q and scans every row with scan.
func queryAll[T any](ctx context.Context, db querier, q string, scan func(interface{ Scan(...any) error }) (T, error)) ([]T, error) {
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func page[T any](ctx context.Context, db querier, q string, token string, limit int, scan func(*sql.Rows) (T, string, error), args ...any) ([]T, string, error) {
	p, err := decToken(token, 1)
	if err != nil {
		return nil, "", err
	}
	after := ""
	if p != nil {
		after = p[0]
	}
	rows, err := db.QueryContext(ctx, q, append(append([]any{}, args...), after, limit+1)...)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	var out []T
	var last string
	for rows.Next() {
		if len(out) == limit {
			return out, encToken(last), rows.Err()
		}
		v, key, err := scan(rows)
		if err != nil {
			return nil, "", err
		}
		out = append(out, v)
		last = key
	}
	return out, "", rows.Err()
}

// ListUsers implements access.Store.
func (s *Store) ListUsers(ctx context.Context, token string, limit int) ([]*access.User, string, error) {
	return page(ctx, s.read(), `SELECT `+userCols+` FROM users WHERE id > ? ORDER BY id LIMIT ?`, token, limit,
		func(r *sql.Rows) (*access.User, string, error) {
			u, err := scanUser(r)
			if err != nil {
				return nil, "", err
			}
			return u, u.ID, nil
		})
}

// UpdateUser implements access.Store.
func (s *Store) UpdateUser(ctx context.Context, u *access.User, etag string, revs []access.Revocation) error {
	return s.write(ctx, func(tx dbtx.Tx) error {
		if err := checkEtag(ctx, tx, "users", u.ID, etag, "user"); err != nil {
			return err
		}
		if err := s.audited(ctx, tx, auditUser, u.ID, func() error {
			if err := externalIDFree(ctx, tx, u); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `UPDATE users SET display_name = ?, disabled = ?, emergency = ?, update_ns = ?, etag = ?, external_id = ? WHERE id = ?`,
				u.DisplayName, b2i(u.Disabled), b2i(u.EmergencyAccess), ns(u.UpdateTime), u.Etag, u.ExternalID, u.ID)
			return err
		}); err != nil {
			return err
		}
		return s.revoke(ctx, tx, revs)
	})
}

func (s *Store) del(ctx context.Context, table, what, auditType, id, etag string) error {
	return s.write(ctx, func(tx dbtx.Tx) error {
		if err := checkEtag(ctx, tx, table, id, etag, what); err != nil {
			return err
		}
		return s.audited(ctx, tx, auditType, id, func() error {
			_, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE id = ?`, id)
			return err
		})
	})
}

// DeleteUser implements access.Store.
func (s *Store) DeleteUser(ctx context.Context, id, etag string, revs []access.Revocation) error {
	return s.write(ctx, func(tx dbtx.Tx) error {
		if err := checkEtag(ctx, tx, "users", id, etag, "user"); err != nil {
			return err
		}
		if err := s.audited(ctx, tx, auditUser, id, func() error {
			_, err := tx.ExecContext(ctx, `DELETE FROM users WHERE id = ?`, id)
			return err
		}); err != nil {
			return err
		}
		return s.revoke(ctx, tx, revs)
	})
}

// ---- groups ----

func checkMembers(ctx context.Context, tx dbtx.Tx, g *access.Group) error {
	for _, id := range g.MemberUserIDs {
		ok, err := exists(ctx, tx, "users", id)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: member user %q of group %q", access.ErrNotFound, id, g.ID)
		}
	}
	for _, id := range g.MemberGroupIDs {
		if id == g.ID {
			continue
		}
		ok, err := exists(ctx, tx, "dir_groups", id)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: member group %q of group %q", access.ErrNotFound, id, g.ID)
		}
	}
	return nil
}

func putGroupRow(ctx context.Context, tx dbtx.Tx, g *access.Group) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO dir_groups (id, display_name, create_ns, update_ns, etag) VALUES (?,?,?,?,?)
		ON CONFLICT (id) DO UPDATE SET display_name = excluded.display_name, update_ns = excluded.update_ns, etag = excluded.etag`,
		g.ID, g.DisplayName, ns(g.CreateTime), ns(g.UpdateTime), g.Etag)
	return err
}

func putMembers(ctx context.Context, tx dbtx.Tx, g *access.Group) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM group_users WHERE group_id = ?`, g.ID); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM group_groups WHERE group_id = ?`, g.ID); err != nil {
		return err
	}
	for _, u := range g.MemberUserIDs {
		if _, err := tx.ExecContext(ctx, `INSERT INTO group_users (group_id, user_id) VALUES (?, ?) ON CONFLICT DO NOTHING`, g.ID, u); err != nil {
			return err
		}
	}
	for _, m := range g.MemberGroupIDs {
		if _, err := tx.ExecContext(ctx, `INSERT INTO group_groups (group_id, member_id) VALUES (?, ?) ON CONFLICT DO NOTHING`, g.ID, m); err != nil {
			return err
		}
	}
	return nil
}

// CreateGroup implements access.Store.
func (s *Store) CreateGroup(ctx context.Context, g *access.Group) error {
	return s.write(ctx, func(tx dbtx.Tx) error {
		ok, err := exists(ctx, tx, "dir_groups", g.ID)
		if err != nil {
			return err
		}
		if ok {
			return fmt.Errorf("%w: group %q", access.ErrAlreadyExists, g.ID)
		}
		if err := checkMembers(ctx, tx, g); err != nil {
			return err
		}
		return s.audited(ctx, tx, auditGroup, g.ID, func() error {
			if err := putGroupRow(ctx, tx, g); err != nil {
				return err
			}
			return putMembers(ctx, tx, g)
		})
	})
}

const groupCols = `id, display_name, create_ns, update_ns, etag`

func scanGroup(sc interface{ Scan(...any) error }) (*access.Group, error) {
	var g access.Group
	var c, u int64
	if err := sc.Scan(&g.ID, &g.DisplayName, &c, &u, &g.Etag); err != nil {
		return nil, err
	}
	g.CreateTime, g.UpdateTime = fromNS(c), fromNS(u)
	return &g, nil
}

func (s *Store) fillMembers(ctx context.Context, g *access.Group) (err error) {
	if g.MemberUserIDs, err = s.strings(ctx, `SELECT user_id FROM group_users WHERE group_id = ? ORDER BY user_id`, g.ID); err != nil {
		return err
	}
	g.MemberGroupIDs, err = s.strings(ctx, `SELECT member_id FROM group_groups WHERE group_id = ? ORDER BY member_id`, g.ID)
	return err
}

// GetGroup implements access.Store.
func (s *Store) GetGroup(ctx context.Context, id string) (*access.Group, error) {
	g, err := scanGroup(s.read().QueryRowContext(ctx, `SELECT `+groupCols+` FROM dir_groups WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: group %q", access.ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	return g, s.fillMembers(ctx, g)
}

// ListGroups implements access.Store.
func (s *Store) ListGroups(ctx context.Context, token string, limit int) ([]*access.Group, string, error) {
	gs, next, err := page(ctx, s.read(), `SELECT `+groupCols+` FROM dir_groups WHERE id > ? ORDER BY id LIMIT ?`, token, limit,
		func(r *sql.Rows) (*access.Group, string, error) {
			g, err := scanGroup(r)
			if err != nil {
				return nil, "", err
			}
			return g, g.ID, nil
		})
	if err != nil {
		return nil, "", err
	}
	for _, g := range gs {
		if err := s.fillMembers(ctx, g); err != nil {
			return nil, "", err
		}
	}
	return gs, next, nil
}

// UpdateGroup implements access.Store.
func (s *Store) UpdateGroup(ctx context.Context, g *access.Group, etag string) error {
	return s.write(ctx, func(tx dbtx.Tx) error {
		if err := checkEtag(ctx, tx, "dir_groups", g.ID, etag, "group"); err != nil {
			return err
		}
		if err := checkMembers(ctx, tx, g); err != nil {
			return err
		}
		return s.audited(ctx, tx, auditGroup, g.ID, func() error {
			if err := putGroupRow(ctx, tx, g); err != nil {
				return err
			}
			return putMembers(ctx, tx, g)
		})
	})
}

// DeleteGroup implements access.Store.
func (s *Store) DeleteGroup(ctx context.Context, id, etag string) error {
	return s.del(ctx, "dir_groups", "group", auditGroup, id, etag)
}

// ---- applications ----

func putApp(ctx context.Context, tx dbtx.Tx, a *access.Application) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO applications (id, display_name, create_ns, update_ns, etag) VALUES (?,?,?,?,?)
		ON CONFLICT (id) DO UPDATE SET display_name = excluded.display_name, update_ns = excluded.update_ns, etag = excluded.etag`,
		a.ID, a.DisplayName, ns(a.CreateTime), ns(a.UpdateTime), a.Etag)
	return err
}

// CreateApplication implements access.Store.
func (s *Store) CreateApplication(ctx context.Context, a *access.Application) error {
	return s.write(ctx, func(tx dbtx.Tx) error {
		ok, err := exists(ctx, tx, "applications", a.ID)
		if err != nil {
			return err
		}
		if ok {
			return fmt.Errorf("%w: application %q", access.ErrAlreadyExists, a.ID)
		}
		return s.audited(ctx, tx, auditApplication, a.ID, func() error { return putApp(ctx, tx, a) })
	})
}

// appCols are the applications columns scanApp reads.
const appCols = `id, display_name, create_ns, update_ns, etag`

func scanApp(sc interface{ Scan(...any) error }) (*access.Application, error) {
	var a access.Application
	var c, u int64
	if err := sc.Scan(&a.ID, &a.DisplayName, &c, &u, &a.Etag); err != nil {
		return nil, err
	}
	a.CreateTime, a.UpdateTime = fromNS(c), fromNS(u)
	return &a, nil
}

// GetApplication implements access.Store.
func (s *Store) GetApplication(ctx context.Context, id string) (*access.Application, error) {
	a, err := scanApp(s.read().QueryRowContext(ctx, `SELECT `+appCols+` FROM applications WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: application %q", access.ErrNotFound, id)
	}
	return a, err
}

// ListApplications implements access.Store.
func (s *Store) ListApplications(ctx context.Context, token string, limit int) ([]*access.Application, string, error) {
	return page(ctx, s.read(), `SELECT `+appCols+` FROM applications WHERE id > ? ORDER BY id LIMIT ?`, token, limit,
		func(r *sql.Rows) (*access.Application, string, error) {
			a, err := scanApp(r)
			if err != nil {
				return nil, "", err
			}
			return a, a.ID, nil
		})
}

// UpdateApplication implements access.Store.
func (s *Store) UpdateApplication(ctx context.Context, a *access.Application, etag string) error {
	return s.write(ctx, func(tx dbtx.Tx) error {
		if err := checkEtag(ctx, tx, "applications", a.ID, etag, "application"); err != nil {
			return err
		}
		return s.audited(ctx, tx, auditApplication, a.ID, func() error { return putApp(ctx, tx, a) })
	})
}

// DeleteApplication implements access.Store.
func (s *Store) DeleteApplication(ctx context.Context, id, etag string) error {
	return s.del(ctx, "applications", "application", auditApplication, id, etag)
}

// ---- import and load ----

const importBatch = 5000

// ImportDirectory implements access.Store.
func (s *Store) ImportDirectory(ctx context.Context, d *access.Directory) error {
	// Each batch commits with one audit event naming what it wrote (the ids, not
	// whole resources: an import may hold hundreds of thousands).
	step := 0
	batches := func(n int, fn func(tx dbtx.Tx, i int) error, id func(i int) string) error {
		step++
		kind := [...]string{"", "users", "applications", "groups", "group_members"}[step]
		for lo := 0; lo < n; lo += importBatch {
			hi := min(n, lo+importBatch)
			err := s.write(ctx, func(tx dbtx.Tx) error {
				ids := make([]string, 0, hi-lo)
				for i := lo; i < hi; i++ {
					if err := fn(tx, i); err != nil {
						return err
					}
					ids = append(ids, id(i))
				}
				return s.appendAudit(ctx, tx, audit.Change{
					ResourceType: auditImport, ResourceID: fmt.Sprintf("%s/%d-%d", kind, lo, hi-1),
					After: map[string]any{"kind": kind, "ids": ids},
				})
			})
			if err != nil {
				return err
			}
		}
		return nil
	}
	groupID := func(i int) string { return d.Groups[i].ID }
	// An import may move external ids between the users it replaces (a swap): the
	// id is taken from a user that the import also writes (who gets its new one on
	// its turn); one held by a user outside the import is a clash.
	imported := make(map[string]bool, len(d.Users))
	for _, u := range d.Users {
		imported[u.ID] = true
	}
	putImported := func(tx dbtx.Tx, i int) error {
		u := d.Users[i]
		if u.ExternalID != "" {
			var holder string
			err := tx.QueryRowContext(ctx, `SELECT id FROM users WHERE external_id = ? AND id <> ?`, u.ExternalID, u.ID).Scan(&holder)
			switch {
			case errors.Is(err, sql.ErrNoRows):
			case err != nil:
				return err
			case imported[holder]:
				if _, err := tx.ExecContext(ctx, `UPDATE users SET external_id = '' WHERE id = ?`, holder); err != nil {
					return err
				}
			}
		}
		return putUser(ctx, tx, u)
	}
	if err := batches(len(d.Users), putImported, func(i int) string { return d.Users[i].ID }); err != nil {
		return err
	}
	if err := batches(len(d.Applications), func(tx dbtx.Tx, i int) error { return putApp(ctx, tx, d.Applications[i]) },
		func(i int) string { return d.Applications[i].ID }); err != nil {
		return err
	}
	if err := batches(len(d.Groups), func(tx dbtx.Tx, i int) error { return putGroupRow(ctx, tx, d.Groups[i]) }, groupID); err != nil {
		return err
	}
	return batches(len(d.Groups), func(tx dbtx.Tx, i int) error {
		if err := checkMembers(ctx, tx, d.Groups[i]); err != nil {
			return err
		}
		return putMembers(ctx, tx, d.Groups[i])
	}, groupID)
}

// LoadDirectory implements access.Store.
func (s *Store) LoadDirectory(ctx context.Context) (*access.Directory, error) {
	db := s.read()
	d := &access.Directory{}
	var err error
	if d.Users, err = queryAll(ctx, db, `SELECT `+userCols+` FROM users ORDER BY id`, scanUser); err != nil {
		return nil, err
	}
	if d.Applications, err = queryAll(ctx, db, `SELECT `+appCols+` FROM applications ORDER BY id`, scanApp); err != nil {
		return nil, err
	}
	if d.Groups, err = queryAll(ctx, db, `SELECT `+groupCols+` FROM dir_groups ORDER BY id`, scanGroup); err != nil {
		return nil, err
	}
	byID := make(map[string]*access.Group, len(d.Groups))
	for _, g := range d.Groups {
		byID[g.ID] = g
	}
	for _, q := range []struct {
		sql  string
		user bool
	}{{`SELECT group_id, user_id FROM group_users ORDER BY group_id, user_id`, true}, {`SELECT group_id, member_id FROM group_groups ORDER BY group_id, member_id`, false}} {
		rows, err := db.QueryContext(ctx, q.sql)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var gid, mid string
			if err := rows.Scan(&gid, &mid); err != nil {
				rows.Close()
				return nil, err
			}
			if g := byID[gid]; g != nil {
				if q.user {
					g.MemberUserIDs = append(g.MemberUserIDs, mid)
				} else {
					g.MemberGroupIDs = append(g.MemberGroupIDs, mid)
				}
			}
		}
		rows.Close()
		if rows.Err() != nil {
			return nil, rows.Err()
		}
	}
	return d, nil
}

// ---- policies ----

func putPolicy(ctx context.Context, tx dbtx.Tx, p *access.Policy) error {
	body, err := json.Marshal(p)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO policies (id, state, body, create_ns, update_ns, etag) VALUES (?,?,?,?,?,?)
		ON CONFLICT (id) DO UPDATE SET state = excluded.state, body = excluded.body, update_ns = excluded.update_ns, etag = excluded.etag`,
		p.ID, int32(p.State), string(body), ns(p.CreateTime), ns(p.UpdateTime), p.Etag)
	return err
}

func scanPolicy(sc interface{ Scan(...any) error }) (*access.Policy, error) {
	var body string
	var c, u int64
	var etag string
	if err := sc.Scan(&body, &c, &u, &etag); err != nil {
		return nil, err
	}
	var p access.Policy
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		return nil, fmt.Errorf("decode policy: %w", err)
	}
	p.CreateTime, p.UpdateTime, p.Etag = fromNS(c), fromNS(u), etag
	return &p, nil
}

// CreatePolicy implements access.Store.
func (s *Store) CreatePolicy(ctx context.Context, p *access.Policy) error {
	return s.write(ctx, func(tx dbtx.Tx) error {
		ok, err := exists(ctx, tx, "policies", p.ID)
		if err != nil {
			return err
		}
		if ok {
			return fmt.Errorf("%w: policy %q", access.ErrAlreadyExists, p.ID)
		}
		return s.audited(ctx, tx, auditPolicy, p.ID, func() error { return putPolicy(ctx, tx, p) })
	})
}

// GetPolicy implements access.Store.
func (s *Store) GetPolicy(ctx context.Context, id string) (*access.Policy, error) {
	p, err := scanPolicy(s.read().QueryRowContext(ctx, `SELECT body, create_ns, update_ns, etag FROM policies WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: policy %q", access.ErrNotFound, id)
	}
	return p, err
}

// ListPolicies implements access.Store.
func (s *Store) ListPolicies(ctx context.Context, state access.PolicyState, token string, limit int) ([]*access.Policy, string, error) {
	return page(ctx, s.read(), `SELECT body, create_ns, update_ns, etag, id FROM policies WHERE (? = 0 OR state = ?) AND id > ? ORDER BY id LIMIT ?`, token, limit,
		func(r *sql.Rows) (*access.Policy, string, error) {
			var body, etag, id string
			var c, u int64
			if err := r.Scan(&body, &c, &u, &etag, &id); err != nil {
				return nil, "", err
			}
			p, err := scanPolicy(rowOf{body, c, u, etag})
			return p, id, err
		}, int32(state), int32(state))
}

type rowOf struct {
	body string
	c, u int64
	etag string
}

func (r rowOf) Scan(dst ...any) error {
	*dst[0].(*string), *dst[1].(*int64), *dst[2].(*int64), *dst[3].(*string) = r.body, r.c, r.u, r.etag
	return nil
}

// UpdatePolicy implements access.Store.
func (s *Store) UpdatePolicy(ctx context.Context, p *access.Policy, etag string) error {
	return s.write(ctx, func(tx dbtx.Tx) error {
		if err := checkEtag(ctx, tx, "policies", p.ID, etag, "policy"); err != nil {
			return err
		}
		return s.audited(ctx, tx, auditPolicy, p.ID, func() error { return putPolicy(ctx, tx, p) })
	})
}

// DeletePolicy implements access.Store.
func (s *Store) DeletePolicy(ctx context.Context, id, etag string) error {
	return s.del(ctx, "policies", "policy", auditPolicy, id, etag)
}

// LoadPolicies implements access.Store.
func (s *Store) LoadPolicies(ctx context.Context) ([]*access.Policy, error) {
	rows, err := s.read().QueryContext(ctx, `SELECT body, create_ns, update_ns, etag FROM policies ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*access.Policy
	for rows.Next() {
		p, err := scanPolicy(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// ---- compliance feed ----

type deviceDetail struct {
	AlertIDs []string               `json:"a,omitempty"`
	Settings []access.SettingReason `json:"s,omitempty"`
	Reason   string                 `json:"r,omitempty"`
	Owner    string                 `json:"o,omitempty"`
	Users    []string               `json:"u,omitempty"`
}

func putDevice(ctx context.Context, tx dbtx.Tx, d *access.DeviceCompliance) error {
	detail := ""
	if len(d.RiskAlertIDs) > 0 || len(d.Settings) > 0 || d.Reason != "" || d.OwnerUserID != "" || len(d.RegisteredUserIDs) > 0 {
		b, err := json.Marshal(deviceDetail{d.RiskAlertIDs, d.Settings, d.Reason, d.OwnerUserID, d.RegisteredUserIDs})
		if err != nil {
			return err
		}
		detail = string(b)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO device_compliance (device_id, state, risk, platform, revision, detail) VALUES (?,?,?,?,?,?)
		ON CONFLICT (device_id) DO UPDATE SET state = excluded.state, risk = excluded.risk, platform = excluded.platform,
		revision = excluded.revision, detail = excluded.detail`,
		d.DeviceID, int32(d.State), int32(d.Risk), int32(d.Platform), d.Revision, detail)
	return err
}

// FeedCursor implements access.Store.
func (s *Store) FeedCursor(ctx context.Context) (int64, bool, error) {
	var rev int64
	err := s.read().QueryRowContext(ctx, `SELECT revision FROM feed_cursor WHERE id = 1`).Scan(&rev)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	return rev, err == nil, err
}

// SaveFeedCursor implements access.Store.
func (s *Store) SaveFeedCursor(ctx context.Context, rev int64) error {
	return s.write(ctx, func(tx dbtx.Tx) error { return s.saveCursor(ctx, tx, rev) })
}

// ReplaceDevices implements access.Store.
func (s *Store) ReplaceDevices(ctx context.Context, devs []*access.DeviceCompliance, rev int64, after func()) error {
	return s.write(ctx, func(tx dbtx.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM device_compliance`); err != nil {
			return err
		}
		for _, d := range devs {
			if err := putDevice(ctx, tx, d); err != nil {
				return err
			}
		}
		if err := s.saveCursor(ctx, tx, rev); err != nil {
			return err
		}
		if err := s.noteChange(tx, changeDevices, "*"); err != nil {
			return err
		}
		if after != nil {
			tx.AfterCommit(after)
		}
		return nil
	})
}

// ApplyDevice implements access.Store.
func (s *Store) ApplyDevice(ctx context.Context, d *access.DeviceCompliance, rev int64, revs []access.Revocation, after func()) error {
	return s.write(ctx, func(tx dbtx.Tx) error {
		if d != nil {
			if err := putDevice(ctx, tx, d); err != nil {
				return err
			}
			if err := s.noteChange(tx, changeDevice, d.DeviceID); err != nil {
				return err
			}
		}
		if err := s.revoke(ctx, tx, revs); err != nil {
			return err
		}
		if err := s.saveCursor(ctx, tx, rev); err != nil {
			return err
		}
		if after != nil {
			tx.AfterCommit(after)
		}
		return nil
	})
}

// RevokeSessions implements access.Store.
func (s *Store) RevokeSessions(ctx context.Context, revs []access.Revocation, after func()) error {
	return s.write(ctx, func(tx dbtx.Tx) error {
		if err := s.revoke(ctx, tx, revs); err != nil {
			return err
		}
		if after != nil {
			tx.AfterCommit(after)
		}
		return nil
	})
}

// revoke stores revocations: each session (inserted first with its session_opened
// event when not stored yet) becomes REVOKED with a session_revoked event, unless it
// already was.
func (s *Store) revoke(ctx context.Context, tx dbtx.Tx, revs []access.Revocation) error {
	for _, r := range revs {
		if _, err := s.insertSession(ctx, tx, &r.Session, r.Session.TraceParent, r.Session.TraceState); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE sessions SET state = ?, revoke_ns = ?, revoke_reason = ? WHERE id = ? AND state = ?`,
			int32(access.SessionRevoked), ns(r.Session.RevokeTime), r.Session.RevokeReason, r.Session.ID, int32(access.SessionActive))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			continue // already revoked
		}
		sess := r.Session
		sess.State = access.SessionRevoked
		if err := s.appendEvent(tx, &access.SessionEvent{Kind: access.SessionRevokedEvent, Session: sess, ReasonCode: r.ReasonCode,
			ComplianceRevision: r.ComplianceRevision, TraceParent: r.TraceParent, TraceState: r.TraceState}); err != nil {
			return err
		}
	}
	return nil
}

// LoadDevices implements access.Store.
func (s *Store) LoadDevices(ctx context.Context, fn func(*access.DeviceCompliance)) error {
	rows, err := s.read().QueryContext(ctx, `SELECT device_id, state, risk, platform, revision, detail FROM device_compliance`)
	return scanDevices(rows, err, fn)
}

// scanDevices calls fn for each device compliance row (the rows and error of a query).
func scanDevices(rows *sql.Rows, err error, fn func(*access.DeviceCompliance)) error {
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var d access.DeviceCompliance
		var detail string
		if err := rows.Scan(&d.DeviceID, &d.State, &d.Risk, &d.Platform, &d.Revision, &detail); err != nil {
			return err
		}
		if detail != "" {
			var dd deviceDetail
			if err := json.Unmarshal([]byte(detail), &dd); err != nil {
				return fmt.Errorf("decode device %q: %w", d.DeviceID, err)
			}
			d.RiskAlertIDs, d.Settings, d.Reason = dd.AlertIDs, dd.Settings, dd.Reason
			d.OwnerUserID, d.RegisteredUserIDs = dd.Owner, dd.Users
		}
		fn(&d)
	}
	return rows.Err()
}

// ---- sessions, sign-ins, events ----

const sessionCols = `id, user_id, device_id, app_id, state, create_ns, last_access_ns, revoke_ns, revoke_reason`

func scanSession(sc interface{ Scan(...any) error }) (*access.Session, error) {
	var x access.Session
	var c, l, r int64
	if err := sc.Scan(&x.ID, &x.UserID, &x.DeviceID, &x.AppID, &x.State, &c, &l, &r, &x.RevokeReason); err != nil {
		return nil, err
	}
	x.CreateTime, x.LastAccessTime, x.RevokeTime = fromNS(c), fromNS(l), fromNS(r)
	return &x, nil
}

// insertSession stores a session not stored yet (ACTIVE) and appends its
// session_opened event; it reports whether it inserted.
func (s *Store) insertSession(ctx context.Context, tx dbtx.Tx, x *access.Session, tp, ts string) (bool, error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO sessions (`+sessionCols+`) VALUES (?,?,?,?,?,?,?,0,'') ON CONFLICT (id) DO NOTHING`,
		x.ID, x.UserID, x.DeviceID, x.AppID, int32(access.SessionActive), ns(x.CreateTime), ns(x.LastAccessTime))
	if err != nil {
		return false, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return false, nil
	}
	open := *x
	open.State, open.RevokeTime, open.RevokeReason = access.SessionActive, time.Time{}, ""
	return true, s.appendEvent(tx, &access.SessionEvent{Kind: access.SessionOpenedEvent, Session: open, TraceParent: tp, TraceState: ts})
}

// WriteBatch implements access.Store.
func (s *Store) WriteBatch(ctx context.Context, signIns []*access.SignIn, sessions []*access.Session) error {
	return s.write(ctx, func(tx dbtx.Tx) error {
		if err := writeSignIns(ctx, tx, signIns); err != nil {
			return err
		}
		if s.pg != nil && s.pg.signInChannel != "" && len(signIns) > 0 {
			// Sent at commit: wakes the sign-in followers of every replica.
			if _, err := tx.ExecContext(ctx, `SELECT pg_notify(?, '')`, s.pg.signInChannel); err != nil {
				return err
			}
		}
		for _, x := range sessions {
			ins, err := s.insertSession(ctx, tx, x, x.TraceParent, x.TraceState)
			if err != nil {
				return err
			}
			if !ins {
				if _, err := tx.ExecContext(ctx, s.touchSessionSQL(), ns(x.LastAccessTime), x.ID); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// DeleteSessions implements access.Store.
func (s *Store) DeleteSessions(ctx context.Context, ids []string) error {
	for lo := 0; lo < len(ids); lo += 500 {
		chunk := ids[lo:min(len(ids), lo+500)]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		err := s.write(ctx, func(tx dbtx.Tx) error {
			_, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE id IN (?`+strings.Repeat(",?", len(chunk)-1)+`)`, args...)
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// LoadActiveSessions implements access.Store.
func (s *Store) LoadActiveSessions(ctx context.Context) ([]*access.Session, error) {
	rows, err := s.read().QueryContext(ctx, `SELECT `+sessionCols+` FROM sessions WHERE state = ?`, int32(access.SessionActive))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*access.Session
	for rows.Next() {
		x, err := scanSession(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, rows.Err()
}

// ListSessions implements access.Store.
func (s *Store) ListSessions(ctx context.Context, f access.SessionFilter, token string, limit int) ([]*access.Session, string, error) {
	return page(ctx, s.read(), `SELECT `+sessionCols+` FROM sessions WHERE (? = '' OR user_id = ?) AND (? = '' OR device_id = ?) AND (? = 0 OR state = ?) AND id > ? ORDER BY id LIMIT ?`,
		token, limit, func(r *sql.Rows) (*access.Session, string, error) {
			x, err := scanSession(r)
			if err != nil {
				return nil, "", err
			}
			return x, x.ID, nil
		}, f.UserID, f.UserID, f.DeviceID, f.DeviceID, int32(f.State), int32(f.State))
}

func sessionProto(x *access.Session) *accessv1.Session {
	p := &accessv1.Session{SessionId: x.ID, UserId: x.UserID, DeviceId: x.DeviceID, ApplicationId: x.AppID,
		State: accessv1.SessionState(x.State), RevokeReason: x.RevokeReason}
	if !x.CreateTime.IsZero() {
		p.CreateTime = timestamppb.New(x.CreateTime)
	}
	if !x.LastAccessTime.IsZero() {
		p.LastAccessTime = timestamppb.New(x.LastAccessTime)
	}
	if !x.RevokeTime.IsZero() {
		p.RevokeTime = timestamppb.New(x.RevokeTime)
	}
	return p
}

func sessionFromProto(p *accessv1.Session) access.Session {
	x := access.Session{ID: p.GetSessionId(), UserID: p.GetUserId(), DeviceID: p.GetDeviceId(), AppID: p.GetApplicationId(),
		State: access.SessionState(p.GetState()), RevokeReason: p.GetRevokeReason()}
	if p.CreateTime != nil {
		x.CreateTime = p.CreateTime.AsTime()
	}
	if p.LastAccessTime != nil {
		x.LastAccessTime = p.LastAccessTime.AsTime()
	}
	if p.RevokeTime != nil {
		x.RevokeTime = p.RevokeTime.AsTime()
	}
	return x
}

func (s *Store) appendEvent(tx dbtx.Tx, e *access.SessionEvent) error {
	pe := &accessv1.SessionEvent{}
	typ := ""
	switch e.Kind {
	case access.SessionOpenedEvent:
		typ = "session_opened"
		pe.Payload = &accessv1.SessionEvent_SessionOpened{SessionOpened: &accessv1.SessionOpened{Session: sessionProto(&e.Session)}}
	case access.SessionRevokedEvent:
		typ = "session_revoked"
		pe.Payload = &accessv1.SessionEvent_SessionRevoked{SessionRevoked: &accessv1.SessionRevoked{Session: sessionProto(&e.Session),
			ReasonCode: e.ReasonCode, ComplianceRevision: e.ComplianceRevision}}
	}
	b, err := proto.Marshal(pe)
	if err != nil {
		return err
	}
	_, err = s.appendLog(tx, eventlog.Event{Type: typ, Key: e.Session.ID, Payload: b, TraceParent: e.TraceParent, TraceState: e.TraceState})
	return err
}

// WatchSessionEvents implements access.Store.
func (s *Store) WatchSessionEvents(ctx context.Context, start int64, onEvent func(*access.SessionEvent) error, onProgress func(int64) error) error {
	watch := s.log.Watch
	if s.pg != nil {
		watch = s.pg.log.Watch
	}
	return watch(ctx, start, func(ev eventlog.Event) error {
		var pe accessv1.SessionEvent
		if err := proto.Unmarshal(ev.Payload, &pe); err != nil {
			return fmt.Errorf("decode session event %d: %w", ev.Revision, err)
		}
		e := &access.SessionEvent{Revision: ev.Revision, Time: ev.Time, TraceParent: ev.TraceParent, TraceState: ev.TraceState}
		switch p := pe.Payload.(type) {
		case *accessv1.SessionEvent_SessionOpened:
			e.Kind, e.Session = access.SessionOpenedEvent, sessionFromProto(p.SessionOpened.GetSession())
		case *accessv1.SessionEvent_SessionRevoked:
			e.Kind, e.Session = access.SessionRevokedEvent, sessionFromProto(p.SessionRevoked.GetSession())
			e.ReasonCode, e.ComplianceRevision = p.SessionRevoked.GetReasonCode(), p.SessionRevoked.GetComplianceRevision()
		}
		return onEvent(e)
	}, onProgress)
}

// SessionRevision implements access.Store.
func (s *Store) SessionRevision() int64 {
	if s.pg != nil {
		return s.pg.log.Revision()
	}
	return s.log.Revision()
}
