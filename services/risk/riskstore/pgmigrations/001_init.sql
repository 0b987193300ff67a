-- The risk store on PostgreSQL: the SQLite schema as migrated through
-- 002_alerts_by_device_covering.sql. Keys compare byte-wise (COLLATE "C"), as in
-- SQLite, so that listings page in the same order whatever the database's locale.
CREATE TABLE alerts (
	alert_id     TEXT COLLATE "C" PRIMARY KEY,
	device_id    TEXT COLLATE "C" NOT NULL,
	severity     INTEGER NOT NULL,
	status       INTEGER NOT NULL,
	detect_ns    BIGINT NOT NULL,
	from_rev     BIGINT NOT NULL,
	to_rev       BIGINT,
	content_hash TEXT NOT NULL,
	data         BYTEA NOT NULL
);
CREATE INDEX alerts_by_detect ON alerts (detect_ns DESC, alert_id DESC);
CREATE INDEX alerts_by_device ON alerts (device_id, detect_ns DESC, alert_id DESC) INCLUDE (severity, to_rev, from_rev);

CREATE TABLE device_risk_versions (
	device_id      TEXT COLLATE "C" NOT NULL,
	revision       BIGINT NOT NULL,
	level          INTEGER NOT NULL,
	previous_level INTEGER NOT NULL,
	cause_alert_id TEXT NOT NULL,
	change_ns      BIGINT NOT NULL,
	PRIMARY KEY (device_id, revision)
);
