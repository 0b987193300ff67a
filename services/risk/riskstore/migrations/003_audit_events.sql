CREATE TABLE audit_events (
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
	CREATE INDEX audit_events_time ON audit_events (time_unix_nano, id);