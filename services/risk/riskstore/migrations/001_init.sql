-- Alerts: the JSON document in data is the source of truth; the columns index it.
CREATE TABLE alerts (
	alert_id     TEXT PRIMARY KEY,
	device_id    TEXT NOT NULL,
	severity     INTEGER NOT NULL,
	status       INTEGER NOT NULL,
	detect_ns    INTEGER NOT NULL,
	content_hash TEXT NOT NULL,
	data         BLOB NOT NULL
);
CREATE INDEX alerts_by_detect ON alerts (detect_ns DESC, alert_id DESC);
CREATE INDEX alerts_by_device ON alerts (device_id, detect_ns DESC, alert_id DESC);
-- The alerts behind a device's risk: active (not resolved) and above informational.
CREATE INDEX alerts_active ON alerts (device_id) WHERE status != 3 AND severity > 1;

-- Every version of every device's risk, keyed by the event revision that produced it:
-- the latest version is the current risk, level_changed rows are the history, and the
-- latest version at or before a revision R is the device's risk as of R.
CREATE TABLE device_risk_versions (
	device_id      TEXT NOT NULL,
	revision       INTEGER NOT NULL,
	level          INTEGER NOT NULL,
	previous_level INTEGER NOT NULL,
	level_changed  INTEGER NOT NULL,
	cause_alert_id TEXT NOT NULL,
	change_ns      INTEGER NOT NULL,
	update_ns      INTEGER NOT NULL,
	active         BLOB NOT NULL,
	PRIMARY KEY (device_id, revision)
) WITHOUT ROWID;
