// Package riskstore is the risk service's SQLite store (pure Go, WAL, group commit), with embedded migrations and the event log in the same database.
package riskstore

import (
	"context"
	"database/sql"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/eventlog"
	"github.com/condaccess/condaccess/internal/sqlitedb"
	"github.com/condaccess/condaccess/services/risk"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// eventTable is the event log's table.
const eventTable = "risk_events"

// Migrations returns the store's schema migrations, in order (append only).
func Migrations() []string {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		panic(err)
	}
	sort.Strings(names)
	out := append([]string(nil), eventlog.Migrations(eventTable)...)
	for _, n := range names {
		b, err := migrationFiles.ReadFile(n)
		if err != nil {
			panic(err)
		}
		out = append(out, string(b))
	}
	return out
}

// Options configures Open.
type Options struct {
	// Path is the SQLite file.
	Path string
	// Retention is the number of newest events kept for replay (0 keeps all).
	Retention int64
	// ProgressInterval is the idle interval between watch progress messages (default 1s).
	ProgressInterval time.Duration
	// CompactInterval is how often old events are compacted (default 1m; see eventlog).
	CompactInterval time.Duration
	// SubscriberBuffer is each watcher's live buffer; a watcher that falls this far
	// behind is cut off (default 1024).
	SubscriberBuffer int
	// Synchronous is sqlitedb's setting (default FULL: acknowledged writes survive power loss).
	Synchronous string
	Logger      *slog.Logger
}

// Store is the SQLite implementation of risk.Store.
type Store struct {
	db    *sqlitedb.DB
	log   *eventlog.Log
	audit *audit.Log

	qDeviceRisk *sql.Stmt // prepared on the read pool

	// levels caches each device's latest level row for the write path (DeviceLevel
	// runs for every reported alert). Only Write fns use it, one at a time on the
	// database's writer goroutine; PutDeviceRisk updates it and gives the previous
	// entry back with OnRollback when its fn or group does not commit.
	levels map[string]levelEntry
	// actives caches each device's active alerts (DeviceRisk.Active order) for the
	// write path (ActiveAlerts runs for every reported alert, for its response), kept
	// like levels: only Write fns use it; a change to a device's active alerts updates
	// a cached entry (copy on write: a returned slice is never modified), and every
	// such change, cached or not, forgets the device when its fn or group does not
	// commit (OnRollback), so that no entry read from uncommitted rows survives them.
	actives map[string][]risk.ActiveAlert
}

type levelEntry struct {
	r     risk.DeviceRisk
	known bool // false: the device has no level yet
}

// maxCachedLevels bounds the level and active-alert caches (each is emptied when full).
const maxCachedLevels = 1 << 17

var _ risk.Store = (*Store)(nil)

// Open opens (creating or migrating) the store at opts.Path.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	db, err := sqlitedb.Open(ctx, sqlitedb.Options{Path: opts.Path, Migrations: Migrations(), Synchronous: opts.Synchronous, Logger: opts.Logger})
	if err != nil {
		return nil, fmt.Errorf("riskstore: %w", err)
	}
	// The one writer connection keeps a larger page cache (64 MiB) than SQLite's 2 MiB
	// default: the write path re-reads device versions and index pages, and a group
	// transaction that spills its cache pays a syscall per page. It also checkpoints
	// every 4000 WAL pages (a WAL of up to ~16 MiB) instead of SQLite's 1000: the pages
	// reports dirty again and again (index pages by device, the tables' last pages) are
	// copied into the database once per checkpoint, so fewer bytes are written per
	// alert (BenchmarkBytesWritten). Both PRAGMAs are per connection and not
	// transactional, so setting them once inside a write sticks.
	if err := db.Write(ctx, func(tx *sqlitedb.Tx) error {
		if _, err := tx.ExecContext(ctx, `PRAGMA cache_size = -65536`); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `PRAGMA wal_autocheckpoint = 4000`)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("riskstore: writer pragmas: %w", err)
	}
	l, err := eventlog.New(ctx, db, eventlog.Options{
		Table: eventTable, Retention: opts.Retention, ProgressInterval: opts.ProgressInterval,
		CompactInterval: opts.CompactInterval, SubscriberBuffer: opts.SubscriberBuffer, Logger: opts.Logger,
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("riskstore: %w", err)
	}
	q, err := db.Read().PrepareContext(ctx, qDeviceRisk)
	if err != nil {
		l.Close()
		db.Close()
		return nil, fmt.Errorf("riskstore: prepare: %w", err)
	}
	return &Store{db: db, log: l, audit: audit.New(db, audit.Options{Source: "risk", Logger: opts.Logger}), qDeviceRisk: q, levels: map[string]levelEntry{}, actives: map[string][]risk.ActiveAlert{}}, nil
}

// Close ends every watcher and closes the database.
func (s *Store) Close() error {
	return errors.Join(s.qDeviceRisk.Close(), s.log.Close(), s.db.Close())
}

// Audit returns the audit log of the store's admin changes (migration
// 003_audit_events.sql is audit.Migrations' schema).
func (s *Store) Audit() *audit.Log { return s.audit }

// Compact drops events beyond the retention now (it also runs periodically).
func (s *Store) Compact(ctx context.Context) error { return s.log.Compact(ctx) }

// Update implements risk.Store.
func (s *Store) Update(ctx context.Context, fn func(tx risk.Tx) error) error {
	return s.db.Write(ctx, func(tx *sqlitedb.Tx) error {
		return fn(&storeTx{tx: tx, log: s.log, audit: s.audit, levels: s.levels, actives: s.actives})
	})
}

// Revision implements risk.Store.
func (s *Store) Revision() int64 { return s.log.Revision() }

// Watch implements risk.Store.
func (s *Store) Watch(ctx context.Context, start int64, onEvent func(risk.StoredEvent) error, onProgress func(int64) error) error {
	return s.log.Watch(ctx, start, func(e eventlog.Event) error {
		return onEvent(risk.StoredEvent{Revision: e.Revision, Type: e.Type, Key: e.Key, Payload: e.Payload,
			TraceParent: e.TraceParent, TraceState: e.TraceState, Time: e.Time})
	}, onProgress)
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

const alertCols = `data, content_hash`

func scanAlert(row interface{ Scan(...any) error }) (risk.Alert, string, error) {
	var data []byte
	var hash string
	if err := row.Scan(&data, &hash); err != nil {
		return risk.Alert{}, "", err
	}
	a, err := decodeAlert(data)
	if err != nil {
		return risk.Alert{}, "", err
	}
	return a, hash, nil
}

func getAlert(ctx context.Context, q querier, id string) (risk.Alert, string, bool, error) {
	a, h, err := scanAlert(q.QueryRowContext(ctx, `SELECT `+alertCols+` FROM alerts WHERE alert_id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return risk.Alert{}, "", false, nil
	}
	if err != nil {
		return risk.Alert{}, "", false, fmt.Errorf("riskstore: get alert: %w", err)
	}
	return a, h, true, nil
}

// Alert implements risk.Store.
func (s *Store) Alert(ctx context.Context, id string) (risk.Alert, error) {
	a, _, ok, err := getAlert(ctx, s.db.Read(), id)
	if err != nil {
		return risk.Alert{}, err
	}
	if !ok {
		return risk.Alert{}, fmt.Errorf("%w: %q", risk.ErrAlertNotFound, id)
	}
	return a, nil
}

type alertCursor struct {
	T  int64  `json:"t"`
	ID string `json:"id"`
}

func encodeToken(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeToken(tok string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err == nil {
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		err = dec.Decode(v)
	}
	if err != nil {
		return fmt.Errorf("%w: %q", risk.ErrInvalidPageToken, tok)
	}
	return nil
}

// ListAlerts implements risk.Store.
func (s *Store) ListAlerts(ctx context.Context, q risk.AlertQuery) ([]risk.Alert, string, error) {
	var where []string
	var args []any
	if q.DeviceID != "" {
		where, args = append(where, "device_id = ?"), append(args, q.DeviceID)
	}
	if q.Status != 0 {
		where, args = append(where, "status = ?"), append(args, int32(q.Status))
	}
	if q.MinSeverity != 0 {
		where, args = append(where, "severity >= ?"), append(args, int32(q.MinSeverity))
	}
	if !q.DetectedAfter.IsZero() {
		where, args = append(where, "detect_ns >= ?"), append(args, q.DetectedAfter.UnixNano())
	}
	if !q.DetectedBefore.IsZero() {
		where, args = append(where, "detect_ns < ?"), append(args, q.DetectedBefore.UnixNano())
	}
	if q.PageToken != "" {
		var c alertCursor
		if err := decodeToken(q.PageToken, &c); err != nil {
			return nil, "", err
		}
		where, args = append(where, "(detect_ns, alert_id) < (?, ?)"), append(args, c.T, c.ID)
	}
	query := `SELECT ` + alertCols + `, detect_ns FROM alerts`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY detect_ns DESC, alert_id DESC LIMIT ?"
	args = append(args, q.PageSize+1)
	rows, err := s.db.Read().QueryContext(ctx, query, args...)
	if err != nil {
		return nil, "", fmt.Errorf("riskstore: list alerts: %w", err)
	}
	defer rows.Close()
	return scanAlertPage(rows, q.PageSize)
}

const riskCols = `device_id, revision, level, previous_level, cause_alert_id, change_ns`

func scanRisk(row interface{ Scan(...any) error }) (risk.DeviceRisk, error) {
	var r risk.DeviceRisk
	var changeNS int64
	if err := row.Scan(&r.DeviceID, &r.Revision, &r.Level, &r.PreviousLevel, &r.CauseAlertID, &changeNS); err != nil {
		return risk.DeviceRisk{}, err
	}
	r.UpdateTime = time.Unix(0, changeNS).UTC()
	return r, nil
}

func latestLevel(ctx context.Context, q querier, deviceID string) (risk.DeviceRisk, bool, error) {
	r, err := scanRisk(q.QueryRowContext(ctx, `SELECT `+riskCols+` FROM device_risk_versions WHERE device_id = ? ORDER BY revision DESC LIMIT 1`, deviceID))
	if errors.Is(err, sql.ErrNoRows) {
		return risk.DeviceRisk{}, false, nil
	}
	if err != nil {
		return risk.DeviceRisk{}, false, fmt.Errorf("riskstore: get device risk: %w", err)
	}
	return r, true, nil
}

func scanActive(rows *sql.Rows, into func(deviceID string, a risk.ActiveAlert)) error {
	defer rows.Close()
	for rows.Next() {
		var dev string
		var a risk.ActiveAlert
		var ns int64
		if err := rows.Scan(&dev, &a.ID, &a.Severity, &ns); err != nil {
			return err
		}
		a.DetectTime = time.Unix(0, ns).UTC()
		into(dev, a)
	}
	return rows.Err()
}

// qActiveNow lists a device's active alerts (from the index alone).
const qActiveNow = `SELECT device_id, alert_id, severity, detect_ns FROM alerts INDEXED BY alerts_by_device
	WHERE device_id = ? AND to_rev IS NULL AND severity > 1`

func activeNow(ctx context.Context, q querier, deviceID string) ([]risk.ActiveAlert, error) {
	rows, err := q.QueryContext(ctx, qActiveNow, deviceID)
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

// DeviceRisk implements risk.Store: level and active alerts from one snapshot.
func (s *Store) DeviceRisk(ctx context.Context, deviceID string) (risk.DeviceRisk, error) {
	// One prepared statement (one snapshot, no explicit read transaction): the level
	// and its active alerts. ReportAlert runs it after every commit that leaves the
	// level unchanged.
	rows, err := s.qDeviceRisk.QueryContext(ctx, deviceID)
	if err != nil {
		return risk.DeviceRisk{}, fmt.Errorf("riskstore: get device risk: %w", err)
	}
	return scanDeviceRisk(rows, deviceID)
}

// qDeviceRisk is DeviceRisk's query: the latest level version, then one row per
// active (non-informational) alert, or one row of NULLs when there is none.
const qDeviceRisk = `SELECT r.device_id, r.revision, r.level, r.previous_level, r.cause_alert_id, r.change_ns,
	a.alert_id, a.severity, a.detect_ns
	FROM (SELECT ` + riskCols + ` FROM device_risk_versions WHERE device_id = ?1 ORDER BY revision DESC LIMIT 1) r
	LEFT JOIN alerts a INDEXED BY alerts_by_device ON a.device_id = ?1 AND a.to_rev IS NULL AND a.severity > 1`

type deviceCursor struct {
	Rev   int64  `json:"rev"`
	After string `json:"after"`
}

// ListDeviceRisks implements risk.Store. Every page reads the devices' levels and
// active alerts as of the revision of the first page (carried in the page token), so
// one listing is one consistent snapshot even while writes continue.
func (s *Store) ListDeviceRisks(ctx context.Context, q risk.DeviceRiskQuery) ([]risk.DeviceRisk, string, int64, error) {
	c := deviceCursor{Rev: s.log.Revision()}
	if q.PageToken != "" {
		if err := decodeToken(q.PageToken, &c); err != nil {
			return nil, "", 0, err
		}
		if c.Rev < 0 || c.After == "" {
			return nil, "", 0, fmt.Errorf("%w: %q", risk.ErrInvalidPageToken, q.PageToken)
		}
	}
	rows, err := s.db.Read().QueryContext(ctx, `SELECT `+riskCols+` FROM device_risk_versions v
		WHERE v.device_id > ?1
		  AND v.revision = (SELECT MAX(w.revision) FROM device_risk_versions w WHERE w.device_id = v.device_id AND w.revision <= ?2)
		  AND v.level >= ?3
		ORDER BY v.device_id LIMIT ?4`, c.After, c.Rev, int32(q.MinLevel), q.PageSize+1)
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
	// The page's active alerts as of the same revision.
	idx := make(map[string]int, len(out))
	args := []any{c.Rev}
	marks := make([]string, len(out))
	for i, r := range out {
		idx[r.DeviceID] = i
		args = append(args, r.DeviceID)
		marks[i] = fmt.Sprintf("?%d", i+2)
	}
	arows, err := s.db.Read().QueryContext(ctx, qActiveAsOf(marks), args...)
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

// qActiveAsOf lists the active alerts as of revision ?1 of the devices whose
// placeholders are marks (from the index alone).
func qActiveAsOf(marks []string) string {
	return `SELECT device_id, alert_id, severity, detect_ns FROM alerts INDEXED BY alerts_by_device
		WHERE device_id IN (` + strings.Join(marks, ",") + `) AND severity > 1 AND from_rev <= ?1 AND (to_rev IS NULL OR to_rev > ?1)`
}

type historyCursor struct {
	Before int64 `json:"before"`
}

// RiskHistory implements risk.Store.
func (s *Store) RiskHistory(ctx context.Context, deviceID string, pageSize int, pageToken string) ([]risk.DeviceRisk, string, error) {
	c := historyCursor{Before: 1<<63 - 1}
	if pageToken != "" {
		if err := decodeToken(pageToken, &c); err != nil {
			return nil, "", err
		}
	} else if _, ok, err := latestLevel(ctx, s.db.Read(), deviceID); err != nil {
		return nil, "", err
	} else if !ok {
		return nil, "", fmt.Errorf("%w: %q", risk.ErrDeviceNotFound, deviceID)
	}
	rows, err := s.db.Read().QueryContext(ctx, `SELECT `+riskCols+` FROM device_risk_versions
		WHERE device_id = ? AND revision < ? ORDER BY revision DESC LIMIT ?`, deviceID, c.Before, pageSize+1)
	if err != nil {
		return nil, "", fmt.Errorf("riskstore: risk history: %w", err)
	}
	return scanHistoryPage(rows, pageSize)
}

// storeTx implements risk.Tx over one sqlitedb write.
type storeTx struct {
	tx      *sqlitedb.Tx
	log     *eventlog.Log
	audit   *audit.Log
	levels  map[string]levelEntry
	actives map[string][]risk.ActiveAlert
}

func (t *storeTx) cacheLevel(deviceID string, e levelEntry) {
	if _, ok := t.levels[deviceID]; !ok && len(t.levels) >= maxCachedLevels {
		clear(t.levels)
	}
	t.levels[deviceID] = e
}

// activeChanged records that deviceID's active alerts changed in this fn: add (when
// non-nil) joins a cached entry, or else removeID leaves it; the device is forgotten
// if the fn or its group does not commit.
func (t *storeTx) activeChanged(deviceID string, add *risk.ActiveAlert, removeID string) {
	t.tx.OnRollback(func() { delete(t.actives, deviceID) })
	cur, ok := t.actives[deviceID]
	if !ok {
		return
	}
	if add != nil {
		t.actives[deviceID] = risk.InsertActive(cur, *add)
		return
	}
	next := make([]risk.ActiveAlert, 0, len(cur))
	for _, a := range cur {
		if a.ID != removeID {
			next = append(next, a)
		}
	}
	t.actives[deviceID] = next
}

// inserted updates the active-alert cache for a new row of a (as activeNow would
// read it back); failed is true when the statement failed.
func (t *storeTx) inserted(a *risk.Alert, failed bool) {
	if failed {
		// The statement may have failed after changing the table: forget the device.
		delete(t.actives, a.DeviceID)
		return
	}
	if a.Active() {
		t.activeChanged(a.DeviceID, &risk.ActiveAlert{ID: a.ID, Severity: a.Severity, DetectTime: time.Unix(0, a.DetectTime.UnixNano()).UTC()}, "")
	}
}

func (t *storeTx) Alert(ctx context.Context, id string) (risk.Alert, string, bool, error) {
	return getAlert(ctx, t.tx, id)
}

func (t *storeTx) AlertHash(ctx context.Context, id string) (string, bool, error) {
	var h string
	err := t.tx.QueryRowContext(ctx, `SELECT content_hash FROM alerts WHERE alert_id = ?`, id).Scan(&h)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("riskstore: alert hash: %w", err)
	}
	return h, true, nil
}

func (t *storeTx) InsertAlert(ctx context.Context, a risk.Alert, hash string, rev int64) error {
	data := encodeAlert(&a)
	var to any
	if a.Status == risk.StatusResolved {
		to = rev
	}
	_, err := t.tx.ExecContext(ctx, `INSERT INTO alerts (alert_id, device_id, severity, status, detect_ns, from_rev, to_rev, content_hash, data)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		a.ID, a.DeviceID, int32(a.Severity), int32(a.Status), a.DetectTime.UnixNano(), rev, to, hash, data)
	t.inserted(&a, err != nil)
	if err != nil {
		return fmt.Errorf("riskstore: insert alert: %w", err)
	}
	return nil
}

func (t *storeTx) UpdateAlert(ctx context.Context, a risk.Alert, rev int64) error {
	data := encodeAlert(&a)
	var to any
	if a.Status == risk.StatusResolved {
		to = rev
	}
	// The row's device (RETURNING), whose active alerts a resolution changes.
	var dev string
	err := t.tx.QueryRowContext(ctx, `UPDATE alerts SET status = ?, data = ?, to_rev = COALESCE(to_rev, ?) WHERE alert_id = ? RETURNING device_id`,
		int32(a.Status), data, to, a.ID).Scan(&dev)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: %q", risk.ErrAlertNotFound, a.ID)
	}
	if err != nil {
		// The statement may have failed after changing the table.
		clear(t.actives)
		return fmt.Errorf("riskstore: update alert: %w", err)
	}
	if to != nil {
		t.activeChanged(dev, nil, a.ID)
	}
	return nil
}

func (t *storeTx) ActiveAlerts(ctx context.Context, deviceID string) ([]risk.ActiveAlert, error) {
	if as, ok := t.actives[deviceID]; ok {
		return as, nil
	}
	as, err := activeNow(ctx, t.tx, deviceID)
	if err != nil {
		return nil, err
	}
	if len(t.actives) >= maxCachedLevels {
		clear(t.actives)
	}
	t.actives[deviceID] = as
	return as, nil
}

func (t *storeTx) DeviceLevel(ctx context.Context, deviceID string) (risk.DeviceRisk, bool, error) {
	if e, ok := t.levels[deviceID]; ok {
		return e.r, e.known, nil
	}
	if _, ok := t.actives[deviceID]; ok {
		r, known, err := latestLevel(ctx, t.tx, deviceID)
		if err != nil {
			return risk.DeviceRisk{}, false, err
		}
		t.cacheLevel(deviceID, levelEntry{r: r, known: known})
		return r, known, nil
	}
	// Neither is cached (a device first seen since the store opened, or evicted): its
	// level and active alerts in one statement, since a report that reads the level
	// lists the active alerts next.
	rows, err := t.tx.QueryContext(ctx, qLevelAndActive, deviceID)
	if err != nil {
		return risk.DeviceRisk{}, false, fmt.Errorf("riskstore: get device risk: %w", err)
	}
	defer rows.Close()
	var r risk.DeviceRisk
	var active []risk.ActiveAlert
	known := false
	for rows.Next() {
		var rev, level, prev, changeNS, sev, detectNS sql.NullInt64
		var cause, id sql.NullString
		if err := rows.Scan(&rev, &level, &prev, &cause, &changeNS, &id, &sev, &detectNS); err != nil {
			return risk.DeviceRisk{}, false, fmt.Errorf("riskstore: get device risk: %w", err)
		}
		if rev.Valid {
			known = true
			r = risk.DeviceRisk{DeviceID: deviceID, Revision: rev.Int64, Level: risk.Level(level.Int64), PreviousLevel: risk.Level(prev.Int64),
				CauseAlertID: cause.String, UpdateTime: time.Unix(0, changeNS.Int64).UTC()}
		}
		if id.Valid {
			active = append(active, risk.ActiveAlert{ID: id.String, Severity: risk.Severity(sev.Int64), DetectTime: time.Unix(0, detectNS.Int64).UTC()})
		}
	}
	if err := rows.Err(); err != nil {
		return risk.DeviceRisk{}, false, fmt.Errorf("riskstore: get device risk: %w", err)
	}
	risk.SortActive(active)
	t.cacheLevel(deviceID, levelEntry{r: r, known: known})
	if len(t.actives) >= maxCachedLevels {
		clear(t.actives)
	}
	t.actives[deviceID] = active
	return r, known, nil
}

// qLevelAndActive is DeviceLevel's query when neither cache has the device: one row
// of its latest level version (NULLs when it has none) per active alert, or one row
// when it has no active alert.
const qLevelAndActive = `SELECT r.revision, r.level, r.previous_level, r.cause_alert_id, r.change_ns,
	a.alert_id, a.severity, a.detect_ns
	FROM (SELECT 1) one
	LEFT JOIN (SELECT ` + riskCols + ` FROM device_risk_versions WHERE device_id = ?1 ORDER BY revision DESC LIMIT 1) r ON 1
	LEFT JOIN alerts a INDEXED BY alerts_by_device ON a.device_id = ?1 AND a.to_rev IS NULL AND a.severity > 1`

func (t *storeTx) PutDeviceRisk(ctx context.Context, r risk.DeviceRisk) error {
	_, err := t.tx.ExecContext(ctx, `INSERT INTO device_risk_versions (`+riskCols+`) VALUES (?, ?, ?, ?, ?, ?)`,
		r.DeviceID, r.Revision, int32(r.Level), int32(r.PreviousLevel), r.CauseAlertID, r.UpdateTime.UnixNano())
	if err != nil {
		// The statement may have failed after changing the table: forget the device.
		delete(t.levels, r.DeviceID)
		return fmt.Errorf("riskstore: put device risk: %w", err)
	}
	prev, had := t.levels[r.DeviceID]
	t.tx.OnRollback(func() {
		if had {
			t.levels[r.DeviceID] = prev
		} else {
			delete(t.levels, r.DeviceID)
		}
	})
	// As latestLevel would read it back.
	row := risk.DeviceRisk{DeviceID: r.DeviceID, Revision: r.Revision, Level: r.Level, PreviousLevel: r.PreviousLevel,
		CauseAlertID: r.CauseAlertID, UpdateTime: time.Unix(0, r.UpdateTime.UnixNano()).UTC()}
	t.cacheLevel(r.DeviceID, levelEntry{r: row, known: true})
	return nil
}

func (t *storeTx) InsertNewAlert(ctx context.Context, a risk.Alert, hash string, rev int64) (string, bool, error) {
	data := encodeAlert(&a)
	var to any
	if a.Status == risk.StatusResolved {
		to = rev
	}
	res, err := t.tx.ExecContext(ctx, `INSERT INTO alerts (alert_id, device_id, severity, status, detect_ns, from_rev, to_rev, content_hash, data)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (alert_id) DO NOTHING`,
		a.ID, a.DeviceID, int32(a.Severity), int32(a.Status), a.DetectTime.UnixNano(), rev, to, hash, data)
	var n int64
	if err == nil {
		n, err = res.RowsAffected()
	}
	if err != nil {
		t.inserted(&a, true)
		return "", false, fmt.Errorf("riskstore: insert alert: %w", err)
	}
	if n == 1 {
		t.inserted(&a, false)
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

func (t *storeTx) NextRevision(context.Context) (int64, error) { return t.log.Next(t.tx) }

// Audit implements risk.Tx.
func (t *storeTx) Audit(ctx context.Context, c audit.Change) error {
	return t.audit.Append(ctx, t.tx, c)
}

func (t *storeTx) Append(ctx context.Context, e risk.StoredEvent) (int64, error) {
	return t.log.Append(t.tx, eventlog.Event{Type: e.Type, Key: e.Key, Payload: e.Payload,
		TraceParent: e.TraceParent, TraceState: e.TraceState, Time: e.Time})
}

// scanAlertPage reads a ListAlerts page from rows of (alert document, content hash,
// detect_ns) queried with pageSize+1 rows: the alerts and, when a row beyond the page
// exists, the token of the page after it. Both stores' ListAlerts use it.
func scanAlertPage(rows *sql.Rows, pageSize int) ([]risk.Alert, string, error) {
	var out []risk.Alert
	var last alertCursor
	next := ""
	for rows.Next() {
		if len(out) == pageSize {
			next = encodeToken(last)
			break
		}
		var data []byte
		var hash string
		var ns int64
		if err := rows.Scan(&data, &hash, &ns); err != nil {
			return nil, "", fmt.Errorf("riskstore: list alerts: %w", err)
		}
		a, err := decodeAlert(data)
		if err != nil {
			return nil, "", err
		}
		out = append(out, a)
		last = alertCursor{T: ns, ID: a.ID}
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("riskstore: list alerts: %w", err)
	}
	return out, next, nil
}

// scanDeviceRisk reads a device's level joined with its active alerts (one row per
// alert, one row with NULL alert columns when none is active; no row for an unknown
// device): the one reader of both stores' DeviceRisk.
func scanDeviceRisk(rows *sql.Rows, deviceID string) (risk.DeviceRisk, error) {
	defer rows.Close()
	var r risk.DeviceRisk
	found := false
	for rows.Next() {
		var changeNS int64
		var id sql.NullString
		var sev, detectNS sql.NullInt64
		if err := rows.Scan(&r.DeviceID, &r.Revision, &r.Level, &r.PreviousLevel, &r.CauseAlertID, &changeNS, &id, &sev, &detectNS); err != nil {
			return risk.DeviceRisk{}, fmt.Errorf("riskstore: get device risk: %w", err)
		}
		r.UpdateTime = time.Unix(0, changeNS).UTC()
		found = true
		if id.Valid {
			r.Active = append(r.Active, risk.ActiveAlert{ID: id.String, Severity: risk.Severity(sev.Int64), DetectTime: time.Unix(0, detectNS.Int64).UTC()})
		}
	}
	if err := rows.Err(); err != nil {
		return risk.DeviceRisk{}, fmt.Errorf("riskstore: get device risk: %w", err)
	}
	if !found {
		return risk.DeviceRisk{}, fmt.Errorf("%w: %q", risk.ErrDeviceNotFound, deviceID)
	}
	risk.SortActive(r.Active)
	return r, nil
}

// scanHistoryPage reads a RiskHistory page from level rows queried newest first with
// pageSize+1 rows: the levels and, when a row beyond the page exists, the token of the
// page after it. Both stores' RiskHistory use it.
func scanHistoryPage(rows *sql.Rows, pageSize int) ([]risk.DeviceRisk, string, error) {
	defer rows.Close()
	var out []risk.DeviceRisk
	next := ""
	for rows.Next() {
		if len(out) == pageSize {
			next = encodeToken(historyCursor{Before: out[len(out)-1].Revision})
			break
		}
		r, err := scanRisk(rows)
		if err != nil {
			return nil, "", fmt.Errorf("riskstore: risk history: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("riskstore: risk history: %w", err)
	}
	return out, next, nil
}
