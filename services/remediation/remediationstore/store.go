// Package remediationstore is the SQLite store of the remediation service.
package remediationstore

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/eventlog"
	"github.com/condaccess/condaccess/internal/sqlitedb"
	"github.com/condaccess/condaccess/services/remediation"
)

// Page sizes of the list methods.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// ErrBadPageToken is returned for a page token this store did not issue.
var ErrBadPageToken = fmt.Errorf("%w: bad page token", remediation.ErrInvalidArgument)

var migrations = append([]string{`
CREATE TABLE investigations (
	seq INTEGER PRIMARY KEY AUTOINCREMENT,
	investigation_id TEXT NOT NULL UNIQUE,
	device_id TEXT NOT NULL,
	state INTEGER NOT NULL,
	open INTEGER NOT NULL,
	data BLOB NOT NULL
);
CREATE UNIQUE INDEX investigations_open_device ON investigations(device_id) WHERE open = 1;
CREATE INDEX investigations_device ON investigations(device_id, seq);
CREATE INDEX investigations_state ON investigations(state, seq);
CREATE TABLE actions (
	seq INTEGER PRIMARY KEY AUTOINCREMENT,
	action_id TEXT NOT NULL UNIQUE,
	investigation_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	state INTEGER NOT NULL,
	due_unix_nano INTEGER,
	data BLOB NOT NULL
);
CREATE INDEX actions_device_state ON actions(device_id, state, seq);
CREATE INDEX actions_investigation ON actions(investigation_id, seq);
CREATE INDEX actions_state ON actions(state, seq);
CREATE INDEX actions_due ON actions(due_unix_nano) WHERE due_unix_nano IS NOT NULL;
CREATE TABLE alert_links (
	alert_id TEXT PRIMARY KEY,
	investigation_id TEXT NOT NULL
);
CREATE TABLE automation_levels (
	device_group TEXT PRIMARY KEY,
	level INTEGER NOT NULL,
	update_unix_nano INTEGER NOT NULL,
	updated_by TEXT NOT NULL
);
CREATE TABLE agents (
	device_id TEXT PRIMARY KEY,
	data BLOB NOT NULL
);
CREATE TABLE pending_resolutions (
	seq INTEGER PRIMARY KEY AUTOINCREMENT,
	alert_id TEXT NOT NULL UNIQUE,
	investigation_id TEXT NOT NULL,
	traceparent TEXT NOT NULL,
	tracestate TEXT NOT NULL,
	create_unix_nano INTEGER NOT NULL
);
CREATE TABLE consumer_cursor (
	name TEXT PRIMARY KEY,
	revision INTEGER NOT NULL
);`}, append(eventlog.Migrations("events"), audit.Migrations("")...)...)

// Options configures Open.
type Options struct {
	// Path is the database file (e.g. <data-dir>/remediation.db).
	Path string
	// Encode turns an event into the payload stored in the event log (the gRPC layer
	// marshals an InvestigationEvent).
	Encode func(remediation.Event) ([]byte, error)
	// Retention and ProgressInterval configure the event log.
	Retention        int64
	ProgressInterval time.Duration
	Synchronous      string
	Logger           *slog.Logger
}

// Store is the SQLite implementation of remediation.Store.
type Store struct {
	db     *sqlitedb.DB
	log    *eventlog.Log
	audit  *audit.Log
	encode func(remediation.Event) ([]byte, error)
}

var _ remediation.Store = (*Store)(nil)

// Open opens (creating) the store.
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.Encode == nil {
		return nil, errors.New("remediationstore: Options.Encode is required")
	}
	db, err := sqlitedb.Open(ctx, sqlitedb.Options{Path: filepath.Clean(o.Path), Migrations: migrations, Synchronous: o.Synchronous, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	l, err := eventlog.New(ctx, db, eventlog.Options{Retention: o.Retention, ProgressInterval: o.ProgressInterval, Logger: o.Logger})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &Store{db: db, log: l, audit: audit.New(db, audit.Options{Source: "remediation", Logger: o.Logger}), encode: o.Encode}, nil
}

// Close closes the event log and the database.
func (s *Store) Close() error { return errors.Join(s.log.Close(), s.db.Close()) }

// Audit returns the audit log of the store's admin changes.
func (s *Store) Audit() *audit.Log { return s.audit }

// Revision implements remediation.Store.
func (s *Store) Revision() int64 { return s.log.Revision() }

// Watch implements remediation.Store.
func (s *Store) Watch(ctx context.Context, start int64, onEvent func(rev int64, payload []byte) error, onProgress func(rev int64) error) error {
	return s.log.Watch(ctx, start, func(e eventlog.Event) error { return onEvent(e.Revision, e.Payload) }, onProgress)
}

// Update implements remediation.Store.
func (s *Store) Update(ctx context.Context, fn func(tx remediation.Tx) error) error {
	return s.db.Write(ctx, func(tx *sqlitedb.Tx) error { return fn(&storeTx{ctx: ctx, tx: tx, s: s}) })
}

type querier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

func nanos(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

func scanInvestigation(data []byte) (*remediation.Investigation, error) {
	var inv remediation.Investigation
	if err := json.Unmarshal(data, &inv); err != nil {
		return nil, fmt.Errorf("decode investigation: %w", err)
	}
	return &inv, nil
}

func scanAction(data []byte) (*remediation.Action, error) {
	var a remediation.Action
	if err := json.Unmarshal(data, &a); err != nil {
		return nil, fmt.Errorf("decode action: %w", err)
	}
	return &a, nil
}

func getInvestigation(ctx context.Context, q querier, where string, args ...any) (*remediation.Investigation, error) {
	var data []byte
	err := q.QueryRowContext(ctx, `SELECT data FROM investigations WHERE `+where, args...).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, remediation.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return scanInvestigation(data)
}

func getAction(ctx context.Context, q querier, id string) (*remediation.Action, error) {
	var data []byte
	err := q.QueryRowContext(ctx, `SELECT data FROM actions WHERE action_id = ?`, id).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: action %s", remediation.ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	return scanAction(data)
}

func queryActions(ctx context.Context, q querier, query string, args ...any) ([]*remediation.Action, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*remediation.Action
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			return nil, err
		}
		a, err := scanAction(data)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

func investigationActions(ctx context.Context, q querier, id string) ([]*remediation.Action, error) {
	return queryActions(ctx, q, `SELECT data FROM actions WHERE investigation_id = ? ORDER BY seq`, id)
}

// GetInvestigation implements remediation.Store.
func (s *Store) GetInvestigation(ctx context.Context, id string) (*remediation.Investigation, error) {
	inv, err := getInvestigation(ctx, s.db.Read(), `investigation_id = ?`, id)
	if errors.Is(err, remediation.ErrNotFound) {
		return nil, fmt.Errorf("%w: investigation %s", remediation.ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	if inv.Actions, err = investigationActions(ctx, s.db.Read(), id); err != nil {
		return nil, err
	}
	return inv, nil
}

// OpenInvestigation implements remediation.Store.
func (s *Store) OpenInvestigation(ctx context.Context, deviceID string) (*remediation.Investigation, error) {
	return getInvestigation(ctx, s.db.Read(), `device_id = ? AND open = 1`, deviceID)
}

func pageSize(n int) int {
	if n <= 0 {
		return DefaultPageSize
	}
	return min(n, MaxPageSize)
}

func encodeToken(v string) string { return base64.RawURLEncoding.EncodeToString([]byte(v)) }

func decodeSeqToken(tok string) (int64, error) {
	if tok == "" {
		return 0, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || !strings.HasPrefix(string(b), "seq:") {
		return 0, ErrBadPageToken
	}
	n, err := strconv.ParseInt(strings.TrimPrefix(string(b), "seq:"), 10, 64)
	if err != nil || n <= 0 {
		return 0, ErrBadPageToken
	}
	return n, nil
}

// ListInvestigations implements remediation.Store.
func (s *Store) ListInvestigations(ctx context.Context, f remediation.InvestigationFilter, size int, token string) ([]*remediation.Investigation, string, error) {
	size = pageSize(size)
	before, err := decodeSeqToken(token)
	if err != nil {
		return nil, "", err
	}
	where, args := []string{"1=1"}, []any{}
	if before > 0 {
		where, args = append(where, "seq < ?"), append(args, before)
	}
	if f.DeviceID != "" {
		where, args = append(where, "device_id = ?"), append(args, f.DeviceID)
	}
	if f.State != remediation.StateUnspecified {
		where, args = append(where, "state = ?"), append(args, int32(f.State))
	}
	out, next, err := pageBySeq(ctx, s.db.Read(), "investigations", where, args, size, scanInvestigation)
	if err != nil {
		return nil, "", err
	}
	for _, inv := range out {
		if inv.Actions, err = investigationActions(ctx, s.db.Read(), inv.ID); err != nil {
			return nil, "", err
		}
	}
	return out, next, nil
}

// GetAction implements remediation.Store.
func (s *Store) GetAction(ctx context.Context, id string) (*remediation.Action, error) {
	return getAction(ctx, s.db.Read(), id)
}

// ListActions implements remediation.Store.
func (s *Store) ListActions(ctx context.Context, f remediation.ActionFilter, size int, token string) ([]*remediation.Action, string, error) {
	size = pageSize(size)
	before, err := decodeSeqToken(token)
	if err != nil {
		return nil, "", err
	}
	where, args := []string{"1=1"}, []any{}
	if before > 0 {
		where, args = append(where, "seq < ?"), append(args, before)
	}
	if f.DeviceID != "" {
		where, args = append(where, "device_id = ?"), append(args, f.DeviceID)
	}
	if f.InvestigationID != "" {
		where, args = append(where, "investigation_id = ?"), append(args, f.InvestigationID)
	}
	if f.State != remediation.ActionStateUnspecified {
		where, args = append(where, "state = ?"), append(args, int32(f.State))
	}
	return pageBySeq(ctx, s.db.Read(), "actions", where, args, size, scanAction)
}

// pageBySeq reads one page, newest first, of the rows of table that match where,
// decoding each row's data with decode; the next page token names the last row's seq.
func pageBySeq[T any](ctx context.Context, db *sql.DB, table string, where []string, args []any, size int, decode func([]byte) (T, error)) ([]T, string, error) {
	rows, err := db.QueryContext(ctx, `SELECT seq, data FROM `+table+` WHERE `+strings.Join(where, " AND ")+` ORDER BY seq DESC LIMIT ?`, append(args, size+1)...)
	if err != nil {
		return nil, "", err
	}
	return scanSeqPage(rows, size, decode)
}

// scanSeqPage reads rows of (seq, data), newest first, decoding each data with
// decode; the next page token names the last row's seq when there are more than size.
func scanSeqPage[T any](rows *sql.Rows, size int, decode func([]byte) (T, error)) ([]T, string, error) {
	defer rows.Close()
	var out []T
	var seqs []int64
	for rows.Next() {
		var seq int64
		var data []byte
		if err := rows.Scan(&seq, &data); err != nil {
			return nil, "", err
		}
		v, err := decode(data)
		if err != nil {
			return nil, "", err
		}
		out, seqs = append(out, v), append(seqs, seq)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	next := ""
	if len(out) > size {
		out = out[:size]
		next = encodeToken("seq:" + strconv.FormatInt(seqs[size-1], 10))
	}
	return out, next, nil
}

// DeviceActions implements remediation.Store.
func (s *Store) DeviceActions(ctx context.Context, deviceID string, states ...remediation.ActionState) ([]*remediation.Action, error) {
	if len(states) == 0 {
		return queryActions(ctx, s.db.Read(), `SELECT data FROM actions WHERE device_id = ? ORDER BY seq`, deviceID)
	}
	ph := strings.TrimSuffix(strings.Repeat("?,", len(states)), ",")
	args := []any{deviceID}
	for _, st := range states {
		args = append(args, int32(st))
	}
	return queryActions(ctx, s.db.Read(), `SELECT data FROM actions WHERE device_id = ? AND state IN (`+ph+`) ORDER BY seq`, args...)
}

// NextDue implements remediation.Store.
func (s *Store) NextDue(ctx context.Context) (time.Time, bool, error) {
	var n sql.NullInt64
	if err := s.db.Read().QueryRowContext(ctx, `SELECT MIN(due_unix_nano) FROM actions WHERE due_unix_nano IS NOT NULL`).Scan(&n); err != nil {
		return time.Time{}, false, err
	}
	if !n.Valid {
		return time.Time{}, false, nil
	}
	return time.Unix(0, n.Int64).UTC(), true, nil
}

// AlertLinked implements remediation.Store.
func (s *Store) AlertLinked(ctx context.Context, alertID string) (string, bool, error) {
	return alertLinked(ctx, s.db.Read(), alertID)
}

func alertLinked(ctx context.Context, q querier, alertID string) (string, bool, error) {
	var id string
	err := q.QueryRowContext(ctx, `SELECT investigation_id FROM alert_links WHERE alert_id = ?`, alertID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return id, true, nil
}

// AutomationLevels implements remediation.Store.
func (s *Store) AutomationLevels(ctx context.Context) ([]remediation.AutomationSetting, error) {
	rows, err := s.db.Read().QueryContext(ctx, `SELECT device_group, level, update_unix_nano, updated_by FROM automation_levels ORDER BY device_group`)
	if err != nil {
		return nil, err
	}
	return scanAutomationLevels(rows)
}

func scanAutomationLevels(rows *sql.Rows) ([]remediation.AutomationSetting, error) {
	defer rows.Close()
	var out []remediation.AutomationSetting
	for rows.Next() {
		var a remediation.AutomationSetting
		var t int64
		if err := rows.Scan(&a.Group, &a.Level, &t, &a.UpdatedBy); err != nil {
			return nil, err
		}
		a.UpdateTime = time.Unix(0, t).UTC()
		out = append(out, a)
	}
	return out, rows.Err()
}

// Agent implements remediation.Store.
func (s *Store) Agent(ctx context.Context, deviceID string) (*remediation.Agent, error) {
	return getAgent(ctx, s.db.Read(), `SELECT data FROM agents WHERE device_id = ?`, deviceID)
}

// getAgent reads one agent's record with query (its one argument is the device id).
func getAgent(ctx context.Context, q querier, query, deviceID string) (*remediation.Agent, error) {
	var data []byte
	err := q.QueryRowContext(ctx, query, deviceID).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: agent of device %s", remediation.ErrNotFound, deviceID)
	}
	if err != nil {
		return nil, err
	}
	var a remediation.Agent
	if err := json.Unmarshal(data, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// ListAgents implements remediation.Store.
func (s *Store) ListAgents(ctx context.Context, size int, token string) ([]*remediation.Agent, string, error) {
	size = pageSize(size)
	after := ""
	if token != "" {
		b, err := base64.RawURLEncoding.DecodeString(token)
		if err != nil || !strings.HasPrefix(string(b), "dev:") {
			return nil, "", ErrBadPageToken
		}
		after = strings.TrimPrefix(string(b), "dev:")
	}
	rows, err := s.db.Read().QueryContext(ctx, `SELECT data FROM agents WHERE device_id > ? ORDER BY device_id LIMIT ?`, after, size+1)
	if err != nil {
		return nil, "", err
	}
	return scanAgentPage(rows, size)
}

// scanAgentPage reads agents' data rows by device id; the next page token names
// the last device when there are more than size.
func scanAgentPage(rows *sql.Rows, size int) ([]*remediation.Agent, string, error) {
	defer rows.Close()
	var out []*remediation.Agent
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			return nil, "", err
		}
		var a remediation.Agent
		if err := json.Unmarshal(data, &a); err != nil {
			return nil, "", err
		}
		out = append(out, &a)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	next := ""
	if len(out) > size {
		out = out[:size]
		next = encodeToken("dev:" + out[size-1].DeviceID)
	}
	return out, next, nil
}

// PendingResolutions implements remediation.Store.
func (s *Store) PendingResolutions(ctx context.Context) ([]remediation.Resolution, error) {
	rows, err := s.db.Read().QueryContext(ctx, `SELECT alert_id, investigation_id, traceparent, tracestate, create_unix_nano FROM pending_resolutions ORDER BY seq`)
	if err != nil {
		return nil, err
	}
	return scanResolutions(rows)
}

func scanResolutions(rows *sql.Rows) ([]remediation.Resolution, error) {
	defer rows.Close()
	var out []remediation.Resolution
	for rows.Next() {
		var r remediation.Resolution
		var t int64
		if err := rows.Scan(&r.AlertID, &r.InvestigationID, &r.Trace.TraceParent, &r.Trace.TraceState, &t); err != nil {
			return nil, err
		}
		r.CreateTime = time.Unix(0, t).UTC()
		out = append(out, r)
	}
	return out, rows.Err()
}

const cursorName = "risk"

// Cursor implements remediation.Store.
func (s *Store) Cursor(ctx context.Context) (int64, bool, error) {
	var rev int64
	err := s.db.Read().QueryRowContext(ctx, `SELECT revision FROM consumer_cursor WHERE name = ?`, cursorName).Scan(&rev)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	return rev, err == nil, err
}

type storeTx struct {
	ctx context.Context
	tx  *sqlitedb.Tx
	s   *Store
}

func (t *storeTx) Investigation(id string) (*remediation.Investigation, error) {
	inv, err := getInvestigation(t.ctx, t.tx, `investigation_id = ?`, id)
	if errors.Is(err, remediation.ErrNotFound) {
		return nil, fmt.Errorf("%w: investigation %s", remediation.ErrNotFound, id)
	}
	return inv, err
}

func (t *storeTx) OpenInvestigation(deviceID string) (*remediation.Investigation, error) {
	return getInvestigation(t.ctx, t.tx, `device_id = ? AND open = 1`, deviceID)
}

func (t *storeTx) PutInvestigation(inv *remediation.Investigation) error {
	data, err := json.Marshal(inv)
	if err != nil {
		return err
	}
	open := 0
	if inv.State.Open() {
		open = 1
	}
	_, err = t.tx.ExecContext(t.ctx, `INSERT INTO investigations (investigation_id, device_id, state, open, data) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (investigation_id) DO UPDATE SET state = excluded.state, open = excluded.open, data = excluded.data`,
		inv.ID, inv.DeviceID, int32(inv.State), open, data)
	return err
}

func (t *storeTx) Action(id string) (*remediation.Action, error) { return getAction(t.ctx, t.tx, id) }

func (t *storeTx) Actions(investigationID string) ([]*remediation.Action, error) {
	return investigationActions(t.ctx, t.tx, investigationID)
}

func (t *storeTx) PutAction(a *remediation.Action) error {
	data, err := json.Marshal(a)
	if err != nil {
		return err
	}
	_, err = t.tx.ExecContext(t.ctx, `INSERT INTO actions (action_id, investigation_id, device_id, state, due_unix_nano, data) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (action_id) DO UPDATE SET state = excluded.state, due_unix_nano = excluded.due_unix_nano, data = excluded.data`,
		a.ID, a.InvestigationID, a.DeviceID, int32(a.State), nanos(a.Due()), data)
	return err
}

func (t *storeTx) DueActions(now time.Time) ([]*remediation.Action, error) {
	return queryActions(t.ctx, t.tx, `SELECT data FROM actions WHERE due_unix_nano IS NOT NULL AND due_unix_nano <= ? ORDER BY due_unix_nano`, now.UnixNano())
}

func (t *storeTx) LinkAlert(alertID, investigationID string) (bool, error) {
	res, err := t.tx.ExecContext(t.ctx, `INSERT INTO alert_links (alert_id, investigation_id) VALUES (?, ?) ON CONFLICT (alert_id) DO NOTHING`, alertID, investigationID)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func (t *storeTx) AlertLinked(alertID string) (string, bool, error) {
	return alertLinked(t.ctx, t.tx, alertID)
}

func (t *storeTx) RelinkAlert(alertID, investigationID string) error {
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO alert_links (alert_id, investigation_id) VALUES (?, ?)
		ON CONFLICT (alert_id) DO UPDATE SET investigation_id = excluded.investigation_id`, alertID, investigationID)
	return err
}

func (t *storeTx) PutAutomationLevel(a remediation.AutomationSetting) error {
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO automation_levels (device_group, level, update_unix_nano, updated_by) VALUES (?, ?, ?, ?)
		ON CONFLICT (device_group) DO UPDATE SET level = excluded.level, update_unix_nano = excluded.update_unix_nano, updated_by = excluded.updated_by`,
		a.Group, int32(a.Level), a.UpdateTime.UnixNano(), a.UpdatedBy)
	return err
}

func (t *storeTx) Agent(deviceID string) (*remediation.Agent, error) {
	return getAgent(t.ctx, t.tx, `SELECT data FROM agents WHERE device_id = ?`, deviceID)
}

func (t *storeTx) PutAgent(a *remediation.Agent) error {
	data, err := json.Marshal(a)
	if err != nil {
		return err
	}
	_, err = t.tx.ExecContext(t.ctx, `INSERT INTO agents (device_id, data) VALUES (?, ?) ON CONFLICT (device_id) DO UPDATE SET data = excluded.data`, a.DeviceID, data)
	return err
}

func (t *storeTx) AddResolution(r remediation.Resolution) error {
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO pending_resolutions (alert_id, investigation_id, traceparent, tracestate, create_unix_nano) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (alert_id) DO NOTHING`, r.AlertID, r.InvestigationID, r.Trace.TraceParent, r.Trace.TraceState, r.CreateTime.UnixNano())
	return err
}

func (t *storeTx) DeleteResolution(alertID string) error {
	_, err := t.tx.ExecContext(t.ctx, `DELETE FROM pending_resolutions WHERE alert_id = ?`, alertID)
	return err
}

func (t *storeTx) SetCursor(rev int64) error {
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO consumer_cursor (name, revision) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET revision = excluded.revision`, cursorName, rev)
	return err
}

// Audit implements remediation.Tx.
func (t *storeTx) Audit(ctx context.Context, c audit.Change) error {
	return t.s.audit.Append(ctx, t.tx, c)
}

func (t *storeTx) Emit(ev remediation.Event) error {
	payload, err := t.s.encode(ev)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	_, err = t.s.log.Append(t.tx, eventOf(ev, payload))
	return err
}

// eventOf is the log entry of an event: type "action" keyed by the action's id, or
// "investigation" keyed by the investigation's.
func eventOf(ev remediation.Event, payload []byte) eventlog.Event {
	typ, key := "investigation", ""
	if ev.Action != nil {
		typ, key = "action", ev.Action.ID
	} else if ev.Investigation != nil {
		key = ev.Investigation.ID
	}
	return eventlog.Event{Type: typ, Key: key, Payload: payload, TraceParent: ev.Trace.TraceParent, TraceState: ev.Trace.TraceState, Time: ev.Time}
}
