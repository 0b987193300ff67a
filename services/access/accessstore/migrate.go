package accessstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/condaccess/condaccess/internal/dbtx"
)

// ErrTargetNotEmpty: CopyToPG's target already holds access data; nothing was copied.
var ErrTargetNotEmpty = errors.New("accessstore: the PostgreSQL access schema is not empty")

// CopyCounts is what CopyToPG copied (and verified in the target), by table.
type CopyCounts struct {
	Rows map[string]int64
	// Revision is the session log's head, CompactedBefore its compaction point (both kept).
	Revision, CompactedBefore int64
}

// copyTable is one table CopyToPG copies: its columns, in the order of both
// schemas, the source's order, and which columns are blobs (an empty blob may
// read as NULL from SQLite and is written as an empty one).
type copyTable struct {
	name, cols, order string
	blobs             []int
}

// copyTables, parents before children (foreign keys).
var copyTables = []copyTable{
	{"users", userCols, "id", nil},
	{"dir_groups", groupCols, "id", nil},
	{"applications", appCols, "id", nil},
	{"group_users", "group_id, user_id", "group_id, user_id", nil},
	{"group_groups", "group_id, member_id", "group_id, member_id", nil},
	{"policies", "id, state, body, create_ns, update_ns, etag", "id", nil},
	{"device_compliance", "device_id, state, risk, platform, revision, detail", "device_id", nil},
	{"feed_cursor", "id, revision", "id", nil},
	{"sessions", sessionCols, "id", nil},
	{"signin_batches", "first_key, last_key, n, filter, body", "first_key", []int{3, 4}},
	{eventTable, "revision, type, key, payload, traceparent, tracestate, time_unix_nano", "revision", []int{3}},
	{"audit_events", "time_unix_nano, subject, roles, method, peer, trace_id, action, resource_type, resource_id, before_json, after_json, etag", "id", nil},
}

// CopyToPG copies the SQLite store src into the empty PostgreSQL store dst: the
// directory, policies, device compliance and the compliance cursor, sessions,
// sign-ins, the retained session events with their revisions, the revision counter
// and compaction point, and the audit events (renumbered, in order). It reads src
// in one read transaction (stop the service first) and writes dst in one
// transaction, in which it compares every table's count with the source before
// committing: a failure leaves dst empty. The replicas' change logs start empty
// (each replica loads the whole state when it starts).
func CopyToPG(ctx context.Context, src, dst *Store) (CopyCounts, error) {
	c := CopyCounts{Rows: map[string]int64{}}
	if src.pg != nil || dst.pg == nil {
		return c, errors.New("accessstore: copy: from an embedded store to a PostgreSQL one")
	}
	rtx, err := src.db.Read().BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return c, fmt.Errorf("accessstore: copy: read source: %w", err)
	}
	defer rtx.Rollback()
	if err := rtx.QueryRowContext(ctx, `SELECT COALESCE((SELECT MAX(revision) FROM `+eventTable+`), 0), compacted_before FROM `+eventTable+`_state WHERE id = 1`).
		Scan(&c.Revision, &c.CompactedBefore); err != nil {
		return c, fmt.Errorf("accessstore: copy: read source revision: %w", err)
	}
	c.Revision = max(c.Revision, c.CompactedBefore)
	err = dst.write(ctx, func(tx dbtx.Tx) error {
		var rows int64
		for _, t := range copyTables {
			var n int64
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM `+t.name).Scan(&n); err != nil {
				return err
			}
			rows += n
		}
		var head int64
		if err := tx.QueryRowContext(ctx, `SELECT head + compacted_before FROM `+eventTable+`_state WHERE id = 1`).Scan(&head); err != nil {
			return err
		}
		if rows != 0 || head != 0 {
			return fmt.Errorf("%w (%d rows, head revision %d): copy into a new database or schema", ErrTargetNotEmpty, rows, head)
		}
		for _, t := range copyTables {
			n, err := copyTableRows(ctx, rtx, tx, t)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			c.Rows[t.name] = n
		}
		if _, err := tx.ExecContext(ctx, `UPDATE `+eventTable+`_state SET head = ?, compacted_before = ? WHERE id = 1`, c.Revision, c.CompactedBefore); err != nil {
			return err
		}
		// Verify: the target's counts, as this transaction will commit them.
		for _, t := range copyTables {
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
		return CopyCounts{}, fmt.Errorf("accessstore: copy to PostgreSQL: %w", err)
	}
	if _, err := dst.pg.log.Head(ctx); err != nil {
		return c, err
	}
	return c, nil
}

// copyTableRows copies t's rows from src to dst.
func copyTableRows(ctx context.Context, src *sql.Tx, dst dbtx.Tx, t copyTable) (int64, error) {
	rows, err := src.QueryContext(ctx, `SELECT `+t.cols+` FROM `+t.name+` ORDER BY `+t.order)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	ncol := strings.Count(t.cols, ",") + 1
	insert := `INSERT INTO ` + t.name + ` (` + t.cols + `) VALUES (?` + strings.Repeat(", ?", ncol-1) + `)`
	vals := make([]any, ncol)
	ptrs := make([]any, ncol)
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var n int64
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return n, err
		}
		for _, i := range t.blobs {
			if vals[i] == nil {
				vals[i] = []byte{}
			}
		}
		if _, err := dst.ExecContext(ctx, insert, vals...); err != nil {
			return n, err
		}
		n++
	}
	return n, rows.Err()
}
