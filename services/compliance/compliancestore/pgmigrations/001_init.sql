-- The compliance store on PostgreSQL: the SQLite schema (both of its migrations) in
-- PostgreSQL types. Keys compare byte-wise (COLLATE "C"), as in SQLite, so that
-- listings page in the same order whatever the database's locale.
CREATE TABLE devices (
	device_id     TEXT COLLATE "C" PRIMARY KEY,
	platform      INTEGER NOT NULL,
	owner_user_id TEXT COLLATE "C" NOT NULL,
	retired       BOOLEAN NOT NULL,
	data          BYTEA NOT NULL
);
CREATE INDEX devices_owner ON devices (owner_user_id, device_id);
CREATE TABLE device_groups (
	grp       TEXT COLLATE "C" NOT NULL,
	device_id TEXT COLLATE "C" NOT NULL,
	PRIMARY KEY (grp, device_id)
);
CREATE INDEX device_groups_device ON device_groups (device_id);
CREATE TABLE policies (
	policy_id TEXT COLLATE "C" PRIMARY KEY,
	data      BYTEA NOT NULL
);
CREATE TABLE settings (
	id   INTEGER PRIMARY KEY CHECK (id = 1),
	data BYTEA NOT NULL
);
CREATE TABLE device_risk (
	device_id TEXT COLLATE "C" PRIMARY KEY,
	data      BYTEA NOT NULL
);
CREATE TABLE compliance (
	device_id    TEXT COLLATE "C" PRIMARY KEY,
	state        INTEGER NOT NULL,
	next_eval_ns BIGINT,
	data         BYTEA NOT NULL
);
CREATE INDEX compliance_state ON compliance (state, device_id);
CREATE INDEX compliance_next_eval ON compliance (next_eval_ns) WHERE next_eval_ns IS NOT NULL;
CREATE TABLE exclusions (
	exclusion_id TEXT COLLATE "C" PRIMARY KEY,
	device_id    TEXT COLLATE "C" NOT NULL,
	create_ns    BIGINT NOT NULL,
	ended        BOOLEAN NOT NULL,
	data         BYTEA NOT NULL
);
CREATE INDEX exclusions_device ON exclusions (device_id, ended, create_ns);
CREATE INDEX exclusions_time ON exclusions (create_ns DESC, exclusion_id DESC);
CREATE TABLE cursors (
	name     TEXT PRIMARY KEY,
	revision BIGINT NOT NULL
);
CREATE TABLE sweep (
	id   INTEGER PRIMARY KEY CHECK (id = 1),
	data BYTEA NOT NULL
);
CREATE TABLE device_identities (
	device_id TEXT COLLATE "C" PRIMARY KEY,
	data      BYTEA NOT NULL
);
CREATE TABLE enrollment_tokens (
	token_hash TEXT PRIMARY KEY,
	device_id  TEXT NOT NULL,
	expire_ns  BIGINT NOT NULL
);
-- The device CA every replica signs device certificates with (one row): the
-- certificate and its private key, PEM. Only the compliance schema holds the key.
CREATE TABLE device_ca (
	id       INTEGER PRIMARY KEY CHECK (id = 1),
	cert_pem BYTEA NOT NULL,
	key_pem  BYTEA NOT NULL
);
-- When the risk consumer's leader last heard from the risk feed (event, progress or
-- resync), so that every replica stamps risk_as_of with the leader's view.
CREATE TABLE feed_contact (
	name       TEXT PRIMARY KEY,
	contact_ns BIGINT NOT NULL
);
