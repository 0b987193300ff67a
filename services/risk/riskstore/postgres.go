package riskstore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/eventlog"
	"github.com/condaccess/condaccess/internal/lease"
	"github.com/condaccess/condaccess/internal/pgdb"
	"github.com/condaccess/condaccess/services/risk"
)

//go:embed pgmigrations/*.sql
var pgMigrationFiles embed.FS

// PGSchema is the risk service's schema in a shared PostgreSQL database.
const PGSchema = "risk"

// PGMigrations returns the PostgreSQL store's schema migrations, in order (append only).
func PGMigrations() []string {
	out := append([]string(nil), eventlog.PGMigrations(eventTable)...)
	out = append(out, pgdb.MigrationFiles(pgMigrationFiles, "pgmigrations/*.sql")...)
	out = append(out, audit.PGMigrations("")...)
	return append(out, lease.PGMigrations()...)
}

// PGOptions configures OpenPG.
type PGOptions struct {
	// URL is the PostgreSQL database URL; the store lives in schema Schema (default PGSchema).
	URL    string
	Schema string
	// Retention, ProgressInterval, CompactInterval: as in Options.
	Retention        int64
	ProgressInterval time.Duration
	CompactInterval  time.Duration
	// PollInterval is the event log's fallback poll for other replicas' events (default 1s).
	PollInterval time.Duration
	// NoNotify turns LISTEN/NOTIFY off (an engine without it): watchers learn of
	// other replicas' events by polling only.
	NoNotify bool
	Logger   *slog.Logger
}

// PGStore is the PostgreSQL implementation of risk.Store. Any number of processes
// may open the same schema: each serves reads and watches from the tables, and
// writes from every replica are serialized by the event log's counter row (each
// Update locks it first), as the one SQLite writer serializes them, so a report's
// read of a device's level and active alerts cannot race another replica's change.
// It keeps no write-path cache (another replica may have changed the rows).
//
// Differences from the SQLite store: no group commit (one transaction per Update);
// Audit events are written to the schema's audit_events table, which Audit lists and
// compacts.
type PGStore struct {
	db       *pgdb.DB
	log      *eventlog.PGLog
	audit    *audit.PGWriter
	auditLog *audit.Log
}

var _ risk.Store = (*PGStore)(nil)

// OpenPG opens (creating or migrating) the store in its schema of opts.URL.
func OpenPG(ctx context.Context, opts PGOptions) (*PGStore, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Schema == "" {
		opts.Schema = PGSchema
	}
	db, err := pgdb.Open(ctx, pgdb.Options{URL: opts.URL, Schema: opts.Schema, Migrations: PGMigrations(), Logger: opts.Logger})
	if err != nil {
		return nil, fmt.Errorf("riskstore: %w", err)
	}
	l, err := eventlog.NewPG(ctx, db, eventlog.PGOptions{
		Options: eventlog.Options{Table: eventTable, Retention: opts.Retention, ProgressInterval: opts.ProgressInterval,
			CompactInterval: opts.CompactInterval, Logger: opts.Logger},
		PollInterval: opts.PollInterval,
		NoNotify:     opts.NoNotify,
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("riskstore: %w", err)
	}
	ao := audit.Options{Source: "risk", Logger: opts.Logger}
	return &PGStore{db: db, log: l, audit: audit.NewPGWriter(ao), auditLog: audit.NewPG(db, ao)}, nil
}

// Audit returns the audit log of the store's admin changes (every replica's).
func (s *PGStore) Audit() *audit.Log { return s.auditLog }

// Close ends every watcher and closes the pool.
func (s *PGStore) Close() error { return errors.Join(s.log.Close(), s.db.Close()) }

// Lease returns a leader lease kept in the store's schema (table leases).
func (s *PGStore) Lease(opts lease.PGOptions) *lease.PG { return lease.NewPG(s.db.Read(), opts) }

// Compact drops events beyond the retention now (it also runs every CompactInterval
// unless that is negative).
func (s *PGStore) Compact(ctx context.Context) error { return s.log.Compact(ctx) }

// Update implements risk.Store.
func (s *PGStore) Update(ctx context.Context, fn func(tx risk.Tx) error) error {
	return s.db.Write(ctx, func(tx *pgdb.Tx) error {
		// Serialize with every other Update, on every replica: lock the counter row.
		if _, err := s.log.Next(tx); err != nil {
			return err
		}
		return fn(&pgStoreTx{tx: tx, s: s})
	})
}

// Revision implements risk.Store.
func (s *PGStore) Revision() int64 { return s.log.Revision() }

// Watch implements risk.Store.
func (s *PGStore) Watch(ctx context.Context, start int64, onEvent func(risk.StoredEvent) error, onProgress func(int64) error) error {
	return s.log.Watch(ctx, start, func(e eventlog.Event) error {
		return onEvent(risk.StoredEvent{Revision: e.Revision, Type: e.Type, Key: e.Key, Payload: e.Payload,
			TraceParent: e.TraceParent, TraceState: e.TraceState, Time: e.Time})
	}, onProgress)
}

func pgGetAlert(ctx context.Context, q querier, id string) (risk.Alert, string, bool, error) {
	a, h, err := scanAlert(q.QueryRowContext(ctx, `SELECT `+alertCols+` FROM alerts WHERE alert_id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return risk.Alert{}, "", false, nil
	}
	if err != nil {
		return risk.Alert{}, "", false, fmt.Errorf("riskstore: get alert: %w", err)
	}
	return a, h, true, nil
}

// Alert implements risk.Store.
func (s *PGStore) Alert(ctx context.Context, id string) (risk.Alert, error) {
	a, _, ok, err := pgGetAlert(ctx, s.db.Read(), id)
	if err != nil {
		return risk.Alert{}, err
	}
	if !ok {
		return risk.Alert{}, fmt.Errorf("%w: %q", risk.ErrAlertNotFound, id)
	}
	return a, nil
}

// ListAlerts implements risk.Store.
func (s *PGStore) ListAlerts(ctx context.Context, q risk.AlertQuery) ([]risk.Alert, string, error) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if q.DeviceID != "" {
		where = append(where, "device_id = "+arg(q.DeviceID))
	}
	if q.Status != 0 {
		where = append(where, "status = "+arg(int32(q.Status)))
	}
	if q.MinSeverity != 0 {
		where = append(where, "severity >= "+arg(int32(q.MinSeverity)))
	}
	if !q.DetectedAfter.IsZero() {
		where = append(where, "detect_ns >= "+arg(q.DetectedAfter.UnixNano()))
	}
	if !q.DetectedBefore.IsZero() {
		where = append(where, "detect_ns < "+arg(q.DetectedBefore.UnixNano()))
	}
	if q.PageToken != "" {
		var c alertCursor
		if err := decodeToken(q.PageToken, &c); err != nil {
			return nil, "", err
		}
		where = append(where, "(detect_ns, alert_id) < ("+arg(c.T)+", "+arg(c.ID)+")")
	}
	query := `SELECT ` + alertCols + `, detect_ns FROM alerts`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY detect_ns DESC, alert_id DESC LIMIT " + arg(q.PageSize+1)
	rows, err := s.db.Read().QueryContext(ctx, query, args...)
	if err != nil {
		return nil, "", fmt.Errorf("riskstore: list alerts: %w", err)
	}
	defer rows.Close()
	return scanAlertPage(rows, q.PageSize)
}

func pgLatestLevel(ctx context.Context, q querier, deviceID string) (risk.DeviceRisk, bool, error) {
	r, err := scanRisk(q.QueryRowContext(ctx, `SELECT `+riskCols+` FROM device_risk_versions WHERE device_id = $1 ORDER BY revision DESC LIMIT 1`, deviceID))
	if errors.Is(err, sql.ErrNoRows) {
		return risk.DeviceRisk{}, false, nil
	}
	if err != nil {
		return risk.DeviceRisk{}, false, fmt.Errorf("riskstore: get device risk: %w", err)
	}
	return r, true, nil
}

func pgActiveNow(ctx context.Context, q querier, deviceID string) ([]risk.ActiveAlert, error) {
	rows, err := q.QueryContext(ctx, `SELECT device_id, alert_id, severity, detect_ns FROM alerts
		WHERE device_id = $1 AND to_rev IS NULL AND severity > 1`, deviceID)
	if err != nil {
		return nil, fmt.Errorf("riskstore: active alerts: %w", err)
	}
	var out []risk.ActiveAlert
	if err := scanActive(rows, func(_ string, a risk.ActiveAlert) { out = append(out, a) }); err != nil {
		return nil, fmt.Errorf("riskstore: active alerts: %w", err)
	}
	risk.SortActive(out)
	return out, nil
}

// pgDeviceRisk is DeviceRisk's query (one statement, so one snapshot): the latest
// level version, then one row per active alert, or one row of NULLs when there is none.
const pgDeviceRisk = `SELECT r.device_id, r.revision, r.level, r.previous_level, r.cause_alert_id, r.change_ns,
	a.alert_id, a.severity, a.detect_ns
	FROM (SELECT ` + riskCols + ` FROM device_risk_versions WHERE device_id = $1 ORDER BY revision DESC LIMIT 1) r
	LEFT JOIN alerts a ON a.device_id = $1 AND a.to_rev IS NULL AND a.severity > 1`

// DeviceRisk implements risk.Store: level and active alerts from one snapshot.
func (s *PGStore) DeviceRisk(ctx context.Context, deviceID string) (risk.DeviceRisk, error) {
	rows, err := s.db.Read().QueryContext(ctx, pgDeviceRisk, deviceID)
	if err != nil {
		return risk.DeviceRisk{}, fmt.Errorf("riskstore: get device risk: %w", err)
	}
	return scanDeviceRisk(rows, deviceID)
}

// ListDeviceRisks implements risk.Store: every page reads the devices' levels and
// active alerts as of the revision of the first page (carried in the page token).
func (s *PGStore) ListDeviceRisks(ctx context.Context, q risk.DeviceRiskQuery) ([]risk.DeviceRisk, string, int64, error) {
	var c deviceCursor
	if q.PageToken == "" {
		// The database's head, not this replica's view: a listing on any replica
		// includes every change committed (on any replica) before it.
		head, err := s.log.Head(ctx)
		if err != nil {
			return nil, "", 0, fmt.Errorf("riskstore: list device risks: %w", err)
		}
		c.Rev = head
	} else {
		if err := decodeToken(q.PageToken, &c); err != nil {
			return nil, "", 0, err
		}
		if c.Rev < 0 || c.After == "" {
			return nil, "", 0, fmt.Errorf("%w: %q", risk.ErrInvalidPageToken, q.PageToken)
		}
	}
	rows, err := s.db.Read().QueryContext(ctx, `SELECT `+riskCols+` FROM device_risk_versions v
		WHERE v.device_id > $1
		  AND v.revision = (SELECT MAX(w.revision) FROM device_risk_versions w WHERE w.device_id = v.device_id AND w.revision <= $2)
		  AND v.level >= $3
		ORDER BY v.device_id LIMIT $4`, c.After, c.Rev, int32(q.MinLevel), q.PageSize+1)
	if err != nil {
		return nil, "", 0, fmt.Errorf("riskstore: list device risks: %w", err)
	}
	var out []risk.DeviceRisk
	next := ""
	for rows.Next() {
		if len(out) == q.PageSize {
			next = encodeToken(deviceCursor{Rev: c.Rev, After: out[len(out)-1].DeviceID})
			break
		}
		r, err := scanRisk(rows)
		if err != nil {
			rows.Close()
			return nil, "", 0, fmt.Errorf("riskstore: list device risks: %w", err)
		}
		out = append(out, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, "", 0, fmt.Errorf("riskstore: list device risks: %w", err)
	}
	if len(out) == 0 {
		return out, next, c.Rev, nil
	}
	idx := make(map[string]int, len(out))
	devs := make([]string, len(out))
	for i, r := range out {
		idx[r.DeviceID] = i
		devs[i] = r.DeviceID
	}
	arows, err := s.db.Read().QueryContext(ctx, `SELECT device_id, alert_id, severity, detect_ns FROM alerts
		WHERE device_id = ANY($2) AND severity > 1 AND from_rev <= $1 AND (to_rev IS NULL OR to_rev > $1)`, c.Rev, devs)
	if err != nil {
		return nil, "", 0, fmt.Errorf("riskstore: list device risks: %w", err)
	}
	if err := scanActive(arows, func(dev string, a risk.ActiveAlert) { out[idx[dev]].Active = append(out[idx[dev]].Active, a) }); err != nil {
		return nil, "", 0, fmt.Errorf("riskstore: list device risks: %w", err)
	}
	for i := range out {
		risk.SortActive(out[i].Active)
	}
	return out, next, c.Rev, nil
}

// RiskHistory implements risk.Store.
func (s *PGStore) RiskHistory(ctx context.Context, deviceID string, pageSize int, pageToken string) ([]risk.DeviceRisk, string, error) {
	c := historyCursor{Before: 1<<63 - 1}
	if pageToken != "" {
		if err := decodeToken(pageToken, &c); err != nil {
			return nil, "", err
		}
	} else if _, ok, err := pgLatestLevel(ctx, s.db.Read(), deviceID); err != nil {
		return nil, "", err
	} else if !ok {
		return nil, "", fmt.Errorf("%w: %q", risk.ErrDeviceNotFound, deviceID)
	}
	rows, err := s.db.Read().QueryContext(ctx, `SELECT `+riskCols+` FROM device_risk_versions
		WHERE device_id = $1 AND revision < $2 ORDER BY revision DESC LIMIT $3`, deviceID, c.Before, pageSize+1)
	if err != nil {
		return nil, "", fmt.Errorf("riskstore: risk history: %w", err)
	}
	return scanHistoryPage(rows, pageSize)
}

// pgStoreTx implements risk.Tx over one pgdb write: every read goes to the
// transaction (it sees its own changes), nothing is cached.
type pgStoreTx struct {
	tx *pgdb.Tx
	s  *PGStore
}

func (t *pgStoreTx) Alert(ctx context.Context, id string) (risk.Alert, string, bool, error) {
	return pgGetAlert(ctx, t.tx, id)
}

func (t *pgStoreTx) AlertHash(ctx context.Context, id string) (string, bool, error) {
	var h string
	err := t.tx.QueryRowContext(ctx, `SELECT content_hash FROM alerts WHERE alert_id = $1`, id).Scan(&h)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("riskstore: alert hash: %w", err)
	}
	return h, true, nil
}

const pgInsertAlert = `INSERT INTO alerts (alert_id, device_id, severity, status, detect_ns, from_rev, to_rev, content_hash, data)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`

func alertArgs(a *risk.Alert, hash string, rev int64) []any {
	var to any
	if a.Status == risk.StatusResolved {
		to = rev
	}
	return []any{a.ID, a.DeviceID, int32(a.Severity), int32(a.Status), a.DetectTime.UnixNano(), rev, to, hash, encodeAlert(a)}
}

func (t *pgStoreTx) InsertAlert(ctx context.Context, a risk.Alert, hash string, rev int64) error {
	if _, err := t.tx.ExecContext(ctx, pgInsertAlert, alertArgs(&a, hash, rev)...); err != nil {
		return fmt.Errorf("riskstore: insert alert: %w", err)
	}
	return nil
}

func (t *pgStoreTx) InsertNewAlert(ctx context.Context, a risk.Alert, hash string, rev int64) (string, bool, error) {
	res, err := t.tx.ExecContext(ctx, pgInsertAlert+` ON CONFLICT (alert_id) DO NOTHING`, alertArgs(&a, hash, rev)...)
	var n int64
	if err == nil {
		n, err = res.RowsAffected()
	}
	if err != nil {
		return "", false, fmt.Errorf("riskstore: insert alert: %w", err)
	}
	if n == 1 {
		return "", true, nil
	}
	h, ok, err := t.AlertHash(ctx, a.ID)
	if err != nil {
		return "", false, err
	}
	if !ok {
		return "", false, fmt.Errorf("riskstore: insert alert %q: not inserted and not found", a.ID)
	}
	return h, false, nil
}

func (t *pgStoreTx) UpdateAlert(ctx context.Context, a risk.Alert, rev int64) error {
	var to any
	if a.Status == risk.StatusResolved {
		to = rev
	}
	var dev string
	err := t.tx.QueryRowContext(ctx, `UPDATE alerts SET status = $1, data = $2, to_rev = COALESCE(to_rev, $3) WHERE alert_id = $4 RETURNING device_id`,
		int32(a.Status), encodeAlert(&a), to, a.ID).Scan(&dev)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: %q", risk.ErrAlertNotFound, a.ID)
	}
	if err != nil {
		return fmt.Errorf("riskstore: update alert: %w", err)
	}
	return nil
}

func (t *pgStoreTx) ActiveAlerts(ctx context.Context, deviceID string) ([]risk.ActiveAlert, error) {
	return pgActiveNow(ctx, t.tx, deviceID)
}

func (t *pgStoreTx) DeviceLevel(ctx context.Context, deviceID string) (risk.DeviceRisk, bool, error) {
	return pgLatestLevel(ctx, t.tx, deviceID)
}

func (t *pgStoreTx) PutDeviceRisk(ctx context.Context, r risk.DeviceRisk) error {
	_, err := t.tx.ExecContext(ctx, `INSERT INTO device_risk_versions (`+riskCols+`) VALUES ($1, $2, $3, $4, $5, $6)`,
		r.DeviceID, r.Revision, int32(r.Level), int32(r.PreviousLevel), r.CauseAlertID, r.UpdateTime.UnixNano())
	if err != nil {
		return fmt.Errorf("riskstore: put device risk: %w", err)
	}
	return nil
}

func (t *pgStoreTx) NextRevision(context.Context) (int64, error) { return t.s.log.Next(t.tx) }

func (t *pgStoreTx) Audit(ctx context.Context, c audit.Change) error {
	return t.s.audit.Append(ctx, t.tx, c)
}

func (t *pgStoreTx) Append(ctx context.Context, e risk.StoredEvent) (int64, error) {
	return t.s.log.Append(t.tx, eventlog.Event{Type: e.Type, Key: e.Key, Payload: e.Payload,
		TraceParent: e.TraceParent, TraceState: e.TraceState, Time: e.Time})
}
