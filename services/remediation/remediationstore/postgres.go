package remediationstore

import (
	"context"
	"database/sql"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/eventlog"
	"github.com/condaccess/condaccess/internal/lease"
	"github.com/condaccess/condaccess/internal/pgdb"
	"github.com/condaccess/condaccess/services/remediation"
)

//go:embed pgmigrations/*.sql
var pgMigrationFiles embed.FS

// PGSchema is the remediation service's schema in a shared PostgreSQL database.
const PGSchema = "remediation"

// eventTable is the event log's table (eventlog's default, as in the SQLite store).
const eventTable = "events"

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
	// Encode turns an event into the payload stored in the event log.
	Encode func(remediation.Event) ([]byte, error)
	// Retention, ProgressInterval: as in Options. CompactInterval: how often this
	// replica compacts the log (eventlog's default; negative: never, e.g. when only
	// a lease holder compacts).
	Retention        int64
	ProgressInterval time.Duration
	CompactInterval  time.Duration
	// PollInterval is the event log's fallback poll for other replicas' events (default 1s).
	PollInterval time.Duration
	// NoNotify turns LISTEN/NOTIFY off: watchers learn of other replicas' events by polling.
	NoNotify bool
	Logger   *slog.Logger
}

// PGStore is the PostgreSQL implementation of remediation.Store. Any number of
// replicas may open the same schema: each serves reads and watches from the tables,
// and every Update locks the event log's counter row first, so Updates from every
// replica run one at a time and the domain's read-then-write logic (one open
// investigation per device, an alert linked once, an action decided once) stays as
// safe as on the one SQLite writer. It keeps no cache.
//
// An Update made under a context from WithFence also checks that lease's fencing
// token in its transaction: the leader's consumer, timers and retries run under
// one, so a replica that lost the lease (even one paused past its expiry) commits
// none of them.
//
// Audit events are written to the schema's audit_events table, which Audit lists and
// compacts.
type PGStore struct {
	db       *pgdb.DB
	log      *eventlog.PGLog
	audit    *audit.PGWriter
	auditLog *audit.Log
	encode   func(remediation.Event) ([]byte, error)
}

var _ remediation.Store = (*PGStore)(nil)

// OpenPG opens (creating or migrating) the store in its schema of opts.URL.
func OpenPG(ctx context.Context, opts PGOptions) (*PGStore, error) {
	if opts.Encode == nil {
		return nil, errors.New("remediationstore: PGOptions.Encode is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Schema == "" {
		opts.Schema = PGSchema
	}
	db, err := pgdb.Open(ctx, pgdb.Options{URL: opts.URL, Schema: opts.Schema, Migrations: PGMigrations(), Logger: opts.Logger})
	if err != nil {
		return nil, fmt.Errorf("remediationstore: %w", err)
	}
	l, err := eventlog.NewPG(ctx, db, eventlog.PGOptions{
		Options: eventlog.Options{Table: eventTable, Retention: opts.Retention, ProgressInterval: opts.ProgressInterval,
			CompactInterval: opts.CompactInterval, Logger: opts.Logger},
		PollInterval: opts.PollInterval,
		NoNotify:     opts.NoNotify,
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("remediationstore: %w", err)
	}
	ao := audit.Options{Source: "remediation", Logger: opts.Logger}
	return &PGStore{db: db, log: l, audit: audit.NewPGWriter(ao), auditLog: audit.NewPG(db, ao), encode: opts.Encode}, nil
}

// Audit returns the audit log of the store's admin changes (every replica's).
func (s *PGStore) Audit() *audit.Log { return s.auditLog }

// Close ends every watcher and closes the pool.
func (s *PGStore) Close() error { return errors.Join(s.log.Close(), s.db.Close()) }

// Lease returns a leader lease kept in the store's schema (table leases).
func (s *PGStore) Lease(opts lease.PGOptions) *lease.PG { return lease.NewPG(s.db.Read(), opts) }

// Compact drops events beyond the retention now.
func (s *PGStore) Compact(ctx context.Context) error { return s.log.Compact(ctx) }

// Revision implements remediation.Store: the highest revision this replica has seen.
func (s *PGStore) Revision() int64 { return s.log.Revision() }

// Head reads the committed head revision from the database (every replica's commits).
func (s *PGStore) Head(ctx context.Context) (int64, error) { return s.log.Head(ctx) }

// Watch implements remediation.Store.
func (s *PGStore) Watch(ctx context.Context, start int64, onEvent func(rev int64, payload []byte) error, onProgress func(rev int64) error) error {
	return s.log.Watch(ctx, start, func(e eventlog.Event) error { return onEvent(e.Revision, e.Payload) }, onProgress)
}

type fenceKey struct{}

type fence struct {
	l     lease.Lease
	token int64
}

// WithFence returns a context under which every PGStore.Update first checks, in its
// transaction, that token is still l's current token (lease.Lease.Fence); the
// Update fails with lease.ErrFenced, changing nothing, once it is not.
func WithFence(ctx context.Context, l lease.Lease, token int64) context.Context {
	return context.WithValue(ctx, fenceKey{}, fence{l: l, token: token})
}

// Update implements remediation.Store.
func (s *PGStore) Update(ctx context.Context, fn func(tx remediation.Tx) error) error {
	f, fenced := ctx.Value(fenceKey{}).(fence)
	return s.db.Write(ctx, func(tx *pgdb.Tx) error {
		// Serialize with every other Update, on every replica: lock the counter row.
		if _, err := s.log.Next(tx); err != nil {
			return err
		}
		if fenced {
			if err := f.l.Fence(ctx, tx, f.token); err != nil {
				return err
			}
		}
		return fn(&pgStoreTx{ctx: ctx, tx: tx, s: s})
	})
}

func pgGetAction(ctx context.Context, q querier, id string) (*remediation.Action, error) {
	var data []byte
	err := q.QueryRowContext(ctx, `SELECT data FROM actions WHERE action_id = $1`, id).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: action %s", remediation.ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	return scanAction(data)
}

func pgInvestigationActions(ctx context.Context, q querier, id string) ([]*remediation.Action, error) {
	return queryActions(ctx, q, `SELECT data FROM actions WHERE investigation_id = $1 ORDER BY seq`, id)
}

// GetInvestigation implements remediation.Store.
func (s *PGStore) GetInvestigation(ctx context.Context, id string) (*remediation.Investigation, error) {
	inv, err := getInvestigation(ctx, s.db.Read(), `investigation_id = $1`, id)
	if errors.Is(err, remediation.ErrNotFound) {
		return nil, fmt.Errorf("%w: investigation %s", remediation.ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	if inv.Actions, err = pgInvestigationActions(ctx, s.db.Read(), id); err != nil {
		return nil, err
	}
	return inv, nil
}

// OpenInvestigation implements remediation.Store.
func (s *PGStore) OpenInvestigation(ctx context.Context, deviceID string) (*remediation.Investigation, error) {
	return getInvestigation(ctx, s.db.Read(), `device_id = $1 AND open = 1`, deviceID)
}

// pgWhere builds a WHERE clause with $n placeholders.
type pgWhere struct {
	conds []string
	args  []any
}

func (w *pgWhere) add(cond string, v any) {
	w.args = append(w.args, v)
	w.conds = append(w.conds, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(w.args))))
}

func (w *pgWhere) String() string {
	if len(w.conds) == 0 {
		return "TRUE"
	}
	return strings.Join(w.conds, " AND ")
}

// ListInvestigations implements remediation.Store.
func (s *PGStore) ListInvestigations(ctx context.Context, f remediation.InvestigationFilter, size int, token string) ([]*remediation.Investigation, string, error) {
	size = pageSize(size)
	before, err := decodeSeqToken(token)
	if err != nil {
		return nil, "", err
	}
	var w pgWhere
	if before > 0 {
		w.add("seq < ?", before)
	}
	if f.DeviceID != "" {
		w.add("device_id = ?", f.DeviceID)
	}
	if f.State != remediation.StateUnspecified {
		w.add("state = ?", int32(f.State))
	}
	out, next, err := pgPageBySeq(ctx, s.db.Read(), "investigations", &w, size, scanInvestigation)
	if err != nil {
		return nil, "", err
	}
	for _, inv := range out {
		if inv.Actions, err = pgInvestigationActions(ctx, s.db.Read(), inv.ID); err != nil {
			return nil, "", err
		}
	}
	return out, next, nil
}

// GetAction implements remediation.Store.
func (s *PGStore) GetAction(ctx context.Context, id string) (*remediation.Action, error) {
	return pgGetAction(ctx, s.db.Read(), id)
}

// ListActions implements remediation.Store.
func (s *PGStore) ListActions(ctx context.Context, f remediation.ActionFilter, size int, token string) ([]*remediation.Action, string, error) {
	size = pageSize(size)
	before, err := decodeSeqToken(token)
	if err != nil {
		return nil, "", err
	}
	var w pgWhere
	if before > 0 {
		w.add("seq < ?", before)
	}
	if f.DeviceID != "" {
		w.add("device_id = ?", f.DeviceID)
	}
	if f.InvestigationID != "" {
		w.add("investigation_id = ?", f.InvestigationID)
	}
	if f.State != remediation.ActionStateUnspecified {
		w.add("state = ?", int32(f.State))
	}
	return pgPageBySeq(ctx, s.db.Read(), "actions", &w, size, scanAction)
}

// pgPageBySeq is pageBySeq on PostgreSQL.
func pgPageBySeq[T any](ctx context.Context, db *sql.DB, table string, w *pgWhere, size int, decode func([]byte) (T, error)) ([]T, string, error) {
	args := append(append([]any(nil), w.args...), size+1)
	rows, err := db.QueryContext(ctx, `SELECT seq, data FROM `+table+` WHERE `+w.String()+` ORDER BY seq DESC LIMIT $`+strconv.Itoa(len(args)), args...)
	if err != nil {
		return nil, "", err
	}
	return scanSeqPage(rows, size, decode)
}

// DeviceActions implements remediation.Store.
func (s *PGStore) DeviceActions(ctx context.Context, deviceID string, states ...remediation.ActionState) ([]*remediation.Action, error) {
	if len(states) == 0 {
		return queryActions(ctx, s.db.Read(), `SELECT data FROM actions WHERE device_id = $1 ORDER BY seq`, deviceID)
	}
	ss := make([]int32, len(states))
	for i, st := range states {
		ss[i] = int32(st)
	}
	return queryActions(ctx, s.db.Read(), `SELECT data FROM actions WHERE device_id = $1 AND state = ANY($2) ORDER BY seq`, deviceID, ss)
}

// NextDue implements remediation.Store.
func (s *PGStore) NextDue(ctx context.Context) (time.Time, bool, error) {
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
func (s *PGStore) AlertLinked(ctx context.Context, alertID string) (string, bool, error) {
	return pgAlertLinked(ctx, s.db.Read(), alertID)
}

func pgAlertLinked(ctx context.Context, q querier, alertID string) (string, bool, error) {
	var id string
	err := q.QueryRowContext(ctx, `SELECT investigation_id FROM alert_links WHERE alert_id = $1`, alertID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return id, true, nil
}

// AutomationLevels implements remediation.Store.
func (s *PGStore) AutomationLevels(ctx context.Context) ([]remediation.AutomationSetting, error) {
	rows, err := s.db.Read().QueryContext(ctx, `SELECT device_group, level, update_unix_nano, updated_by FROM automation_levels ORDER BY device_group`)
	if err != nil {
		return nil, err
	}
	return scanAutomationLevels(rows)
}

// Agent implements remediation.Store.
func (s *PGStore) Agent(ctx context.Context, deviceID string) (*remediation.Agent, error) {
	return getAgent(ctx, s.db.Read(), `SELECT data FROM agents WHERE device_id = $1`, deviceID)
}

// ListAgents implements remediation.Store.
func (s *PGStore) ListAgents(ctx context.Context, size int, token string) ([]*remediation.Agent, string, error) {
	size = pageSize(size)
	after := ""
	if token != "" {
		b, err := base64.RawURLEncoding.DecodeString(token)
		if err != nil || !strings.HasPrefix(string(b), "dev:") {
			return nil, "", ErrBadPageToken
		}
		after = strings.TrimPrefix(string(b), "dev:")
	}
	rows, err := s.db.Read().QueryContext(ctx, `SELECT data FROM agents WHERE device_id > $1 ORDER BY device_id LIMIT $2`, after, size+1)
	if err != nil {
		return nil, "", err
	}
	return scanAgentPage(rows, size)
}

// PendingResolutions implements remediation.Store.
func (s *PGStore) PendingResolutions(ctx context.Context) ([]remediation.Resolution, error) {
	rows, err := s.db.Read().QueryContext(ctx, `SELECT alert_id, investigation_id, traceparent, tracestate, create_unix_nano FROM pending_resolutions ORDER BY seq`)
	if err != nil {
		return nil, err
	}
	return scanResolutions(rows)
}

// Cursor implements remediation.Store.
func (s *PGStore) Cursor(ctx context.Context) (int64, bool, error) {
	var rev int64
	err := s.db.Read().QueryRowContext(ctx, `SELECT revision FROM consumer_cursor WHERE name = $1`, cursorName).Scan(&rev)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	return rev, err == nil, err
}

// pgStoreTx implements remediation.Tx over one pgdb write: every read goes to the
// transaction (it sees its own changes), nothing is cached.
type pgStoreTx struct {
	ctx context.Context
	tx  *pgdb.Tx
	s   *PGStore
}

func (t *pgStoreTx) Investigation(id string) (*remediation.Investigation, error) {
	inv, err := getInvestigation(t.ctx, t.tx, `investigation_id = $1`, id)
	if errors.Is(err, remediation.ErrNotFound) {
		return nil, fmt.Errorf("%w: investigation %s", remediation.ErrNotFound, id)
	}
	return inv, err
}

func (t *pgStoreTx) OpenInvestigation(deviceID string) (*remediation.Investigation, error) {
	return getInvestigation(t.ctx, t.tx, `device_id = $1 AND open = 1`, deviceID)
}

func (t *pgStoreTx) PutInvestigation(inv *remediation.Investigation) error {
	data, err := json.Marshal(inv)
	if err != nil {
		return err
	}
	open := 0
	if inv.State.Open() {
		open = 1
	}
	_, err = t.tx.ExecContext(t.ctx, `INSERT INTO investigations (investigation_id, device_id, state, open, data) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (investigation_id) DO UPDATE SET state = excluded.state, open = excluded.open, data = excluded.data`,
		inv.ID, inv.DeviceID, int32(inv.State), open, data)
	return err
}

func (t *pgStoreTx) Action(id string) (*remediation.Action, error) {
	return pgGetAction(t.ctx, t.tx, id)
}

func (t *pgStoreTx) Actions(investigationID string) ([]*remediation.Action, error) {
	return pgInvestigationActions(t.ctx, t.tx, investigationID)
}

func (t *pgStoreTx) PutAction(a *remediation.Action) error {
	data, err := json.Marshal(a)
	if err != nil {
		return err
	}
	_, err = t.tx.ExecContext(t.ctx, `INSERT INTO actions (action_id, investigation_id, device_id, state, due_unix_nano, data) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (action_id) DO UPDATE SET state = excluded.state, due_unix_nano = excluded.due_unix_nano, data = excluded.data`,
		a.ID, a.InvestigationID, a.DeviceID, int32(a.State), nanos(a.Due()), data)
	return err
}

func (t *pgStoreTx) DueActions(now time.Time) ([]*remediation.Action, error) {
	return queryActions(t.ctx, t.tx, `SELECT data FROM actions WHERE due_unix_nano IS NOT NULL AND due_unix_nano <= $1 ORDER BY due_unix_nano`, now.UnixNano())
}

func (t *pgStoreTx) LinkAlert(alertID, investigationID string) (bool, error) {
	res, err := t.tx.ExecContext(t.ctx, `INSERT INTO alert_links (alert_id, investigation_id) VALUES ($1, $2) ON CONFLICT (alert_id) DO NOTHING`, alertID, investigationID)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func (t *pgStoreTx) AlertLinked(alertID string) (string, bool, error) {
	return pgAlertLinked(t.ctx, t.tx, alertID)
}

func (t *pgStoreTx) RelinkAlert(alertID, investigationID string) error {
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO alert_links (alert_id, investigation_id) VALUES ($1, $2)
		ON CONFLICT (alert_id) DO UPDATE SET investigation_id = excluded.investigation_id`, alertID, investigationID)
	return err
}

func (t *pgStoreTx) PutAutomationLevel(a remediation.AutomationSetting) error {
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO automation_levels (device_group, level, update_unix_nano, updated_by) VALUES ($1, $2, $3, $4)
		ON CONFLICT (device_group) DO UPDATE SET level = excluded.level, update_unix_nano = excluded.update_unix_nano, updated_by = excluded.updated_by`,
		a.Group, int32(a.Level), a.UpdateTime.UnixNano(), a.UpdatedBy)
	return err
}

func (t *pgStoreTx) Agent(deviceID string) (*remediation.Agent, error) {
	return getAgent(t.ctx, t.tx, `SELECT data FROM agents WHERE device_id = $1`, deviceID)
}

func (t *pgStoreTx) PutAgent(a *remediation.Agent) error {
	data, err := json.Marshal(a)
	if err != nil {
		return err
	}
	_, err = t.tx.ExecContext(t.ctx, `INSERT INTO agents (device_id, data) VALUES ($1, $2) ON CONFLICT (device_id) DO UPDATE SET data = excluded.data`, a.DeviceID, data)
	return err
}

func (t *pgStoreTx) AddResolution(r remediation.Resolution) error {
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO pending_resolutions (alert_id, investigation_id, traceparent, tracestate, create_unix_nano) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (alert_id) DO NOTHING`, r.AlertID, r.InvestigationID, r.Trace.TraceParent, r.Trace.TraceState, r.CreateTime.UnixNano())
	return err
}

func (t *pgStoreTx) DeleteResolution(alertID string) error {
	_, err := t.tx.ExecContext(t.ctx, `DELETE FROM pending_resolutions WHERE alert_id = $1`, alertID)
	return err
}

func (t *pgStoreTx) SetCursor(rev int64) error {
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO consumer_cursor (name, revision) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET revision = excluded.revision`, cursorName, rev)
	return err
}

// Audit implements remediation.Tx.
func (t *pgStoreTx) Audit(ctx context.Context, c audit.Change) error {
	return t.s.audit.Append(ctx, t.tx, c)
}

func (t *pgStoreTx) Emit(ev remediation.Event) error {
	payload, err := t.s.encode(ev)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	_, err = t.s.log.Append(t.tx, eventOf(ev, payload))
	return err
}
