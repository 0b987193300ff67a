-- The access store on PostgreSQL: the SQLite schema as migrated today (sign-ins in
-- signin_batches only), in PostgreSQL types. Keys compare byte-wise (COLLATE "C"),
-- as in SQLite, so that listings page in the same order whatever the locale.
CREATE TABLE users (
	id TEXT COLLATE "C" PRIMARY KEY, display_name TEXT NOT NULL, disabled INTEGER NOT NULL,
	emergency INTEGER NOT NULL, create_ns BIGINT NOT NULL, update_ns BIGINT NOT NULL, etag TEXT NOT NULL
);
CREATE TABLE dir_groups (
	id TEXT COLLATE "C" PRIMARY KEY, display_name TEXT NOT NULL,
	create_ns BIGINT NOT NULL, update_ns BIGINT NOT NULL, etag TEXT NOT NULL
);
CREATE TABLE group_users (
	group_id TEXT COLLATE "C" NOT NULL REFERENCES dir_groups(id) ON DELETE CASCADE,
	user_id TEXT COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_users_user ON group_users(user_id, group_id);
CREATE TABLE group_groups (
	group_id TEXT COLLATE "C" NOT NULL REFERENCES dir_groups(id) ON DELETE CASCADE,
	member_id TEXT COLLATE "C" NOT NULL REFERENCES dir_groups(id) ON DELETE CASCADE,
	PRIMARY KEY (group_id, member_id)
);
CREATE INDEX group_groups_member ON group_groups(member_id, group_id);
CREATE TABLE applications (
	id TEXT COLLATE "C" PRIMARY KEY, display_name TEXT NOT NULL,
	create_ns BIGINT NOT NULL, update_ns BIGINT NOT NULL, etag TEXT NOT NULL
);
CREATE TABLE policies (
	id TEXT COLLATE "C" PRIMARY KEY, state INTEGER NOT NULL, body TEXT NOT NULL,
	create_ns BIGINT NOT NULL, update_ns BIGINT NOT NULL, etag TEXT NOT NULL
);
CREATE TABLE device_compliance (
	device_id TEXT COLLATE "C" PRIMARY KEY, state INTEGER NOT NULL, risk INTEGER NOT NULL,
	platform INTEGER NOT NULL, revision BIGINT NOT NULL, detail TEXT NOT NULL
);
-- contact_ns: when the consumer leader last saved the cursor (an event, a progress
-- message or a resync), risk_as_of_ns: the compliance service's risk_as_of it had
-- last heard (0: unknown): the other replicas judge the feed's staleness by them.
CREATE TABLE feed_cursor (
	id INTEGER PRIMARY KEY CHECK (id = 1), revision BIGINT NOT NULL,
	contact_ns BIGINT NOT NULL DEFAULT 0, risk_as_of_ns BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE sessions (
	id TEXT COLLATE "C" PRIMARY KEY, user_id TEXT COLLATE "C" NOT NULL, device_id TEXT COLLATE "C" NOT NULL,
	app_id TEXT COLLATE "C" NOT NULL, state INTEGER NOT NULL, create_ns BIGINT NOT NULL, last_access_ns BIGINT NOT NULL,
	revoke_ns BIGINT NOT NULL, revoke_reason TEXT NOT NULL
);
CREATE INDEX sessions_device ON sessions(device_id);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE INDEX sessions_state ON sessions(state);
CREATE TABLE signin_batches (
	first_key BIGINT PRIMARY KEY,
	last_key BIGINT NOT NULL,
	n INTEGER NOT NULL,
	filter BYTEA NOT NULL,
	body BYTEA NOT NULL
);
-- Keys every replica shares (the end user's page references are sealed with one).
CREATE TABLE shared_keys (name TEXT COLLATE "C" PRIMARY KEY, value BYTEA NOT NULL);
