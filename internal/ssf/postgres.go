package ssf

import (
	"context"
	"log/slog"

	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/dbtx"
	"github.com/condaccess/condaccess/internal/lease"
	"github.com/condaccess/condaccess/internal/pgdb"
)

// PGSchema is the PostgreSQL schema of the Shared Signals store.
const PGSchema = "ssf"

// LeaseName is the lease whose holder follows the feeds and pushes SETs.
const LeaseName = "ssf"

// pgMigrations is the SQLite schema as migrated today, in PostgreSQL types, plus the
// signing keys every replica shares (on SQLite they are files in the data directory)
// and the row every write locks. Append only.
func pgMigrations() []string {
	out := []string{`
CREATE TABLE receivers (
	name TEXT COLLATE "C" PRIMARY KEY,
	token_hash BYTEA NOT NULL UNIQUE,
	create_time BIGINT NOT NULL
);
CREATE TABLE streams (
	stream_id TEXT COLLATE "C" PRIMARY KEY,
	receiver TEXT COLLATE "C" NOT NULL REFERENCES receivers(name) ON DELETE CASCADE,
	config TEXT NOT NULL,
	status TEXT NOT NULL,
	reason TEXT NOT NULL DEFAULT '',
	create_time BIGINT NOT NULL,
	activity_time BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE excluded_subjects (
	stream_id TEXT NOT NULL REFERENCES streams(stream_id) ON DELETE CASCADE,
	subject TEXT NOT NULL,
	PRIMARY KEY (stream_id, subject)
);
CREATE TABLE outbox (
	seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	stream_id TEXT NOT NULL REFERENCES streams(stream_id) ON DELETE CASCADE,
	jti TEXT NOT NULL UNIQUE,
	token TEXT NOT NULL,
	attempts INTEGER NOT NULL DEFAULT 0,
	control INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_by_stream ON outbox(stream_id, seq);
CREATE TABLE cursors (
	feed TEXT PRIMARY KEY,
	revision BIGINT NOT NULL
);
CREATE TABLE device_owners (
	device_id TEXT PRIMARY KEY,
	user_id TEXT NOT NULL
);
CREATE TABLE received (
	iss TEXT NOT NULL,
	jti TEXT NOT NULL,
	receive_time BIGINT NOT NULL,
	PRIMARY KEY (iss, jti)
);
-- slot: current (signs) or previous (still published after a rotation).
CREATE TABLE signing_keys (
	slot TEXT PRIMARY KEY CHECK (slot IN ('current', 'previous')),
	pem BYTEA NOT NULL
);
CREATE TABLE write_lock (id INTEGER PRIMARY KEY CHECK (id = 1));
INSERT INTO write_lock(id) VALUES (1);
`}
	out = append(out, audit.PGMigrations("")...)
	return append(out, lease.PGMigrations()...)
}

// OpenPGStore opens the store in schema "ssf" of the PostgreSQL database at url,
// creating or migrating it; any number of replicas may open it at once.
func OpenPGStore(ctx context.Context, url string, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.Default()
	}
	db, err := pgdb.Open(ctx, pgdb.Options{URL: url, Schema: PGSchema, Migrations: pgMigrations(), Logger: logger})
	if err != nil {
		return nil, err
	}
	opts := audit.Options{Source: "ssf", Logger: logger}
	w := audit.NewPGWriter(opts)
	return &Store{
		read: db.Read(),
		writeTx: func(ctx context.Context, fn func(tx dbtx.Tx) error) error {
			return db.Write(ctx, func(tx *pgdb.Tx) error { return fn(tx) })
		},
		appendAudit: w.Append,
		close:       db.Close,
		audit:       audit.NewPG(db, opts),
		pg:          db,
	}, nil
}

// Lease returns the lease (in the store's schema) whose holder runs the feeds and
// push delivery; nil on SQLite, where the one process always leads.
func (s *Store) Lease(opts lease.PGOptions) *lease.PG {
	if s.pg == nil {
		return nil
	}
	if opts.Name == "" {
		opts.Name = LeaseName
	}
	return lease.NewPG(s.pg.Read(), opts)
}
