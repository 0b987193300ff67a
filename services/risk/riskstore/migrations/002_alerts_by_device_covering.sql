-- One index by device instead of two: alerts_by_device also carries severity, to_rev
-- and from_rev, so a device's active alerts (to_rev IS NULL AND severity > 1) and its
-- alerts as of a revision are read from the index alone, and a new alert writes one
-- random index page keyed by device instead of two (alerts_active is dropped).
DROP INDEX alerts_active;
DROP INDEX alerts_by_device;
CREATE INDEX alerts_by_device ON alerts (device_id, detect_ns DESC, alert_id DESC, severity, to_rev, from_rev);
