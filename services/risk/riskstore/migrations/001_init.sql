-- Alerts: the JSON document in data is the source of truth; the columns index it.
-- from_rev is the revision of the event that reported the alert and to_rev the one
-- that resolved it (NULL while unresolved), so an alert is active as of revision R
-- when from_rev <= R < to_rev: listings read a consistent past state.
CREATE TABLE alerts (
	alert_id     TEXT PRIMARY KEY,
	device_id    TEXT NOT NULL,
	severity     INTEGER NOT NULL,
	status       INTEGER NOT NULL,
	detect_ns    INTEGER NOT NULL,
	from_rev     INTEGER NOT NULL,
	to_rev       INTEGER,
	content_hash TEXT NOT NULL,
	data         BLOB NOT NULL
);
CREATE INDEX alerts_by_detect ON alerts (detect_ns DESC, alert_id DESC);
CREATE INDEX alerts_by_device ON alerts (device_id, detect_ns DESC, alert_id DESC);
-- The alerts behind a device's risk now: unresolved and above informational.
CREATE INDEX alerts_active ON alerts (device_id) WHERE to_rev IS NULL AND severity > 1;

-- Every change of every device's risk level, keyed by the revision of its
-- device_risk_changed event: the latest row is the current level, all rows are the
-- history, and the latest row at or before R is the level as of R.
CREATE TABLE device_risk_versions (
	device_id      TEXT NOT NULL,
	revision       INTEGER NOT NULL,
	level          INTEGER NOT NULL,
	previous_level INTEGER NOT NULL,
	cause_alert_id TEXT NOT NULL,
	change_ns      INTEGER NOT NULL,
	PRIMARY KEY (device_id, revision)
) WITHOUT ROWID;
