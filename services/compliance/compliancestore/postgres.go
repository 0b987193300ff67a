package compliancestore

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/eventlog"
	"github.com/condaccess/condaccess/internal/lease"
	"github.com/condaccess/condaccess/internal/pgdb"
	"github.com/condaccess/condaccess/services/compliance"
)

//go:embed pgmigrations/*.sql
var pgMigrationFiles embed.FS

// PGSchema is the compliance service's schema in a shared PostgreSQL database.
const PGSchema = "compliance"

// PGMigrations returns the PostgreSQL store's schema migrations, in order (append only).
func PGMigrations() []string {
	out := append([]string(nil), eventlog.PGMigrations(EventTable)...)
	out = append(out, pgdb.MigrationFiles(pgMigrationFiles, "pgmigrations/*.sql")...)
	out = append(out, audit.PGMigrations("")...)
	return append(out, lease.PGMigrations()...)
}

// PGOptions configures OpenPG.
type PGOptions struct {
	// URL is the PostgreSQL database URL; the store lives in schema Schema (default PGSchema).
	URL    string
	Schema string
	// Retention keeps at least this many newest events (0 = keep all).
	Retention int64
	// ProgressInterval is the idle progress interval of watchers (default 1s).
	ProgressInterval time.Duration
	// CompactInterval: how often this replica compacts the event log (negative: never;
	// the service's leader compacts).
	CompactInterval time.Duration
	// PollInterval is the event log's fallback poll for other replicas' events (default 1s).
	PollInterval time.Duration
	// NoNotify turns LISTEN/NOTIFY off (watchers learn of other replicas' events by polling).
	NoNotify bool
	Logger   *slog.Logger
}

// PGStore is the PostgreSQL implementation of compliance.Store. Any number of
// processes may open the same schema: each serves reads and watches from the tables,
// and every Update first locks the event log's counter row, so Updates from every
// replica run one at a time and their read-then-write logic (cursor checks,
// versions, sweeps) stays as safe as on the one SQLite writer. It keeps no
// write-path cache. An Update whose context carries a fence (WithFence) also checks
// the lease's fencing token in its transaction.
//
// Audit events are written to the schema's audit_events table, which Audit lists and
// compacts.
type PGStore struct {
	db       *pgdb.DB
	log      *eventlog.PGLog
	audit    *audit.PGWriter
	auditLog *audit.Log
}

var _ compliance.Store = (*PGStore)(nil)

// OpenPG opens (creating or migrating) the store in its schema of opts.URL.
func OpenPG(ctx context.Context, opts PGOptions) (*PGStore, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	db, err := openPGDB(ctx, opts.URL, opts.Schema, opts.Logger)
	if err != nil {
		return nil, err
	}
	l, err := eventlog.NewPG(ctx, db, eventlog.PGOptions{
		Options: eventlog.Options{Table: EventTable, Retention: opts.Retention, ProgressInterval: opts.ProgressInterval,
			CompactInterval: opts.CompactInterval, Logger: opts.Logger},
		PollInterval: opts.PollInterval,
		NoNotify:     opts.NoNotify,
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("compliancestore: %w", err)
	}
	ao := audit.Options{Source: "compliance", Logger: opts.Logger}
	return &PGStore{db: db, log: l, audit: audit.NewPGWriter(ao), auditLog: audit.NewPG(db, ao)}, nil
}

// Audit returns the audit log of the store's admin changes (every replica's).
func (s *PGStore) Audit() *audit.Log { return s.auditLog }

func openPGDB(ctx context.Context, url, schema string, logger *slog.Logger) (*pgdb.DB, error) {
	if schema == "" {
		schema = PGSchema
	}
	db, err := pgdb.Open(ctx, pgdb.Options{URL: url, Schema: schema, Migrations: PGMigrations(), Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("compliancestore: %w", err)
	}
	return db, nil
}

// Close ends every watcher and closes the pool.
func (s *PGStore) Close() error { return errors.Join(s.log.Close(), s.db.Close()) }

// Lease returns a leader lease kept in the store's schema (table leases).
func (s *PGStore) Lease(opts lease.PGOptions) *lease.PG { return lease.NewPG(s.db.Read(), opts) }

// Compact drops events beyond the retention now.
func (s *PGStore) Compact(ctx context.Context) error { return s.log.Compact(ctx) }

// Log returns the event log.
func (s *PGStore) Log() *eventlog.PGLog { return s.log }

type fenceKey struct{}

type fence struct {
	l     lease.Lease
	token int64
}

// WithFence returns ctx under which every PGStore Update checks l's fencing token
// (lease.Lease.Fence) in its transaction and fails with lease.ErrFenced, changing
// nothing, once the token has moved on. The leader's background work (the risk
// consumer, sweeps, deadlines) runs under it, so a replica that lost the lease
// cannot advance a cursor or apply an event.
func WithFence(ctx context.Context, l lease.Lease, token int64) context.Context {
	return context.WithValue(ctx, fenceKey{}, fence{l, token})
}

// Update implements compliance.Store.
func (s *PGStore) Update(ctx context.Context, fn func(tx compliance.Tx) error) error {
	return s.db.Write(ctx, func(tx *pgdb.Tx) error {
		// Serialize with every other Update, on every replica: lock the counter row.
		if _, err := s.log.Next(tx); err != nil {
			return err
		}
		if err := checkFence(ctx, tx); err != nil {
			return err
		}
		return fn(&pgTxn{tx: tx, s: s})
	})
}

// checkFence checks, in tx, the fencing token ctx carries (WithFence), if any.
func checkFence(ctx context.Context, tx *pgdb.Tx) error {
	if f, fenced := ctx.Value(fenceKey{}).(fence); fenced {
		return f.l.Fence(ctx, tx, f.token)
	}
	return nil
}

// Revision implements compliance.Store.
func (s *PGStore) Revision() int64 { return s.log.Revision() }

// Watch implements compliance.Store; errors are eventlog's (see eventlog.ToStatus).
func (s *PGStore) Watch(ctx context.Context, start int64, onEvent func(compliance.StoredEvent) error, onProgress func(int64) error) error {
	return s.log.Watch(ctx, start, func(e eventlog.Event) error {
		return onEvent(compliance.StoredEvent{
			Revision: e.Revision, Type: e.Type, Key: e.Key, Payload: e.Payload,
			TraceParent: e.TraceParent, TraceState: e.TraceState, Time: e.Time,
		})
	}, onProgress)
}

// pgLimit is a LIMIT argument: NULL (no limit) for n <= 0.
func pgLimit(n int) any {
	if n <= 0 {
		return nil
	}
	return n
}

// args numbers PostgreSQL placeholders as a query is built.
type args []any

func (a *args) add(v any) string {
	*a = append(*a, v)
	return fmt.Sprintf("$%d", len(*a))
}

// ---- reads ----

func pgGetDevice(ctx context.Context, q querier, id string) (*compliance.Device, error) {
	return getOne[compliance.Device](ctx, q, fmt.Errorf("%w: %s", compliance.ErrDeviceNotFound, id),
		`SELECT data FROM devices WHERE device_id = $1`, id)
}

func pgGetPolicy(ctx context.Context, q querier, id string) (*compliance.Policy, error) {
	return getOne[compliance.Policy](ctx, q, fmt.Errorf("%w: %s", compliance.ErrPolicyNotFound, id),
		`SELECT data FROM policies WHERE policy_id = $1`, id)
}

func pgGetSettings(ctx context.Context, q querier) (compliance.Settings, error) {
	r, err := getOne[settingsRow](ctx, q, sql.ErrNoRows, `SELECT data FROM settings WHERE id = 1`)
	if errors.Is(err, sql.ErrNoRows) {
		return compliance.Settings{Version: 1}, nil
	}
	if err != nil {
		return compliance.Settings{}, err
	}
	return compliance.Settings{DevicesWithoutPolicyCompliant: r.DevicesWithoutPolicyCompliant, Version: r.Version}, nil
}

func pgGetRisk(ctx context.Context, q querier, id string) (*compliance.DeviceRisk, error) {
	r, err := getOne[compliance.DeviceRisk](ctx, q, sql.ErrNoRows, `SELECT data FROM device_risk WHERE device_id = $1`, id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return r, err
}

func pgGetCursor(ctx context.Context, q querier, name string) (int64, bool, error) {
	var rev int64
	err := q.QueryRowContext(ctx, `SELECT revision FROM cursors WHERE name = $1`, name).Scan(&rev)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	return rev, err == nil, err
}

func pgGetSweep(ctx context.Context, q querier) (compliance.SweepState, error) {
	r, err := getOne[compliance.SweepState](ctx, q, sql.ErrNoRows, `SELECT data FROM sweep WHERE id = 1`)
	if errors.Is(err, sql.ErrNoRows) {
		return compliance.SweepState{}, nil
	}
	if err != nil {
		return compliance.SweepState{}, err
	}
	return *r, nil
}

// GetDevice implements compliance.Store.
func (s *PGStore) GetDevice(ctx context.Context, id string) (*compliance.Device, error) {
	return pgGetDevice(ctx, s.db.Read(), id)
}

// ListDevices implements compliance.Store.
func (s *PGStore) ListDevices(ctx context.Context, f compliance.DeviceFilter) ([]*compliance.Device, error) {
	var where []string
	var a args
	from := `devices d`
	if f.Group != "" {
		from = `device_groups g JOIN devices d ON d.device_id = g.device_id`
		where = append(where, `g.grp = `+a.add(f.Group))
	}
	where = append(where, `d.device_id > `+a.add(f.After))
	if f.Platform != compliance.PlatformUnspecified {
		where = append(where, `d.platform = `+a.add(int32(f.Platform)))
	}
	if f.OwnerUserID != "" {
		where = append(where, `d.owner_user_id = `+a.add(f.OwnerUserID))
	}
	if !f.IncludeRetired {
		where = append(where, `NOT d.retired`)
	}
	q := `SELECT d.data FROM ` + from + ` WHERE ` + strings.Join(where, " AND ") + ` ORDER BY d.device_id LIMIT ` + a.add(pgLimit(f.Limit))
	return getMany[compliance.Device](ctx, s.db.Read(), q, a...)
}

// GetPolicy implements compliance.Store.
func (s *PGStore) GetPolicy(ctx context.Context, id string) (*compliance.Policy, error) {
	return pgGetPolicy(ctx, s.db.Read(), id)
}

// ListPolicies implements compliance.Store.
func (s *PGStore) ListPolicies(ctx context.Context, after string, n int) ([]*compliance.Policy, error) {
	return getMany[compliance.Policy](ctx, s.db.Read(),
		`SELECT data FROM policies WHERE policy_id > $1 ORDER BY policy_id LIMIT $2`, after, pgLimit(n))
}

// GetCompliance implements compliance.Store.
func (s *PGStore) GetCompliance(ctx context.Context, id string) (*compliance.DeviceCompliance, error) {
	return getOne[compliance.DeviceCompliance](ctx, s.db.Read(), fmt.Errorf("%w: %s", compliance.ErrDeviceNotFound, id),
		`SELECT data FROM compliance WHERE device_id = $1`, id)
}

// ListCompliance implements compliance.Store: the page and the revision are read in one
// snapshot (REPEATABLE READ), the revision being the database's head (every
// replica's commits), not this replica's view.
func (s *PGStore) ListCompliance(ctx context.Context, f compliance.ComplianceFilter) ([]*compliance.DeviceCompliance, int64, error) {
	tx, err := s.db.Read().BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return nil, 0, err
	}
	defer tx.Rollback()
	var rev int64
	if err := tx.QueryRowContext(ctx, `SELECT head FROM `+EventTable+`_state WHERE id = 1`).Scan(&rev); err != nil {
		return nil, 0, err
	}
	var a args
	q := `SELECT data FROM compliance WHERE device_id > ` + a.add(f.After)
	if f.State != compliance.StateUnspecified {
		q += ` AND state = ` + a.add(int32(f.State))
	}
	q += ` ORDER BY device_id LIMIT ` + a.add(pgLimit(f.Limit))
	out, err := getMany[compliance.DeviceCompliance](ctx, tx, q, a...)
	return out, rev, err
}

// ListExclusions implements compliance.Store.
func (s *PGStore) ListExclusions(ctx context.Context, f compliance.ExclusionFilter) ([]*compliance.Exclusion, error) {
	var where []string
	var a args
	if !f.AfterTime.IsZero() || f.AfterID != "" {
		ns := a.add(f.AfterTime.UnixNano())
		where = append(where, `(create_ns, exclusion_id) < (`+ns+`, `+a.add(f.AfterID)+`)`)
	}
	if f.DeviceID != "" {
		where = append(where, `device_id = `+a.add(f.DeviceID))
	}
	if f.ActiveOnly {
		where = append(where, `NOT ended`)
	}
	q := `SELECT data FROM exclusions`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY create_ns DESC, exclusion_id DESC LIMIT ` + a.add(pgLimit(f.Limit))
	return getMany[compliance.Exclusion](ctx, s.db.Read(), q, a...)
}

// GetSettings implements compliance.Store.
func (s *PGStore) GetSettings(ctx context.Context) (compliance.Settings, error) {
	return pgGetSettings(ctx, s.db.Read())
}

// GetRisk implements compliance.Store.
func (s *PGStore) GetRisk(ctx context.Context, id string) (*compliance.DeviceRisk, error) {
	return pgGetRisk(ctx, s.db.Read(), id)
}

// Cursor implements compliance.Store.
func (s *PGStore) Cursor(ctx context.Context, name string) (int64, bool, error) {
	return pgGetCursor(ctx, s.db.Read(), name)
}

// Sweep implements compliance.Store.
func (s *PGStore) Sweep(ctx context.Context) (compliance.SweepState, error) {
	return pgGetSweep(ctx, s.db.Read())
}

// NextEvaluation implements compliance.Store.
func (s *PGStore) NextEvaluation(ctx context.Context) (time.Time, bool, error) {
	var ns sql.NullInt64
	if err := s.db.Read().QueryRowContext(ctx, `SELECT MIN(next_eval_ns) FROM compliance WHERE next_eval_ns IS NOT NULL`).Scan(&ns); err != nil {
		return time.Time{}, false, err
	}
	if !ns.Valid {
		return time.Time{}, false, nil
	}
	return time.Unix(0, ns.Int64).UTC(), true, nil
}

// ListDeviceIdentities implements compliance.Store.
func (s *PGStore) ListDeviceIdentities(ctx context.Context, after string, n int) ([]*compliance.DeviceIdentity, error) {
	return getMany[compliance.DeviceIdentity](ctx, s.db.Read(),
		`SELECT data FROM device_identities WHERE device_id > $1 ORDER BY device_id LIMIT $2`, after, pgLimit(n))
}

// ---- transaction ----

// pgTxn implements compliance.Tx over one pgdb write: every read goes to the
// transaction (it sees its own changes), nothing is cached.
type pgTxn struct {
	tx *pgdb.Tx
	s  *PGStore
}

func (t *pgTxn) DeviceIdentity(ctx context.Context, id string) (*compliance.DeviceIdentity, error) {
	v, err := getOne[compliance.DeviceIdentity](ctx, t.tx, errNone, `SELECT data FROM device_identities WHERE device_id = $1`, id)
	if errors.Is(err, errNone) {
		return nil, nil
	}
	return v, err
}

func (t *pgTxn) PutDeviceIdentity(ctx context.Context, id *compliance.DeviceIdentity) error {
	b, err := json.Marshal(id)
	if err != nil {
		return err
	}
	_, err = t.tx.ExecContext(ctx, `INSERT INTO device_identities (device_id, data) VALUES ($1, $2)
		ON CONFLICT (device_id) DO UPDATE SET data = excluded.data`, id.DeviceID, b)
	return err
}

func (t *pgTxn) EnrollmentToken(ctx context.Context, hash string) (*compliance.EnrollmentToken, error) {
	var tok compliance.EnrollmentToken
	var ns int64
	err := t.tx.QueryRowContext(ctx, `SELECT token_hash, device_id, expire_ns FROM enrollment_tokens WHERE token_hash = $1`, hash).
		Scan(&tok.Hash, &tok.DeviceID, &ns)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	tok.ExpireTime = time.Unix(0, ns).UTC()
	return &tok, nil
}

func (t *pgTxn) PutEnrollmentToken(ctx context.Context, tok *compliance.EnrollmentToken) error {
	// Expired tokens are dropped as new ones are made.
	if _, err := t.tx.ExecContext(ctx, `DELETE FROM enrollment_tokens WHERE expire_ns < $1`, time.Now().UnixNano()); err != nil {
		return err
	}
	_, err := t.tx.ExecContext(ctx, `INSERT INTO enrollment_tokens (token_hash, device_id, expire_ns) VALUES ($1, $2, $3)`,
		tok.Hash, tok.DeviceID, tok.ExpireTime.UnixNano())
	return err
}

func (t *pgTxn) DeleteEnrollmentToken(ctx context.Context, hash string) error {
	_, err := t.tx.ExecContext(ctx, `DELETE FROM enrollment_tokens WHERE token_hash = $1`, hash)
	return err
}

func (t *pgTxn) Device(ctx context.Context, id string) (*compliance.Device, error) {
	return pgGetDevice(ctx, t.tx, id)
}

func (t *pgTxn) PutDevice(ctx context.Context, d *compliance.Device) error {
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	if _, err := t.tx.ExecContext(ctx, `INSERT INTO devices (device_id, platform, owner_user_id, retired, data) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (device_id) DO UPDATE SET platform = excluded.platform, owner_user_id = excluded.owner_user_id, retired = excluded.retired, data = excluded.data`,
		d.ID, int32(d.Platform), d.OwnerUserID, d.Retired, b); err != nil {
		return err
	}
	if _, err := t.tx.ExecContext(ctx, `DELETE FROM device_groups WHERE device_id = $1`, d.ID); err != nil {
		return err
	}
	if len(d.Groups) > 0 {
		if _, err := t.tx.ExecContext(ctx, `INSERT INTO device_groups (grp, device_id) SELECT g, $2 FROM unnest($1::text[]) AS g
			ON CONFLICT DO NOTHING`, d.Groups, d.ID); err != nil {
			return err
		}
	}
	return nil
}

func (t *pgTxn) Policy(ctx context.Context, id string) (*compliance.Policy, error) {
	return pgGetPolicy(ctx, t.tx, id)
}

func (t *pgTxn) Policies(ctx context.Context) ([]*compliance.Policy, error) {
	return getMany[compliance.Policy](ctx, t.tx, `SELECT data FROM policies ORDER BY policy_id`)
}

func (t *pgTxn) PutPolicy(ctx context.Context, p *compliance.Policy) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	_, err = t.tx.ExecContext(ctx, `INSERT INTO policies (policy_id, data) VALUES ($1, $2)
		ON CONFLICT (policy_id) DO UPDATE SET data = excluded.data`, p.ID, b)
	return err
}

func (t *pgTxn) DeletePolicy(ctx context.Context, id string) error {
	_, err := t.tx.ExecContext(ctx, `DELETE FROM policies WHERE policy_id = $1`, id)
	return err
}

func (t *pgTxn) Settings(ctx context.Context) (compliance.Settings, error) {
	return pgGetSettings(ctx, t.tx)
}

func (t *pgTxn) PutSettings(ctx context.Context, st compliance.Settings) error {
	b, err := json.Marshal(settingsRow{DevicesWithoutPolicyCompliant: st.DevicesWithoutPolicyCompliant, Version: st.Version})
	if err != nil {
		return err
	}
	_, err = t.tx.ExecContext(ctx, `INSERT INTO settings (id, data) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET data = excluded.data`, b)
	return err
}

func (t *pgTxn) Risk(ctx context.Context, id string) (*compliance.DeviceRisk, error) {
	return pgGetRisk(ctx, t.tx, id)
}

func (t *pgTxn) PutRisk(ctx context.Context, r *compliance.DeviceRisk) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = t.tx.ExecContext(ctx, `INSERT INTO device_risk (device_id, data) VALUES ($1, $2)
		ON CONFLICT (device_id) DO UPDATE SET data = excluded.data`, r.DeviceID, b)
	return err
}

func (t *pgTxn) DeleteAllRisks(ctx context.Context) error {
	_, err := t.tx.ExecContext(ctx, `DELETE FROM device_risk`)
	return err
}

const pgEvalSelect = `SELECT d.data, r.data, c.data,
	(SELECT x.data FROM exclusions x WHERE x.device_id = d.device_id AND NOT x.ended ORDER BY x.create_ns DESC LIMIT 1)
	FROM devices d LEFT JOIN device_risk r ON r.device_id = d.device_id LEFT JOIN compliance c ON c.device_id = d.device_id`

func (t *pgTxn) EvalRows(ctx context.Context, q compliance.EvalQuery) ([]compliance.EvalRow, error) {
	var query string
	var a args
	switch {
	case q.DeviceIDs != nil:
		if len(q.DeviceIDs) == 0 {
			return nil, nil
		}
		query = pgEvalSelect + ` WHERE d.device_id = ANY(` + a.add(q.DeviceIDs) + `) ORDER BY d.device_id`
	case !q.DueAt.IsZero():
		query = pgEvalSelect + ` WHERE c.next_eval_ns IS NOT NULL AND c.next_eval_ns <= ` + a.add(q.DueAt.UnixNano()) +
			` ORDER BY c.next_eval_ns, d.device_id LIMIT ` + a.add(pgLimit(q.Limit))
	case q.Groups != nil:
		if len(q.Groups) == 0 {
			return nil, nil
		}
		query = pgEvalSelect + ` WHERE d.device_id IN (SELECT g.device_id FROM device_groups g WHERE g.grp = ANY(` + a.add(q.Groups) +
			`) AND g.device_id > ` + a.add(q.After) + `) ORDER BY d.device_id LIMIT ` + a.add(pgLimit(q.Limit))
	default:
		query = pgEvalSelect + ` WHERE d.device_id > ` + a.add(q.After) + ` ORDER BY d.device_id LIMIT ` + a.add(pgLimit(q.Limit))
	}
	rows, err := t.tx.QueryContext(ctx, query, a...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var raw [][4][]byte
	for rows.Next() {
		var r [4][]byte
		if err := rows.Scan(&r[0], &r[1], &r[2], &r[3]); err != nil {
			return nil, err
		}
		raw = append(raw, r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return decodeEvalRows(raw)
}

func (t *pgTxn) PutCompliances(ctx context.Context, cs []*compliance.DeviceCompliance) error {
	blobs, err := encodeAll(cs)
	if err != nil {
		return err
	}
	// One statement for the whole batch: four arrays, unnested side by side.
	ids := make([]string, len(cs))
	states := make([]int32, len(cs))
	next := make([]*int64, len(cs))
	for i, c := range cs {
		ids[i], states[i] = c.DeviceID, int32(c.State)
		if !c.NextEvaluateTime.IsZero() {
			ns := c.NextEvaluateTime.UnixNano()
			next[i] = &ns
		}
	}
	_, err = t.tx.ExecContext(ctx, `INSERT INTO compliance (device_id, state, next_eval_ns, data)
		SELECT * FROM unnest($1::text[], $2::integer[], $3::bigint[], $4::bytea[])
		ON CONFLICT (device_id) DO UPDATE SET state = excluded.state, next_eval_ns = excluded.next_eval_ns, data = excluded.data`,
		ids, states, next, blobs)
	return err
}

func (t *pgTxn) ActiveExclusion(ctx context.Context, deviceID string) (*compliance.Exclusion, error) {
	x, err := getOne[compliance.Exclusion](ctx, t.tx, sql.ErrNoRows,
		`SELECT data FROM exclusions WHERE device_id = $1 AND NOT ended ORDER BY create_ns DESC LIMIT 1`, deviceID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return x, err
}

func (t *pgTxn) PutExclusion(ctx context.Context, x *compliance.Exclusion) error {
	b, err := json.Marshal(x)
	if err != nil {
		return err
	}
	_, err = t.tx.ExecContext(ctx, `INSERT INTO exclusions (exclusion_id, device_id, create_ns, ended, data) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (exclusion_id) DO UPDATE SET ended = excluded.ended, data = excluded.data`,
		x.ID, x.DeviceID, x.CreateTime.UnixNano(), !x.EndTime.IsZero(), b)
	return err
}

func (t *pgTxn) Cursor(ctx context.Context, name string) (int64, bool, error) {
	return pgGetCursor(ctx, t.tx, name)
}

func (t *pgTxn) SetCursor(ctx context.Context, name string, rev int64) error {
	_, err := t.tx.ExecContext(ctx, `INSERT INTO cursors (name, revision) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET revision = excluded.revision`, name, rev)
	return err
}

func (t *pgTxn) Sweep(ctx context.Context) (compliance.SweepState, error) {
	return pgGetSweep(ctx, t.tx)
}

func (t *pgTxn) PutSweep(ctx context.Context, st compliance.SweepState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	_, err = t.tx.ExecContext(ctx, `INSERT INTO sweep (id, data) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET data = excluded.data`, b)
	return err
}

// Audit implements compliance.Tx.
func (t *pgTxn) Audit(ctx context.Context, c audit.Change) error {
	return t.s.audit.Append(ctx, t.tx, c)
}

func (t *pgTxn) AppendEvent(ctx context.Context, e compliance.StoredEvent) (int64, error) {
	return t.s.log.Append(t.tx, eventlog.Event{
		Type: e.Type, Key: e.Key, Payload: e.Payload, TraceParent: e.TraceParent, TraceState: e.TraceState, Time: e.Time,
	})
}

// AppendEvents appends events with consecutive revisions (the counter row is locked
// by this transaction since Update began) and returns the first.
func (t *pgTxn) AppendEvents(ctx context.Context, es []compliance.StoredEvent) (int64, error) {
	var first int64
	for i, e := range es {
		rev, err := t.AppendEvent(ctx, e)
		if err != nil {
			return 0, err
		}
		if i == 0 {
			first = rev
		} else if rev != first+int64(i) {
			return 0, fmt.Errorf("compliancestore: event revision %d, want %d", rev, first+int64(i))
		}
	}
	return first, nil
}

// SharedDeviceCA returns the device CA (certificate and private key, PEM) that every
// compliance replica on the database at url signs device certificates with, kept in
// the compliance schema's device_ca table. When there is none yet, candidate's is
// stored (the first replica to commit wins; the others get its CA), so replicas
// starting together agree.
func SharedDeviceCA(ctx context.Context, url string, candidate func() (certPEM, keyPEM []byte, err error)) (certPEM, keyPEM []byte, err error) {
	db, err := openPGDB(ctx, url, "", slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, nil, err
	}
	defer db.Close()
	err = db.Write(ctx, func(tx *pgdb.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT cert_pem, key_pem FROM device_ca WHERE id = 1`).Scan(&certPEM, &keyPEM)
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		c, k, err := candidate()
		if err != nil {
			return err
		}
		// ON CONFLICT: another replica stored one meanwhile; read it (this statement
		// waited for that commit, and the next one sees it).
		if _, err := tx.ExecContext(ctx, `INSERT INTO device_ca (id, cert_pem, key_pem) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING`, c, k); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT cert_pem, key_pem FROM device_ca WHERE id = 1`).Scan(&certPEM, &keyPEM)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("compliancestore: device CA: %w", err)
	}
	return certPEM, keyPEM, nil
}

// PutFeedContact records that the feed name was last heard from at t (never moving
// the stored time backwards, so a paused old leader cannot make it older).
//
// Under a fence (WithFence) the write checks the lease's token in its transaction: a
// replica that lost the lease must not tell the others the feed is fresh (its contact
// covers events its fenced writes could not apply).
func (s *PGStore) PutFeedContact(ctx context.Context, name string, t time.Time) error {
	const q = `INSERT INTO feed_contact (name, contact_ns) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET contact_ns = GREATEST(feed_contact.contact_ns, excluded.contact_ns)`
	err := s.db.Write(ctx, func(tx *pgdb.Tx) error {
		if err := checkFence(ctx, tx); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, q, name, t.UnixNano())
		return err
	})
	if err != nil {
		return fmt.Errorf("compliancestore: feed contact: %w", err)
	}
	return nil
}

// FeedContact returns when the feed name was last heard from (zero when never) and
// the event log's head read in the same snapshot: every compliance event the leader
// committed before that contact has a revision at or below head.
func (s *PGStore) FeedContact(ctx context.Context, name string) (time.Time, int64, error) {
	var ns sql.NullInt64
	var head int64
	err := s.db.Read().QueryRowContext(ctx, `SELECT (SELECT contact_ns FROM feed_contact WHERE name = $1), head FROM `+EventTable+`_state WHERE id = 1`, name).
		Scan(&ns, &head)
	if err != nil {
		return time.Time{}, 0, fmt.Errorf("compliancestore: feed contact: %w", err)
	}
	if !ns.Valid {
		return time.Time{}, head, nil
	}
	return time.Unix(0, ns.Int64).UTC(), head, nil
}
