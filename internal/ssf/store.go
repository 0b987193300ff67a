package ssf

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/dbtx"
	"github.com/condaccess/condaccess/internal/lease"
	"github.com/condaccess/condaccess/internal/pgdb"
	"github.com/condaccess/condaccess/internal/sqlitedb"
)

// Store errors.
var (
	ErrNotFound = errors.New("ssf: not found")
	ErrExists   = errors.New("ssf: already exists")
)

var migrations = []string{`
CREATE TABLE receivers (
	name TEXT PRIMARY KEY,
	token_hash BLOB NOT NULL UNIQUE,
	create_time INTEGER NOT NULL
);
CREATE TABLE streams (
	stream_id TEXT PRIMARY KEY,
	receiver TEXT NOT NULL REFERENCES receivers(name) ON DELETE CASCADE,
	config TEXT NOT NULL,
	status TEXT NOT NULL,
	reason TEXT NOT NULL DEFAULT '',
	create_time INTEGER NOT NULL
);
CREATE TABLE excluded_subjects (
	stream_id TEXT NOT NULL REFERENCES streams(stream_id) ON DELETE CASCADE,
	subject TEXT NOT NULL,
	PRIMARY KEY (stream_id, subject)
);
CREATE TABLE outbox (
	seq INTEGER PRIMARY KEY AUTOINCREMENT,
	stream_id TEXT NOT NULL REFERENCES streams(stream_id) ON DELETE CASCADE,
	jti TEXT NOT NULL UNIQUE,
	token TEXT NOT NULL,
	attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_by_stream ON outbox(stream_id, seq);
CREATE TABLE cursors (
	feed TEXT PRIMARY KEY,
	revision INTEGER NOT NULL
);
CREATE TABLE device_owners (
	device_id TEXT PRIMARY KEY,
	user_id TEXT NOT NULL
);
CREATE TABLE received (
	iss TEXT NOT NULL,
	jti TEXT NOT NULL,
	receive_time INTEGER NOT NULL,
	PRIMARY KEY (iss, jti)
);
`, `
-- control: a Stream Updated SET, delivered even while its stream is paused or
-- disabled (SSF 1.0 section 8.1.5), at most one per stream (the latest status).
ALTER TABLE outbox ADD COLUMN control INTEGER NOT NULL DEFAULT 0;
-- activity_time: the receiver's last call about the stream (inactivity_timeout).
ALTER TABLE streams ADD COLUMN activity_time INTEGER NOT NULL DEFAULT 0;
UPDATE streams SET activity_time = create_time;
`, audit.Migrations("")[0]}

// Store is the transmitter's and receiver's store: SQLite in the data directory
// (OpenStore), or PostgreSQL schema "ssf" shared by every replica (OpenPGStore).
// The statements are written once with ? placeholders; on PostgreSQL they are
// numbered ($1, ...) by q.
type Store struct {
	read        *sql.DB
	writeTx     func(ctx context.Context, fn func(tx dbtx.Tx) error) error
	appendAudit func(ctx context.Context, tx dbtx.Tx, c audit.Change) error
	close       func() error
	audit       *audit.Log
	pg          *pgdb.DB // nil on SQLite
}

// OpenStore opens (creating) the SQLite store at path.
func OpenStore(ctx context.Context, path string, logger *slog.Logger) (*Store, error) {
	db, err := sqlitedb.Open(ctx, sqlitedb.Options{Path: path, Migrations: migrations, Logger: logger})
	if err != nil {
		return nil, err
	}
	log := audit.New(db, audit.Options{Source: "ssf", Logger: logger})
	return &Store{
		read: db.Read(),
		writeTx: func(ctx context.Context, fn func(tx dbtx.Tx) error) error {
			return db.Write(ctx, func(tx *sqlitedb.Tx) error { return fn(tx) })
		},
		appendAudit: func(ctx context.Context, tx dbtx.Tx, c audit.Change) error {
			return log.Append(ctx, tx.(*sqlitedb.Tx), c)
		},
		close: db.Close,
		audit: log,
	}, nil
}

// write runs fn in a write transaction. On PostgreSQL it first locks the one row of
// write_lock, so writes from every replica run one at a time (the outbox bound's
// count-then-insert stays as safe as on the one SQLite writer). When ctx carries a
// fence (WithFence: the leader's feeds and push delivery) the lease's token is
// checked in the same transaction, which then fails with lease.ErrFenced, changing
// nothing, once another replica leads.
func (s *Store) write(ctx context.Context, fn func(tx dbtx.Tx) error) error {
	f, fenced := ctx.Value(fenceKey{}).(fence)
	return s.writeTx(ctx, func(tx dbtx.Tx) error {
		if s.pg != nil {
			if _, err := tx.ExecContext(ctx, s.q(`SELECT 1 FROM write_lock FOR UPDATE`)); err != nil {
				return err
			}
		}
		if fenced {
			if err := f.l.Fence(ctx, tx, f.token); err != nil {
				return err
			}
		}
		return fn(tx)
	})
}

type fenceKey struct{}

type fence struct {
	l     lease.Lease
	token int64
}

// WithFence returns ctx under which every write of the store checks l's fencing
// token in its transaction (lease.Lease.Fence).
func WithFence(ctx context.Context, l lease.Lease, token int64) context.Context {
	return context.WithValue(ctx, fenceKey{}, fence{l, token})
}

// q numbers the ? placeholders of query on PostgreSQL.
func (s *Store) q(query string) string {
	if s.pg == nil {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Audit is the audit log of admin changes to streams (an admin certificate's calls).
func (s *Store) Audit() *audit.Log { return s.audit }

// record appends rec, when set, to the audit log inside tx.
func (s *Store) record(ctx context.Context, tx dbtx.Tx, rec *audit.Change) error {
	if rec == nil {
		return nil
	}
	return s.appendAudit(ctx, tx, *rec)
}

// Close closes the store.
func (s *Store) Close() error { return s.close() }

// HashToken is the stored form of a receiver's bearer token.
func HashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// AddReceiver stores a receiver with the hash of its token.
func (s *Store) AddReceiver(ctx context.Context, name, token string) error {
	return s.write(ctx, func(tx dbtx.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, s.q(`SELECT count(*) FROM receivers WHERE name = ?`), name).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%w: receiver %q", ErrExists, name)
		}
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO receivers(name, token_hash, create_time) VALUES (?, ?, ?)`),
			name, HashToken(token), time.Now().Unix())
		return err
	})
}

// ReceiverByToken returns the receiver whose token this is.
func (s *Store) ReceiverByToken(ctx context.Context, token string) (string, error) {
	var name string
	err := s.read.QueryRowContext(ctx, s.q(`SELECT name FROM receivers WHERE token_hash = ?`), HashToken(token)).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	return name, err
}

// Stream is a stored stream.
type Stream struct {
	Receiver string
	Config   StreamConfig
	Status   string
	Reason   string
}

func scanStream(sc interface{ Scan(...any) error }) (*Stream, error) {
	var st Stream
	var cfg string
	if err := sc.Scan(&st.Receiver, &cfg, &st.Status, &st.Reason); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrNotFound
		}
		return nil, err
	}
	if err := json.Unmarshal([]byte(cfg), &st.Config); err != nil {
		return nil, fmt.Errorf("stream config: %w", err)
	}
	return &st, nil
}

// CreateStream stores a new stream; rec, when set, is the admin change to audit with it.
func (s *Store) CreateStream(ctx context.Context, st *Stream, rec *audit.Change) error {
	cfg, err := json.Marshal(st.Config)
	if err != nil {
		return err
	}
	now := time.Now().Unix()
	return s.write(ctx, func(tx dbtx.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO streams(stream_id, receiver, config, status, reason, create_time, activity_time) VALUES (?, ?, ?, ?, ?, ?, ?)`),
			st.Config.StreamID, st.Receiver, string(cfg), st.Status, st.Reason, now, now)
		if err != nil {
			return err
		}
		return s.record(ctx, tx, rec)
	})
}

// GetStream returns the receiver's stream (ErrNotFound when it is another receiver's);
// an empty receiver matches any (the transmitter's own delivery).
func (s *Store) GetStream(ctx context.Context, receiver, id string) (*Stream, error) {
	return scanStream(s.read.QueryRowContext(ctx, s.q(`SELECT receiver, config, status, reason FROM streams WHERE stream_id = ? AND (? = '' OR receiver = ?)`), id, receiver, receiver))
}

// ListStreams returns the receiver's streams, or every stream when receiver is empty.
func (s *Store) ListStreams(ctx context.Context, receiver string) ([]*Stream, error) {
	rows, err := s.read.QueryContext(ctx, s.q(`SELECT receiver, config, status, reason FROM streams WHERE ? = '' OR receiver = ? ORDER BY create_time, stream_id`), receiver, receiver)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Stream
	for rows.Next() {
		st, err := scanStream(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, rows.Err()
}

// UpdateStream writes a stream's configuration and status (ErrNotFound when it is not the
// receiver's); notice, when set, is the Stream Updated SET that tells the receiver of a
// status it did not ask for, and rec the admin change to audit, both stored in the same
// transaction.
func (s *Store) UpdateStream(ctx context.Context, st *Stream, notice *Outgoing, rec *audit.Change) error {
	cfg, err := json.Marshal(st.Config)
	if err != nil {
		return err
	}
	return s.write(ctx, func(tx dbtx.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE streams SET config = ?, status = ?, reason = ? WHERE stream_id = ? AND receiver = ?`),
			string(cfg), st.Status, st.Reason, st.Config.StreamID, st.Receiver)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		if st.Status == StatusDisabled {
			// A disabled stream drops what it holds (SSF 1.0: events are not held).
			if _, err = tx.ExecContext(ctx, s.q(`DELETE FROM outbox WHERE stream_id = ?`), st.Config.StreamID); err != nil {
				return err
			}
		}
		if notice != nil {
			if err := s.insertControl(ctx, tx, *notice); err != nil {
				return err
			}
		}
		return s.record(ctx, tx, rec)
	})
}

// insertControl stores a Stream Updated SET in place of an undelivered earlier one (the
// latest status supersedes it, so a stream holds at most one).
func (s *Store) insertControl(ctx context.Context, tx dbtx.Tx, o Outgoing) error {
	if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM outbox WHERE stream_id = ? AND control = 1`), o.StreamID); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, s.q(`INSERT INTO outbox(stream_id, jti, token, control) VALUES (?, ?, ?, 1)`), o.StreamID, o.JTI, o.Token)
	return err
}

// Touch records the receiver's activity on a stream (inactivity_timeout restarts).
func (s *Store) Touch(ctx context.Context, streamID string) error {
	return s.write(ctx, func(tx dbtx.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`UPDATE streams SET activity_time = ? WHERE stream_id = ?`), time.Now().Unix(), streamID)
		return err
	})
}

// Inactive returns the enabled streams without receiver activity since before.
func (s *Store) Inactive(ctx context.Context, before time.Time) ([]*Stream, error) {
	rows, err := s.read.QueryContext(ctx, s.q(`SELECT receiver, config, status, reason FROM streams WHERE status = ? AND activity_time < ? ORDER BY stream_id`), StatusEnabled, before.Unix())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Stream
	for rows.Next() {
		st, err := scanStream(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, rows.Err()
}

// DeleteStream deletes the receiver's stream and what it holds; an empty receiver
// matches any (an admin); rec, when set, is the admin change to audit with it.
func (s *Store) DeleteStream(ctx context.Context, receiver, id string, rec *audit.Change) error {
	return s.write(ctx, func(tx dbtx.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`DELETE FROM streams WHERE stream_id = ? AND (? = '' OR receiver = ?)`), id, receiver, receiver)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		for _, stmt := range []string{`DELETE FROM outbox WHERE stream_id = ?`, `DELETE FROM excluded_subjects WHERE stream_id = ?`} {
			if _, err := tx.ExecContext(ctx, s.q(stmt), id); err != nil {
				return err
			}
		}
		return s.record(ctx, tx, rec)
	})
}

// SetSubjectExcluded removes (excluded) or re-adds a subject on a stream; rec, when set,
// is the admin change to audit with it.
func (s *Store) SetSubjectExcluded(ctx context.Context, streamID string, sub *Subject, excluded bool, rec *audit.Change) error {
	return s.write(ctx, func(tx dbtx.Tx) error {
		for _, m := range sub.members() {
			var err error
			if excluded {
				_, err = tx.ExecContext(ctx, s.q(`INSERT INTO excluded_subjects(stream_id, subject) VALUES (?, ?) ON CONFLICT DO NOTHING`), streamID, m.key())
			} else {
				_, err = tx.ExecContext(ctx, s.q(`DELETE FROM excluded_subjects WHERE stream_id = ? AND subject = ?`), streamID, m.key())
			}
			if err != nil {
				return err
			}
		}
		return s.record(ctx, tx, rec)
	})
}

// Pending is one SET waiting for delivery.
type Pending struct {
	Seq   int64
	JTI   string
	Token string
}

// PendingSETs returns up to limit undelivered SETs of a stream, oldest first, and whether
// more wait; controlOnly: only its Stream Updated SET (what a paused or disabled stream
// still delivers).
func (s *Store) PendingSETs(ctx context.Context, streamID string, limit int, controlOnly bool) ([]Pending, bool, error) {
	rows, err := s.read.QueryContext(ctx, s.q(`SELECT seq, jti, token FROM outbox WHERE stream_id = ? AND (control = 1 OR NOT ?) ORDER BY seq LIMIT ?`), streamID, controlOnly, limit+1)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	var out []Pending
	for rows.Next() {
		var p Pending
		if err := rows.Scan(&p.Seq, &p.JTI, &p.Token); err != nil {
			return nil, false, err
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	more := len(out) > limit
	if more {
		out = out[:limit]
	}
	return out, more, nil
}

// Ack removes delivered (or refused) SETs of a stream; unknown jtis are ignored.
func (s *Store) Ack(ctx context.Context, streamID string, jtis []string) error {
	if len(jtis) == 0 {
		return nil
	}
	return s.write(ctx, func(tx dbtx.Tx) error {
		for _, j := range jtis {
			if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM outbox WHERE stream_id = ? AND jti = ?`), streamID, j); err != nil {
				return err
			}
		}
		return nil
	})
}

// RecordAttempt counts a failed push attempt.
func (s *Store) RecordAttempt(ctx context.Context, jti string) error {
	return s.write(ctx, func(tx dbtx.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`UPDATE outbox SET attempts = attempts + 1 WHERE jti = ?`), jti)
		return err
	})
}

// Cursor returns a feed's stored revision.
func (s *Store) Cursor(ctx context.Context, feed string) (int64, bool, error) {
	var rev int64
	err := s.read.QueryRowContext(ctx, s.q(`SELECT revision FROM cursors WHERE feed = ?`), feed).Scan(&rev)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	return rev, err == nil, err
}

func (s *Store) setCursor(ctx context.Context, tx dbtx.Tx, feed string, rev int64) error {
	_, err := tx.ExecContext(ctx, s.q(`INSERT INTO cursors(feed, revision) VALUES (?, ?) ON CONFLICT(feed) DO UPDATE SET revision = excluded.revision`), feed, rev)
	return err
}

// SetCursor stores a feed's revision alone (progress, resync).
func (s *Store) SetCursor(ctx context.Context, feed string, rev int64) error {
	return s.write(ctx, func(tx dbtx.Tx) error { return s.setCursor(ctx, tx, feed, rev) })
}

// Outgoing is one SET to enqueue for a stream.
type Outgoing struct {
	StreamID, JTI, Token string
}

// Bound caps what one stream's outbox holds, so that a receiver that never
// acknowledges cannot make the transmitter store SETs without end.
type Bound struct {
	// Max is the most unacknowledged SETs a stream holds (0: no bound).
	Max int
	// Notice signs the Stream Updated SET sent when the bound pauses an enabled stream.
	Notice func(cfg StreamConfig, status, reason string) (Outgoing, error)
}

// OutboxFullReason is the status reason of a stream paused by the outbox bound.
func OutboxFullReason(max int) string {
	return fmt.Sprintf("outbox_full: %d SETs not acknowledged; events after that are not held; acknowledge them and set the status to enabled", max)
}

// EnqueueResult is what the outbox bound did to one enqueue.
type EnqueueResult struct {
	// Dropped counts, per stream, the SETs a full stream did not take.
	Dropped map[string]int
	// Paused are the enabled streams the bound paused.
	Paused []string
}

// enqueue stores SETs within b: a stream that holds b.Max SETs takes no more, and is
// paused (when enabled, with a Stream Updated SET) with OutboxFullReason; other
// streams are unaffected.
func (s *Store) enqueue(ctx context.Context, tx dbtx.Tx, sets []Outgoing, b Bound) (EnqueueResult, error) {
	held := map[string]int{}
	res := EnqueueResult{Dropped: map[string]int{}}
	for _, o := range sets {
		if b.Max > 0 {
			n, ok := held[o.StreamID]
			if !ok {
				if err := tx.QueryRowContext(ctx, s.q(`SELECT count(*) FROM outbox WHERE stream_id = ? AND control = 0`), o.StreamID).Scan(&n); err != nil {
					return EnqueueResult{}, err
				}
			}
			if n >= b.Max {
				if res.Dropped[o.StreamID] == 0 {
					paused, err := s.outboxFull(ctx, tx, o.StreamID, b)
					if err != nil {
						return EnqueueResult{}, err
					}
					if paused {
						res.Paused = append(res.Paused, o.StreamID)
					}
				}
				held[o.StreamID] = n
				res.Dropped[o.StreamID]++
				continue
			}
			held[o.StreamID] = n + 1
		}
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO outbox(stream_id, jti, token) VALUES (?, ?, ?)`), o.StreamID, o.JTI, o.Token); err != nil {
			return EnqueueResult{}, err
		}
	}
	return res, nil
}

// outboxFull pauses a full enabled stream, with a Stream Updated SET (paused reports
// that), or gives an already paused one the reason.
func (s *Store) outboxFull(ctx context.Context, tx dbtx.Tx, streamID string, b Bound) (paused bool, err error) {
	st, err := scanStream(tx.QueryRowContext(ctx, s.q(`SELECT receiver, config, status, reason FROM streams WHERE stream_id = ?`), streamID))
	if errors.Is(err, ErrNotFound) {
		return false, nil // deleted meanwhile: nothing to pause
	}
	if err != nil {
		return false, err
	}
	reason := OutboxFullReason(b.Max)
	if st.Status == StatusDisabled || (st.Status == StatusPaused && st.Reason == reason) {
		return false, nil
	}
	wasEnabled := st.Status == StatusEnabled
	if _, err := tx.ExecContext(ctx, s.q(`UPDATE streams SET status = ?, reason = ? WHERE stream_id = ?`), StatusPaused, reason, streamID); err != nil {
		return false, err
	}
	if !wasEnabled {
		return false, nil
	}
	if b.Notice != nil {
		n, err := b.Notice(st.Config, StatusPaused, reason)
		if err != nil {
			return false, err
		}
		if err := s.insertControl(ctx, tx, n); err != nil {
			return false, err
		}
	}
	return true, nil
}

// ApplyFeed enqueues SETs within b and stores the feed's cursor in one transaction;
// owner, when set, records a device's owner for later subjects.
func (s *Store) ApplyFeed(ctx context.Context, feed string, rev int64, sets []Outgoing, owner *[2]string, b Bound) (EnqueueResult, error) {
	var res EnqueueResult
	err := s.write(ctx, func(tx dbtx.Tx) error {
		var err error
		if res, err = s.enqueue(ctx, tx, sets, b); err != nil {
			return err
		}
		if owner != nil {
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO device_owners(device_id, user_id) VALUES (?, ?) ON CONFLICT(device_id) DO UPDATE SET user_id = excluded.user_id`), owner[0], owner[1]); err != nil {
				return err
			}
		}
		return s.setCursor(ctx, tx, feed, rev)
	})
	return res, err
}

// Enqueue adds SETs outside a feed (verification events) within b.
func (s *Store) Enqueue(ctx context.Context, sets []Outgoing, b Bound) (EnqueueResult, error) {
	var res EnqueueResult
	err := s.write(ctx, func(tx dbtx.Tx) error {
		var err error
		res, err = s.enqueue(ctx, tx, sets, b)
		return err
	})
	return res, err
}

// ReceiverExists reports whether a receiver of that name is registered.
func (s *Store) ReceiverExists(ctx context.Context, name string) (bool, error) {
	var n int
	err := s.read.QueryRowContext(ctx, s.q(`SELECT count(*) FROM receivers WHERE name = ?`), name).Scan(&n)
	return n > 0, err
}

// DeviceOwner returns the owner user id recorded for a device ("" when unknown).
func (s *Store) DeviceOwner(ctx context.Context, deviceID string) (string, error) {
	var u string
	err := s.read.QueryRowContext(ctx, s.q(`SELECT user_id FROM device_owners WHERE device_id = ?`), deviceID).Scan(&u)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return u, err
}

// Excluded reports whether any member of sub was removed from the stream.
func (s *Store) Excluded(ctx context.Context, streamID string, sub *Subject) (bool, error) {
	for _, m := range sub.members() {
		var n int
		if err := s.read.QueryRowContext(ctx, s.q(`SELECT count(*) FROM excluded_subjects WHERE stream_id = ? AND subject = ?`), streamID, m.key()).Scan(&n); err != nil {
			return false, err
		}
		if n > 0 {
			return true, nil
		}
	}
	return false, nil
}

// Received reports whether a SET's jti from iss was already received.
func (s *Store) Received(ctx context.Context, iss, jti string) (bool, error) {
	var n int
	err := s.read.QueryRowContext(ctx, s.q(`SELECT count(*) FROM received WHERE iss = ? AND jti = ?`), iss, jti).Scan(&n)
	return n > 0, err
}

// MarkReceived records a received SET's jti; false when it was seen before.
func (s *Store) MarkReceived(ctx context.Context, iss, jti string) (fresh bool, err error) {
	err = s.write(ctx, func(tx dbtx.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`INSERT INTO received(iss, jti, receive_time) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`), iss, jti, time.Now().Unix())
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		fresh = n == 1
		return nil
	})
	return fresh, err
}
