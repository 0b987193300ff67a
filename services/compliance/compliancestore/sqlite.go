// Package compliancestore is the compliance service's SQLite store.
package compliancestore

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/eventlog"
	"github.com/condaccess/condaccess/internal/parallel"
	"github.com/condaccess/condaccess/internal/sqlitedb"
	"github.com/condaccess/condaccess/services/compliance"
)

// EventTable is the event log's table.
const EventTable = "compliance_events"

var schema = []string{`
CREATE TABLE devices (
	device_id TEXT PRIMARY KEY,
	platform INTEGER NOT NULL,
	owner_user_id TEXT NOT NULL,
	retired INTEGER NOT NULL,
	data BLOB NOT NULL
);
CREATE INDEX devices_owner ON devices (owner_user_id, device_id);
CREATE TABLE device_groups (
	grp TEXT NOT NULL,
	device_id TEXT NOT NULL,
	PRIMARY KEY (grp, device_id)
) WITHOUT ROWID;
CREATE INDEX device_groups_device ON device_groups (device_id);
CREATE TABLE policies (
	policy_id TEXT PRIMARY KEY,
	data BLOB NOT NULL
);
CREATE TABLE settings (
	id INTEGER PRIMARY KEY CHECK (id = 1),
	data BLOB NOT NULL
);
CREATE TABLE device_risk (
	device_id TEXT PRIMARY KEY,
	data BLOB NOT NULL
);
CREATE TABLE compliance (
	device_id TEXT PRIMARY KEY,
	state INTEGER NOT NULL,
	next_eval_ns INTEGER,
	data BLOB NOT NULL
);
CREATE INDEX compliance_state ON compliance (state, device_id);
CREATE INDEX compliance_next_eval ON compliance (next_eval_ns) WHERE next_eval_ns IS NOT NULL;
CREATE TABLE exclusions (
	exclusion_id TEXT PRIMARY KEY,
	device_id TEXT NOT NULL,
	create_ns INTEGER NOT NULL,
	ended INTEGER NOT NULL,
	data BLOB NOT NULL
);
CREATE INDEX exclusions_device ON exclusions (device_id, ended, create_ns);
CREATE INDEX exclusions_time ON exclusions (create_ns DESC, exclusion_id DESC);
CREATE TABLE cursors (
	name TEXT PRIMARY KEY,
	revision INTEGER NOT NULL
);
CREATE TABLE sweep (
	id INTEGER PRIMARY KEY CHECK (id = 1),
	data BLOB NOT NULL
);
`, `
CREATE TABLE device_identities (
	device_id TEXT PRIMARY KEY,
	data BLOB NOT NULL
);
CREATE TABLE enrollment_tokens (
	token_hash TEXT PRIMARY KEY,
	device_id TEXT NOT NULL,
	expire_ns INTEGER NOT NULL
);
`}

// DefaultSubscriberBuffer holds several sweep batches, so that a watcher keeping up on
// average is not cut off by a burst.
const DefaultSubscriberBuffer = 8192

// writerCacheKiB is the writer connection's page cache.
const writerCacheKiB = 64 << 10

// Options configures Open.
type Options struct {
	// Path is the SQLite file.
	Path string
	// Retention keeps at least this many newest events (0 = keep all).
	Retention int64
	// ProgressInterval is the idle progress interval of watchers (default 1s).
	ProgressInterval time.Duration
	// SubscriberBuffer is each live watcher's buffer (default DefaultSubscriberBuffer):
	// a sweep publishes a batch of up to 1,000 events at once.
	SubscriberBuffer int
	// Synchronous is "FULL" (default) or "NORMAL".
	Synchronous string
	Logger      *slog.Logger
}

// Store is the SQLite compliance store.
type Store struct {
	db    *sqlitedb.DB
	log   *eventlog.Log
	audit *audit.Log
}

var _ compliance.Store = (*Store)(nil)

// Open opens (creating and migrating) the store.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	migrations := append(append(append([]string{}, eventlog.Migrations(EventTable)...), schema...), audit.Migrations("")...)
	db, err := sqlitedb.Open(ctx, sqlitedb.Options{Path: opts.Path, Migrations: migrations, Synchronous: opts.Synchronous, Logger: opts.Logger})
	if err != nil {
		return nil, err
	}
	// A larger page cache for the one writer connection (a connection setting, so it
	// lasts): sweeps touch the device, risk, compliance and event tables of every device.
	if err := db.Write(ctx, func(tx *sqlitedb.Tx) error {
		_, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA cache_size = -%d`, writerCacheKiB))
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("compliancestore: cache size: %w", err)
	}
	l, err := eventlog.New(ctx, db, eventlog.Options{
		Table: EventTable, Retention: opts.Retention, ProgressInterval: opts.ProgressInterval,
		SubscriberBuffer: cmp.Or(opts.SubscriberBuffer, DefaultSubscriberBuffer), Logger: opts.Logger,
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &Store{db: db, log: l, audit: audit.New(db, audit.Options{Source: "compliance", Logger: opts.Logger})}, nil
}

// Close closes the event log and the database.
func (s *Store) Close() error {
	return errors.Join(s.log.Close(), s.db.Close())
}

// Audit returns the audit log of the store's admin changes.
func (s *Store) Audit() *audit.Log { return s.audit }

// Log returns the event log.
func (s *Store) Log() *eventlog.Log { return s.log }

// Revision implements compliance.Store.
func (s *Store) Revision() int64 { return s.log.Revision() }

// Watch implements compliance.Store; errors are eventlog's (see eventlog.ToStatus).
func (s *Store) Watch(ctx context.Context, start int64, onEvent func(compliance.StoredEvent) error, onProgress func(int64) error) error {
	return s.log.Watch(ctx, start, func(e eventlog.Event) error {
		return onEvent(compliance.StoredEvent{
			Revision: e.Revision, Type: e.Type, Key: e.Key, Payload: e.Payload,
			TraceParent: e.TraceParent, TraceState: e.TraceState, Time: e.Time,
		})
	}, onProgress)
}

// Update implements compliance.Store.
func (s *Store) Update(ctx context.Context, fn func(tx compliance.Tx) error) error {
	return s.db.Write(ctx, func(tx *sqlitedb.Tx) error {
		return fn(&txn{tx: tx, s: s})
	})
}

type querier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

func decode[T any](b []byte) (*T, error) {
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("compliancestore: decode %T: %w", v, err)
	}
	return &v, nil
}

func getOne[T any](ctx context.Context, q querier, notFound error, query string, args ...any) (*T, error) {
	var b []byte
	if err := q.QueryRowContext(ctx, query, args...).Scan(&b); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, notFound
		}
		return nil, err
	}
	return decode[T](b)
}

func getMany[T any](ctx context.Context, q querier, query string, args ...any) ([]*T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*T
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return nil, err
		}
		v, err := decode[T](b)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func limit(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}

// ---- reads ----

func getDevice(ctx context.Context, q querier, id string) (*compliance.Device, error) {
	return getOne[compliance.Device](ctx, q, fmt.Errorf("%w: %s", compliance.ErrDeviceNotFound, id),
		`SELECT data FROM devices WHERE device_id = ?`, id)
}

func getPolicy(ctx context.Context, q querier, id string) (*compliance.Policy, error) {
	return getOne[compliance.Policy](ctx, q, fmt.Errorf("%w: %s", compliance.ErrPolicyNotFound, id),
		`SELECT data FROM policies WHERE policy_id = ?`, id)
}

type settingsRow struct {
	DevicesWithoutPolicyCompliant bool  `json:"devices_without_policy_compliant"`
	Version                       int64 `json:"version"`
}

func getSettings(ctx context.Context, q querier) (compliance.Settings, error) {
	r, err := getOne[settingsRow](ctx, q, sql.ErrNoRows, `SELECT data FROM settings WHERE id = 1`)
	if errors.Is(err, sql.ErrNoRows) {
		return compliance.Settings{Version: 1}, nil
	}
	if err != nil {
		return compliance.Settings{}, err
	}
	return compliance.Settings{DevicesWithoutPolicyCompliant: r.DevicesWithoutPolicyCompliant, Version: r.Version}, nil
}

func getRisk(ctx context.Context, q querier, id string) (*compliance.DeviceRisk, error) {
	r, err := getOne[compliance.DeviceRisk](ctx, q, sql.ErrNoRows, `SELECT data FROM device_risk WHERE device_id = ?`, id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return r, err
}

func getCursor(ctx context.Context, q querier, name string) (int64, bool, error) {
	var rev int64
	err := q.QueryRowContext(ctx, `SELECT revision FROM cursors WHERE name = ?`, name).Scan(&rev)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	return rev, err == nil, err
}

func getSweep(ctx context.Context, q querier) (compliance.SweepState, error) {
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
func (s *Store) GetDevice(ctx context.Context, id string) (*compliance.Device, error) {
	return getDevice(ctx, s.db.Read(), id)
}

// ListDevices implements compliance.Store.
func (s *Store) ListDevices(ctx context.Context, f compliance.DeviceFilter) ([]*compliance.Device, error) {
	var where []string
	args := []any{}
	from := `devices d`
	if f.Group != "" {
		from = `device_groups g JOIN devices d ON d.device_id = g.device_id`
		where = append(where, `g.grp = ?`)
		args = append(args, f.Group)
	}
	where = append(where, `d.device_id > ?`)
	args = append(args, f.After)
	if f.Platform != compliance.PlatformUnspecified {
		where = append(where, `d.platform = ?`)
		args = append(args, int32(f.Platform))
	}
	if f.OwnerUserID != "" {
		where = append(where, `d.owner_user_id = ?`)
		args = append(args, f.OwnerUserID)
	}
	if !f.IncludeRetired {
		where = append(where, `d.retired = 0`)
	}
	args = append(args, limit(f.Limit))
	return getMany[compliance.Device](ctx, s.db.Read(),
		`SELECT d.data FROM `+from+` WHERE `+strings.Join(where, " AND ")+` ORDER BY d.device_id LIMIT ?`, args...)
}

// GetPolicy implements compliance.Store.
func (s *Store) GetPolicy(ctx context.Context, id string) (*compliance.Policy, error) {
	return getPolicy(ctx, s.db.Read(), id)
}

// ListPolicies implements compliance.Store.
func (s *Store) ListPolicies(ctx context.Context, after string, n int) ([]*compliance.Policy, error) {
	return getMany[compliance.Policy](ctx, s.db.Read(),
		`SELECT data FROM policies WHERE policy_id > ? ORDER BY policy_id LIMIT ?`, after, limit(n))
}

// GetCompliance implements compliance.Store.
func (s *Store) GetCompliance(ctx context.Context, id string) (*compliance.DeviceCompliance, error) {
	return getOne[compliance.DeviceCompliance](ctx, s.db.Read(), fmt.Errorf("%w: %s", compliance.ErrDeviceNotFound, id),
		`SELECT data FROM compliance WHERE device_id = ?`, id)
}

// ListCompliance implements compliance.Store: the page and the revision are read in one
// snapshot.
func (s *Store) ListCompliance(ctx context.Context, f compliance.ComplianceFilter) ([]*compliance.DeviceCompliance, int64, error) {
	tx, err := s.db.Read().BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, 0, err
	}
	defer tx.Rollback()
	var rev int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE((SELECT MAX(revision) FROM `+EventTable+`), (SELECT compacted_before FROM `+EventTable+`_state WHERE id = 1), 0)`).Scan(&rev); err != nil {
		return nil, 0, err
	}
	q, args := `SELECT data FROM compliance WHERE device_id > ?`, []any{f.After}
	if f.State != compliance.StateUnspecified {
		q += ` AND state = ?`
		args = append(args, int32(f.State))
	}
	args = append(args, limit(f.Limit))
	out, err := getMany[compliance.DeviceCompliance](ctx, tx, q+` ORDER BY device_id LIMIT ?`, args...)
	return out, rev, err
}

// ListExclusions implements compliance.Store.
func (s *Store) ListExclusions(ctx context.Context, f compliance.ExclusionFilter) ([]*compliance.Exclusion, error) {
	var where []string
	var args []any
	if !f.AfterTime.IsZero() || f.AfterID != "" {
		ns := f.AfterTime.UnixNano()
		where = append(where, `(create_ns < ? OR (create_ns = ? AND exclusion_id < ?))`)
		args = append(args, ns, ns, f.AfterID)
	}
	if f.DeviceID != "" {
		where = append(where, `device_id = ?`)
		args = append(args, f.DeviceID)
	}
	if f.ActiveOnly {
		where = append(where, `ended = 0`)
	}
	q := `SELECT data FROM exclusions`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	args = append(args, limit(f.Limit))
	return getMany[compliance.Exclusion](ctx, s.db.Read(), q+` ORDER BY create_ns DESC, exclusion_id DESC LIMIT ?`, args...)
}

// GetSettings implements compliance.Store.
func (s *Store) GetSettings(ctx context.Context) (compliance.Settings, error) {
	return getSettings(ctx, s.db.Read())
}

// GetRisk implements compliance.Store.
func (s *Store) GetRisk(ctx context.Context, id string) (*compliance.DeviceRisk, error) {
	return getRisk(ctx, s.db.Read(), id)
}

// Cursor implements compliance.Store.
func (s *Store) Cursor(ctx context.Context, name string) (int64, bool, error) {
	return getCursor(ctx, s.db.Read(), name)
}

// Sweep implements compliance.Store.
func (s *Store) Sweep(ctx context.Context) (compliance.SweepState, error) {
	return getSweep(ctx, s.db.Read())
}

// NextEvaluation implements compliance.Store.
func (s *Store) NextEvaluation(ctx context.Context) (time.Time, bool, error) {
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
func (s *Store) ListDeviceIdentities(ctx context.Context, after string, n int) ([]*compliance.DeviceIdentity, error) {
	return getMany[compliance.DeviceIdentity](ctx, s.db.Read(),
		`SELECT data FROM device_identities WHERE device_id > ? ORDER BY device_id LIMIT ?`, after, limit(n))
}

// ---- transaction ----

func (t *txn) DeviceIdentity(ctx context.Context, id string) (*compliance.DeviceIdentity, error) {
	v, err := getOne[compliance.DeviceIdentity](ctx, t.tx, errNone, `SELECT data FROM device_identities WHERE device_id = ?`, id)
	if errors.Is(err, errNone) {
		return nil, nil
	}
	return v, err
}

func (t *txn) PutDeviceIdentity(ctx context.Context, id *compliance.DeviceIdentity) error {
	b, err := json.Marshal(id)
	if err != nil {
		return err
	}
	_, err = t.tx.ExecContext(ctx, `INSERT INTO device_identities (device_id, data) VALUES (?, ?)
		ON CONFLICT (device_id) DO UPDATE SET data = excluded.data`, id.DeviceID, b)
	return err
}

func (t *txn) EnrollmentToken(ctx context.Context, hash string) (*compliance.EnrollmentToken, error) {
	var tok compliance.EnrollmentToken
	var ns int64
	err := t.tx.QueryRowContext(ctx, `SELECT token_hash, device_id, expire_ns FROM enrollment_tokens WHERE token_hash = ?`, hash).
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

func (t *txn) PutEnrollmentToken(ctx context.Context, tok *compliance.EnrollmentToken) error {
	// Expired tokens are dropped as new ones are made.
	if _, err := t.tx.ExecContext(ctx, `DELETE FROM enrollment_tokens WHERE expire_ns < ?`, time.Now().UnixNano()); err != nil {
		return err
	}
	_, err := t.tx.ExecContext(ctx, `INSERT INTO enrollment_tokens (token_hash, device_id, expire_ns) VALUES (?, ?, ?)`,
		tok.Hash, tok.DeviceID, tok.ExpireTime.UnixNano())
	return err
}

func (t *txn) DeleteEnrollmentToken(ctx context.Context, hash string) error {
	_, err := t.tx.ExecContext(ctx, `DELETE FROM enrollment_tokens WHERE token_hash = ?`, hash)
	return err
}

var errNone = errors.New("none")

type txn struct {
	tx *sqlitedb.Tx
	s  *Store
}

func (t *txn) Device(ctx context.Context, id string) (*compliance.Device, error) {
	return getDevice(ctx, t.tx, id)
}

func (t *txn) PutDevice(ctx context.Context, d *compliance.Device) error {
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	if _, err := t.tx.ExecContext(ctx, `INSERT INTO devices (device_id, platform, owner_user_id, retired, data) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (device_id) DO UPDATE SET platform = excluded.platform, owner_user_id = excluded.owner_user_id, retired = excluded.retired, data = excluded.data`,
		d.ID, int32(d.Platform), d.OwnerUserID, d.Retired, b); err != nil {
		return err
	}
	if _, err := t.tx.ExecContext(ctx, `DELETE FROM device_groups WHERE device_id = ?`, d.ID); err != nil {
		return err
	}
	for _, g := range d.Groups {
		if _, err := t.tx.ExecContext(ctx, `INSERT OR IGNORE INTO device_groups (grp, device_id) VALUES (?, ?)`, g, d.ID); err != nil {
			return err
		}
	}
	return nil
}

func (t *txn) Policy(ctx context.Context, id string) (*compliance.Policy, error) {
	return getPolicy(ctx, t.tx, id)
}

func (t *txn) Policies(ctx context.Context) ([]*compliance.Policy, error) {
	return getMany[compliance.Policy](ctx, t.tx, `SELECT data FROM policies ORDER BY policy_id`)
}

func (t *txn) PutPolicy(ctx context.Context, p *compliance.Policy) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	_, err = t.tx.ExecContext(ctx, `INSERT INTO policies (policy_id, data) VALUES (?, ?)
		ON CONFLICT (policy_id) DO UPDATE SET data = excluded.data`, p.ID, b)
	return err
}

func (t *txn) DeletePolicy(ctx context.Context, id string) error {
	_, err := t.tx.ExecContext(ctx, `DELETE FROM policies WHERE policy_id = ?`, id)
	return err
}

func (t *txn) Settings(ctx context.Context) (compliance.Settings, error) {
	return getSettings(ctx, t.tx)
}

func (t *txn) PutSettings(ctx context.Context, st compliance.Settings) error {
	b, err := json.Marshal(settingsRow{DevicesWithoutPolicyCompliant: st.DevicesWithoutPolicyCompliant, Version: st.Version})
	if err != nil {
		return err
	}
	_, err = t.tx.ExecContext(ctx, `INSERT INTO settings (id, data) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET data = excluded.data`, b)
	return err
}

func (t *txn) Risk(ctx context.Context, id string) (*compliance.DeviceRisk, error) {
	return getRisk(ctx, t.tx, id)
}

func (t *txn) PutRisk(ctx context.Context, r *compliance.DeviceRisk) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = t.tx.ExecContext(ctx, `INSERT INTO device_risk (device_id, data) VALUES (?, ?)
		ON CONFLICT (device_id) DO UPDATE SET data = excluded.data`, r.DeviceID, b)
	return err
}

func (t *txn) DeleteAllRisks(ctx context.Context) error {
	_, err := t.tx.ExecContext(ctx, `DELETE FROM device_risk`)
	return err
}

const evalSelect = `SELECT d.data, r.data, c.data,
	(SELECT x.data FROM exclusions x WHERE x.device_id = d.device_id AND x.ended = 0 ORDER BY x.create_ns DESC LIMIT 1)
	FROM devices d LEFT JOIN device_risk r ON r.device_id = d.device_id LEFT JOIN compliance c ON c.device_id = d.device_id`

func (t *txn) EvalRows(ctx context.Context, q compliance.EvalQuery) ([]compliance.EvalRow, error) {
	var query string
	var args []any
	switch {
	case q.DeviceIDs != nil:
		if len(q.DeviceIDs) == 0 {
			return nil, nil
		}
		query = evalSelect + ` WHERE d.device_id IN (?` + strings.Repeat(`, ?`, len(q.DeviceIDs)-1) + `) ORDER BY d.device_id`
		for _, id := range q.DeviceIDs {
			args = append(args, id)
		}
	case !q.DueAt.IsZero():
		query = evalSelect + ` WHERE c.next_eval_ns IS NOT NULL AND c.next_eval_ns <= ? ORDER BY c.next_eval_ns, d.device_id LIMIT ?`
		args = []any{q.DueAt.UnixNano(), limit(q.Limit)}
	case q.Groups != nil:
		if len(q.Groups) == 0 {
			return nil, nil
		}
		query = evalSelect + ` WHERE d.device_id IN (SELECT g.device_id FROM device_groups g WHERE g.grp IN (?` +
			strings.Repeat(`, ?`, len(q.Groups)-1) + `) AND g.device_id > ?) ORDER BY d.device_id LIMIT ?`
		for _, g := range q.Groups {
			args = append(args, g)
		}
		args = append(args, q.After, limit(q.Limit))
	default:
		query = evalSelect + ` WHERE d.device_id > ? ORDER BY d.device_id LIMIT ?`
		args = []any{q.After, limit(q.Limit)}
	}
	rows, err := t.tx.QueryContext(ctx, query, args...)
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

// decodeEvalRows decodes EvalRows' rows (device, risk, compliance, exclusion blobs;
// the last three may be nil).
func decodeEvalRows(raw [][4][]byte) ([]compliance.EvalRow, error) {
	// Decoding is the costly part: spread it over the cores.
	out := make([]compliance.EvalRow, len(raw))
	errs := make([]error, len(raw))
	parallel.For(len(raw), decodeMin, func(i int) {
		r, row := raw[i], &out[i]
		var err error
		if row.Device, err = decode[compliance.Device](r[0]); err != nil {
			errs[i] = err
			return
		}
		if r[1] != nil {
			if row.Risk, err = decode[compliance.DeviceRisk](r[1]); err != nil {
				errs[i] = err
				return
			}
		}
		if r[2] != nil {
			if row.Compliance, err = decode[compliance.DeviceCompliance](r[2]); err != nil {
				errs[i] = err
				return
			}
		}
		if r[3] != nil {
			row.Exclusion, errs[i] = decode[compliance.Exclusion](r[3])
		}
	})
	return out, errors.Join(errs...)
}

// decodeMin is the smallest batch decoded (or encoded) on more than one goroutine.
const decodeMin = 64

// putComplianceChunk is the number of rows per multi-row upsert (4 parameters each).
const putComplianceChunk = 250

// encodeAll marshals cs, spread over the cores.
func encodeAll(cs []*compliance.DeviceCompliance) ([][]byte, error) {
	blobs := make([][]byte, len(cs))
	errs := make([]error, len(cs))
	parallel.For(len(cs), decodeMin, func(i int) { blobs[i], errs[i] = json.Marshal(cs[i]) })
	return blobs, errors.Join(errs...)
}

func (t *txn) PutCompliances(ctx context.Context, cs []*compliance.DeviceCompliance) error {
	blobs, err := encodeAll(cs)
	if err != nil {
		return err
	}
	for len(cs) > 0 {
		n := min(len(cs), putComplianceChunk)
		args := make([]any, 0, 4*n)
		for i, c := range cs[:n] {
			var next sql.NullInt64
			if !c.NextEvaluateTime.IsZero() {
				next = sql.NullInt64{Int64: c.NextEvaluateTime.UnixNano(), Valid: true}
			}
			args = append(args, c.DeviceID, int32(c.State), next, blobs[i])
		}
		q := `INSERT INTO compliance (device_id, state, next_eval_ns, data) VALUES (?, ?, ?, ?)` +
			strings.Repeat(`, (?, ?, ?, ?)`, n-1) +
			` ON CONFLICT (device_id) DO UPDATE SET state = excluded.state, next_eval_ns = excluded.next_eval_ns, data = excluded.data`
		if _, err := t.tx.ExecContext(ctx, q, args...); err != nil {
			return err
		}
		cs, blobs = cs[n:], blobs[n:]
	}
	return nil
}

func (t *txn) ActiveExclusion(ctx context.Context, deviceID string) (*compliance.Exclusion, error) {
	x, err := getOne[compliance.Exclusion](ctx, t.tx, sql.ErrNoRows,
		`SELECT data FROM exclusions WHERE device_id = ? AND ended = 0 ORDER BY create_ns DESC LIMIT 1`, deviceID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return x, err
}

func (t *txn) PutExclusion(ctx context.Context, x *compliance.Exclusion) error {
	b, err := json.Marshal(x)
	if err != nil {
		return err
	}
	_, err = t.tx.ExecContext(ctx, `INSERT INTO exclusions (exclusion_id, device_id, create_ns, ended, data) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (exclusion_id) DO UPDATE SET ended = excluded.ended, data = excluded.data`,
		x.ID, x.DeviceID, x.CreateTime.UnixNano(), !x.EndTime.IsZero(), b)
	return err
}

func (t *txn) Cursor(ctx context.Context, name string) (int64, bool, error) {
	return getCursor(ctx, t.tx, name)
}

func (t *txn) SetCursor(ctx context.Context, name string, rev int64) error {
	_, err := t.tx.ExecContext(ctx, `INSERT INTO cursors (name, revision) VALUES (?, ?)
		ON CONFLICT (name) DO UPDATE SET revision = excluded.revision`, name, rev)
	return err
}

func (t *txn) Sweep(ctx context.Context) (compliance.SweepState, error) { return getSweep(ctx, t.tx) }

func (t *txn) PutSweep(ctx context.Context, st compliance.SweepState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	_, err = t.tx.ExecContext(ctx, `INSERT INTO sweep (id, data) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET data = excluded.data`, b)
	return err
}

// Audit implements compliance.Tx.
func (t *txn) Audit(ctx context.Context, c audit.Change) error { return t.s.audit.Append(ctx, t.tx, c) }

func (t *txn) AppendEvent(ctx context.Context, e compliance.StoredEvent) (int64, error) {
	return t.s.log.Append(t.tx, eventlog.Event{
		Type: e.Type, Key: e.Key, Payload: e.Payload, TraceParent: e.TraceParent, TraceState: e.TraceState, Time: e.Time,
	})
}

// AppendEvents appends events with consecutive revisions (one writer: nothing can come
// between them) and returns the first. With a batch append in eventlog (one revision
// query, multi-row inserts) a 100,000-device sweep would take ~40% less CPU.
func (t *txn) AppendEvents(ctx context.Context, es []compliance.StoredEvent) (int64, error) {
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
