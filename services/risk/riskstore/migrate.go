package riskstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/condaccess/condaccess/internal/pgdb"
)

// ErrTargetNotEmpty: CopyToPG's target already holds risk data (alerts, levels,
// events or audit events); nothing was copied.
var ErrTargetNotEmpty = errors.New("riskstore: the PostgreSQL risk schema is not empty")

// CopyCounts is what CopyToPG copied (and verified in the target).
type CopyCounts struct {
	Alerts, DeviceRiskVersions, Events, AuditEvents int64
	// Revision is the log's head, CompactedBefore its compaction point (both kept).
	Revision, CompactedBefore int64
}

// CopyToPG copies the SQLite store src into the empty PostgreSQL store dst: alerts,
// level versions, the retained events with their revisions, the revision counter and
// compaction point, and the audit events (renumbered, in order). It reads src in one
// read transaction (one snapshot; stop the service first so that nothing is written
// after it) and writes dst in one transaction, in which it compares every table's
// count with the source before committing: a failure leaves dst empty. A watcher
// resuming at an old revision against dst gets exactly the events it missed.
func CopyToPG(ctx context.Context, src *Store, dst *PGStore) (CopyCounts, error) {
	var c CopyCounts
	rtx, err := src.db.Read().BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return c, fmt.Errorf("riskstore: copy: read source: %w", err)
	}
	defer rtx.Rollback()
	if err := rtx.QueryRowContext(ctx, `SELECT COALESCE((SELECT MAX(revision) FROM `+eventTable+`), 0), compacted_before FROM `+eventTable+`_state WHERE id = 1`).
		Scan(&c.Revision, &c.CompactedBefore); err != nil {
		return c, fmt.Errorf("riskstore: copy: read source revision: %w", err)
	}
	c.Revision = max(c.Revision, c.CompactedBefore)
	err = dst.db.Write(ctx, func(tx *pgdb.Tx) error {
		var rows, head int64
		if err := tx.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM alerts) + (SELECT count(*) FROM device_risk_versions) +
			(SELECT count(*) FROM `+eventTable+`) + (SELECT count(*) FROM audit_events), (SELECT head + compacted_before FROM `+eventTable+`_state WHERE id = 1)`).
			Scan(&rows, &head); err != nil {
			return err
		}
		if rows != 0 || head != 0 {
			return fmt.Errorf("%w (%d rows, head revision %d): copy into a new database or schema", ErrTargetNotEmpty, rows, head)
		}
		var err error
		if c.Alerts, err = copyRows(ctx, rtx, tx, `SELECT alert_id, device_id, severity, status, detect_ns, from_rev, to_rev, content_hash, data FROM alerts ORDER BY alert_id`,
			`INSERT INTO alerts (alert_id, device_id, severity, status, detect_ns, from_rev, to_rev, content_hash, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, COALESCE($9, ''::bytea))`,
			func() []any {
				return []any{new(string), new(string), new(int64), new(int64), new(int64), new(int64), new(sql.NullInt64), new(string), new([]byte)}
			}); err != nil {
			return fmt.Errorf("alerts: %w", err)
		}
		if c.DeviceRiskVersions, err = copyRows(ctx, rtx, tx, `SELECT `+riskCols+` FROM device_risk_versions ORDER BY device_id, revision`,
			`INSERT INTO device_risk_versions (`+riskCols+`) VALUES ($1, $2, $3, $4, $5, $6)`,
			func() []any {
				return []any{new(string), new(int64), new(int64), new(int64), new(string), new(int64)}
			}); err != nil {
			return fmt.Errorf("device_risk_versions: %w", err)
		}
		if c.Events, err = copyRows(ctx, rtx, tx, `SELECT revision, type, key, payload, traceparent, tracestate, time_unix_nano FROM `+eventTable+` ORDER BY revision`,
			`INSERT INTO `+eventTable+` (revision, type, key, payload, traceparent, tracestate, time_unix_nano) VALUES ($1, $2, $3, COALESCE($4, ''::bytea), $5, $6, $7)`,
			func() []any {
				return []any{new(int64), new(string), new(string), new([]byte), new(string), new(string), new(int64)}
			}); err != nil {
			return fmt.Errorf("events: %w", err)
		}
		if c.AuditEvents, err = copyRows(ctx, rtx, tx, `SELECT time_unix_nano, subject, roles, method, peer, trace_id, action, resource_type, resource_id, before_json, after_json, etag FROM audit_events ORDER BY id`,
			`INSERT INTO audit_events (time_unix_nano, subject, roles, method, peer, trace_id, action, resource_type, resource_id, before_json, after_json, etag) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
			func() []any {
				return []any{new(int64), new(string), new(string), new(string), new(string), new(string), new(string), new(string), new(string), new([]byte), new([]byte), new(string)}
			}); err != nil {
			return fmt.Errorf("audit_events: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE `+eventTable+`_state SET head = $1, compacted_before = $2 WHERE id = 1`, c.Revision, c.CompactedBefore); err != nil {
			return err
		}
		// Verify: the target's counts, as this transaction will commit them.
		for _, v := range []struct {
			table string
			want  int64
		}{{"alerts", c.Alerts}, {"device_risk_versions", c.DeviceRiskVersions}, {eventTable, c.Events}, {"audit_events", c.AuditEvents}} {
			var src, dst int64
			if err := rtx.QueryRowContext(ctx, `SELECT count(*) FROM `+v.table).Scan(&src); err != nil {
				return err
			}
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM `+v.table).Scan(&dst); err != nil {
				return err
			}
			if src != v.want || dst != v.want {
				return fmt.Errorf("verify %s: source has %d rows, target %d, copied %d", v.table, src, dst, v.want)
			}
		}
		return nil
	})
	if err != nil {
		return CopyCounts{}, fmt.Errorf("riskstore: copy to PostgreSQL: %w", err)
	}
	if _, err := dst.log.Head(ctx); err != nil {
		return c, err
	}
	return c, nil
}

// copyRows copies the rows of query (on src) with insert (on dst); dest makes the
// scan destinations of one row, whose values are passed to insert (an empty blob may
// scan as nil, which insert must COALESCE where the column is NOT NULL).
func copyRows(ctx context.Context, src *sql.Tx, dst *pgdb.Tx, query, insert string, dest func() []any) (int64, error) {
	rows, err := src.QueryContext(ctx, query)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var n int64
	for rows.Next() {
		d := dest()
		if err := rows.Scan(d...); err != nil {
			return n, err
		}
		args := make([]any, len(d))
		for i, p := range d {
			switch p := p.(type) {
			case *string:
				args[i] = *p
			case *int64:
				args[i] = *p
			case *[]byte:
				args[i] = *p
			case *sql.NullInt64:
				args[i] = *p
			}
		}
		if _, err := dst.ExecContext(ctx, insert, args...); err != nil {
			return n, err
		}
		n++
	}
	return n, rows.Err()
}
