package compliancestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/condaccess/condaccess/internal/pgdb"
)

// ErrTargetNotEmpty: CopyToPG's target already holds compliance data; nothing was
// copied.
var ErrTargetNotEmpty = errors.New("compliancestore: the PostgreSQL compliance schema is not empty")

// copyTable is one table CopyToPG copies: its columns and how each is typed.
type copyTable struct {
	name  string
	cols  []string
	kinds string // per column: s text, i integer, n nullable integer, b blob (NOT NULL), B nullable blob, t SQLite 0/1 to boolean
	order string
}

// copyTables are the store's tables in copy order (audit_events is renumbered: its id
// is left out and regenerated, in order).
var copyTables = []copyTable{
	{"devices", []string{"device_id", "platform", "owner_user_id", "retired", "data"}, "sistb", "device_id"},
	{"device_groups", []string{"grp", "device_id"}, "ss", "grp, device_id"},
	{"policies", []string{"policy_id", "data"}, "sb", "policy_id"},
	{"settings", []string{"id", "data"}, "ib", "id"},
	{"device_risk", []string{"device_id", "data"}, "sb", "device_id"},
	{"compliance", []string{"device_id", "state", "next_eval_ns", "data"}, "sinb", "device_id"},
	{"exclusions", []string{"exclusion_id", "device_id", "create_ns", "ended", "data"}, "ssitb", "exclusion_id"},
	{"cursors", []string{"name", "revision"}, "si", "name"},
	{"sweep", []string{"id", "data"}, "ib", "id"},
	{"device_identities", []string{"device_id", "data"}, "sb", "device_id"},
	{"enrollment_tokens", []string{"token_hash", "device_id", "expire_ns"}, "ssi", "token_hash"},
	{EventTable, []string{"revision", "type", "key", "payload", "traceparent", "tracestate", "time_unix_nano"}, "issbssi", "revision"},
	{"audit_events", []string{"time_unix_nano", "subject", "roles", "method", "peer", "trace_id", "action", "resource_type", "resource_id", "before_json", "after_json", "etag"},
		"issssssssBBs", "id"},
}

// DeviceCAPEM is a device CA certificate and its private key, PEM.
type DeviceCAPEM struct{ Cert, Key []byte }

// CopyCounts is what CopyToPG copied (and verified in the target).
type CopyCounts struct {
	// Rows is the number of rows copied per table.
	Rows map[string]int64
	// Revision is the event log's head, CompactedBefore its compaction point (both kept).
	Revision, CompactedBefore int64
	// DeviceCA reports whether a device CA was stored.
	DeviceCA bool
}

// CopyToPG copies the SQLite store src into the empty PostgreSQL store dst: every
// table (devices, policies, risks, compliance, exclusions, cursors, the sweep,
// device identities, enrollment tokens), the retained events with their revisions,
// the revision counter and compaction point, the audit events (renumbered, in
// order), and ca when not nil (the embedded install's device CA, so that the
// devices it enrolled stay valid). It reads src in one read transaction (stop the
// service first) and writes dst in one transaction in which it compares every
// table's count with the source before committing: a failure leaves dst empty.
func CopyToPG(ctx context.Context, src *Store, dst *PGStore, ca *DeviceCAPEM) (CopyCounts, error) {
	c := CopyCounts{Rows: map[string]int64{}}
	rtx, err := src.db.Read().BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return c, fmt.Errorf("compliancestore: copy: read source: %w", err)
	}
	defer rtx.Rollback()
	if err := rtx.QueryRowContext(ctx, `SELECT COALESCE((SELECT MAX(revision) FROM `+EventTable+`), 0), compacted_before FROM `+EventTable+`_state WHERE id = 1`).
		Scan(&c.Revision, &c.CompactedBefore); err != nil {
		return c, fmt.Errorf("compliancestore: copy: read source revision: %w", err)
	}
	c.Revision = max(c.Revision, c.CompactedBefore)
	err = dst.db.Write(ctx, func(tx *pgdb.Tx) error {
		if err := checkEmpty(ctx, tx); err != nil {
			return err
		}
		for _, t := range copyTables {
			n, err := copyRows(ctx, rtx, tx, t)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			c.Rows[t.name] = n
		}
		if _, err := tx.ExecContext(ctx, `UPDATE `+EventTable+`_state SET head = $1, compacted_before = $2 WHERE id = 1`, c.Revision, c.CompactedBefore); err != nil {
			return err
		}
		if ca != nil {
			if _, err := tx.ExecContext(ctx, `INSERT INTO device_ca (id, cert_pem, key_pem) VALUES (1, $1, $2)`, ca.Cert, ca.Key); err != nil {
				return fmt.Errorf("device CA: %w", err)
			}
			c.DeviceCA = true
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
		return CopyCounts{}, fmt.Errorf("compliancestore: copy to PostgreSQL: %w", err)
	}
	if _, err := dst.log.Head(ctx); err != nil {
		return c, err
	}
	return c, nil
}

// CheckEmpty fails with ErrTargetNotEmpty when dst holds compliance data (rows in
// any copied table, events, or a device CA), so that a migration can refuse before
// it copies anything.
func CheckEmpty(ctx context.Context, dst *PGStore) error {
	return dst.db.Write(ctx, func(tx *pgdb.Tx) error { return checkEmpty(ctx, tx) })
}

func checkEmpty(ctx context.Context, tx *pgdb.Tx) error {
	counts := make([]string, 0, len(copyTables)+1)
	for _, t := range copyTables {
		counts = append(counts, `(SELECT count(*) FROM `+t.name+`)`)
	}
	counts = append(counts, `(SELECT count(*) FROM device_ca)`)
	var rows, head int64
	if err := tx.QueryRowContext(ctx, `SELECT `+strings.Join(counts, " + ")+`, (SELECT head + compacted_before FROM `+EventTable+`_state WHERE id = 1)`).
		Scan(&rows, &head); err != nil {
		return err
	}
	if rows != 0 || head != 0 {
		return fmt.Errorf("%w (%d rows, head revision %d): copy into a new database or schema", ErrTargetNotEmpty, rows, head)
	}
	return nil
}

// copyRows copies table t's rows from src to dst.
func copyRows(ctx context.Context, src *sql.Tx, dst *pgdb.Tx, t copyTable) (int64, error) {
	if len(t.kinds) != len(t.cols) {
		return 0, fmt.Errorf("%d kinds for %d columns", len(t.kinds), len(t.cols))
	}
	ph := make([]string, len(t.cols))
	for i, k := range t.kinds {
		p := fmt.Sprintf("$%d", i+1)
		switch k {
		case 'b':
			p = `COALESCE(` + p + `, ''::bytea)` // an empty blob may scan as nil
		case 't':
			p = `(` + p + `::bigint <> 0)`
		}
		ph[i] = p
	}
	cols := strings.Join(t.cols, ", ")
	rows, err := src.QueryContext(ctx, `SELECT `+cols+` FROM `+t.name+` ORDER BY `+t.order)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	insert := `INSERT INTO ` + t.name + ` (` + cols + `) VALUES (` + strings.Join(ph, ", ") + `)`
	var n int64
	for rows.Next() {
		dest := make([]any, len(t.kinds))
		for i, k := range t.kinds {
			switch k {
			case 's':
				dest[i] = new(string)
			case 'i', 't':
				dest[i] = new(int64)
			case 'n':
				dest[i] = new(sql.NullInt64)
			case 'b', 'B':
				dest[i] = new([]byte)
			}
		}
		if err := rows.Scan(dest...); err != nil {
			return n, err
		}
		args := make([]any, len(dest))
		for i, p := range dest {
			switch p := p.(type) {
			case *string:
				args[i] = *p
			case *int64:
				args[i] = *p
			case *sql.NullInt64:
				args[i] = *p
			case *[]byte:
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
