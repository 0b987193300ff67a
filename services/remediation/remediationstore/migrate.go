package remediationstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/condaccess/condaccess/internal/pgdb"
)

// ErrTargetNotEmpty: CopyToPG's target already holds remediation data; nothing was copied.
var ErrTargetNotEmpty = errors.New("remediationstore: the PostgreSQL remediation schema is not empty")

// CopyCounts is what CopyToPG copied (and verified in the target), by table.
type CopyCounts struct {
	Rows map[string]int64
	// Revision is the log's head, CompactedBefore its compaction point (both kept).
	Revision, CompactedBefore int64
}

// copiedTables are the store's tables in the order CopyToPG copies them, with
// their columns and the order rows are read in (seq keeps listing order and ids).
var copiedTables = []struct {
	name, cols, order string
}{
	{"investigations", "seq, investigation_id, device_id, state, open, data", "seq"},
	{"actions", "seq, action_id, investigation_id, device_id, state, due_unix_nano, data", "seq"},
	{"alert_links", "alert_id, investigation_id", "alert_id"},
	{"automation_levels", "device_group, level, update_unix_nano, updated_by", "device_group"},
	{"agents", "device_id, data", "device_id"},
	{"pending_resolutions", "seq, alert_id, investigation_id, traceparent, tracestate, create_unix_nano", "seq"},
	{"consumer_cursor", "name, revision", "name"},
	{eventTable, "revision, type, key, payload, traceparent, tracestate, time_unix_nano", "revision"},
	{"audit_events", "time_unix_nano, subject, roles, method, peer, trace_id, action, resource_type, resource_id, before_json, after_json, etag", "id"},
}

// identities are the tables whose seq column PostgreSQL numbers: after the copy
// their sequences continue after the highest copied seq.
var identities = []string{"investigations", "actions", "pending_resolutions"}

// CopyToPG copies the SQLite store src into the empty PostgreSQL store dst: every
// table (investigations, actions, links, automation levels, agents, pending
// resolutions, the risk event cursor), the retained events with their revisions,
// the revision counter and compaction point, and the audit events (renumbered, in
// order). It reads src in one read transaction (one snapshot: stop the service
// first) and writes dst in one transaction, in which it compares every table's
// count with the source before committing: a failure leaves dst empty. A watcher
// resuming at an old revision against dst gets exactly the events it missed, and
// the consumer resumes the risk feed at the copied cursor.
func CopyToPG(ctx context.Context, src *Store, dst *PGStore) (CopyCounts, error) {
	c := CopyCounts{Rows: map[string]int64{}}
	rtx, err := src.db.Read().BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return c, fmt.Errorf("remediationstore: copy: read source: %w", err)
	}
	defer rtx.Rollback()
	if err := rtx.QueryRowContext(ctx, `SELECT COALESCE((SELECT MAX(revision) FROM `+eventTable+`), 0), compacted_before FROM `+eventTable+`_state WHERE id = 1`).
		Scan(&c.Revision, &c.CompactedBefore); err != nil {
		return c, fmt.Errorf("remediationstore: copy: read source revision: %w", err)
	}
	c.Revision = max(c.Revision, c.CompactedBefore)
	err = dst.db.Write(ctx, func(tx *pgdb.Tx) error {
		counts := make([]string, len(copiedTables))
		for i, t := range copiedTables {
			counts[i] = `(SELECT count(*) FROM ` + t.name + `)`
		}
		var rows, head int64
		if err := tx.QueryRowContext(ctx, `SELECT `+strings.Join(counts, " + ")+`, (SELECT head + compacted_before FROM `+eventTable+`_state WHERE id = 1)`).
			Scan(&rows, &head); err != nil {
			return err
		}
		if rows != 0 || head != 0 {
			return fmt.Errorf("%w (%d rows, head revision %d): copy into a new database or schema", ErrTargetNotEmpty, rows, head)
		}
		for _, t := range copiedTables {
			n, err := copyTable(ctx, rtx, tx, t.name, t.cols, t.order)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			c.Rows[t.name] = n
		}
		if _, err := tx.ExecContext(ctx, `UPDATE `+eventTable+`_state SET head = $1, compacted_before = $2 WHERE id = 1`, c.Revision, c.CompactedBefore); err != nil {
			return err
		}
		for _, t := range identities {
			if _, err := tx.ExecContext(ctx, `SELECT setval(pg_get_serial_sequence($1, 'seq'), COALESCE((SELECT MAX(seq) FROM `+t+`), 0) + 1, false)`, t); err != nil {
				return fmt.Errorf("%s: continue its seq: %w", t, err)
			}
		}
		// Verify: the target's counts, as this transaction will commit them.
		for _, t := range copiedTables {
			var s, d int64
			if err := rtx.QueryRowContext(ctx, `SELECT count(*) FROM `+t.name).Scan(&s); err != nil {
				return err
			}
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM `+t.name).Scan(&d); err != nil {
				return err
			}
			if s != c.Rows[t.name] || d != c.Rows[t.name] {
				return fmt.Errorf("verify %s: source has %d rows, target %d, copied %d", t.name, s, d, c.Rows[t.name])
			}
		}
		return nil
	})
	if err != nil {
		return CopyCounts{}, fmt.Errorf("remediationstore: copy to PostgreSQL: %w", err)
	}
	if _, err := dst.log.Head(ctx); err != nil {
		return c, err
	}
	return c, nil
}

// copyTable copies table's cols from src (SQLite) to dst (PostgreSQL) in order;
// values pass as the SQLite driver returns them (int64, string, []byte, nil).
func copyTable(ctx context.Context, src *sql.Tx, dst *pgdb.Tx, table, cols, order string) (int64, error) {
	n := len(strings.Split(cols, ","))
	ph := make([]string, n)
	for i := range ph {
		ph[i] = "$" + strconv.Itoa(i+1)
	}
	insert := `INSERT INTO ` + table + ` (` + cols + `) VALUES (` + strings.Join(ph, ", ") + `)`
	rows, err := src.QueryContext(ctx, `SELECT `+cols+` FROM `+table+` ORDER BY `+order)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var copied int64
	vals := make([]any, n)
	ptrs := make([]any, n)
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return copied, err
		}
		if _, err := dst.ExecContext(ctx, insert, vals...); err != nil {
			return copied, err
		}
		copied++
	}
	return copied, rows.Err()
}
