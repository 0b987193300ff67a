package accessstore

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/condaccess/condaccess/internal/pgdb"
	"github.com/condaccess/condaccess/services/access"
)

// Following the sign-in log (WatchSignIns).
//
// A sign-in's key is assigned in the transaction that stores it, above the newest key
// stored (writeSignIns), and on PostgreSQL every write holds the session log's counter
// row lock until it commits: batches are committed in key order, by whichever replica.
// A reader that has seen every sign-in up to key K therefore finds every later one,
// however late its replica wrote it, above K: the key is the log's sequence, and a
// follower keeps the last key it reached as its cursor (no time window to miss rows
// by).

// LastSignInKey implements access.Store.
func (s *Store) LastSignInKey(ctx context.Context) (int64, error) {
	tx, done, err := s.readTx(ctx)
	if err != nil {
		return 0, err
	}
	defer done()
	var last int64
	rows, err := tx.QueryContext(ctx, `SELECT last_key FROM signin_batches ORDER BY first_key DESC LIMIT 1`)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	if rows.Next() {
		if err := rows.Scan(&last); err != nil {
			return 0, err
		}
	}
	return last, rows.Err()
}

// maxFollowScan bounds the batches one SignInsAfter call looks at (a variable for tests).
var maxFollowScan = 256

// SignInsAfter implements access.Store.
func (s *Store) SignInsAfter(ctx context.Context, f access.SignInFilter, after int64, limit int) ([]*access.SignIn, int64, error) {
	if limit <= 0 {
		return nil, after, fmt.Errorf("%w: limit must be positive", access.ErrInvalid)
	}
	var probes []uint64
	if f.UserID != "" {
		probes = append(probes, idHash(kindUser, f.UserID))
	}
	if f.DeviceID != "" {
		probes = append(probes, idHash(kindDevice, f.DeviceID))
	}
	if f.AppID != "" {
		probes = append(probes, idHash(kindApp, f.AppID))
	}
	match := func(e *entry) bool {
		return e.key > after &&
			(f.UserID == "" || string(e.user) == f.UserID) &&
			(f.DeviceID == "" || string(e.device) == f.DeviceID) &&
			(f.AppID == "" || string(e.app) == f.AppID) &&
			(f.Decision == 0 || e.decision == f.Decision) &&
			(f.UserProof == 0 || e.userProof == f.UserProof) &&
			(f.DeviceProof == 0 || e.deviceProof == f.DeviceProof)
	}
	tx, done, err := s.readTx(ctx)
	if err != nil {
		return nil, after, err
	}
	defer done()
	type head struct {
		first, last int64
		filter      []byte
	}
	var heads []head
	// The batch holding after (a previous call stopped inside it), then the batches
	// above it: both by the primary key.
	rows, err := tx.QueryContext(ctx, `SELECT first_key, last_key, filter FROM signin_batches WHERE first_key <= ? ORDER BY first_key DESC LIMIT 1`, after)
	if err != nil {
		return nil, after, err
	}
	for rows.Next() {
		var h head
		if err := rows.Scan(&h.first, &h.last, &h.filter); err != nil {
			rows.Close()
			return nil, after, err
		}
		if h.last > after {
			heads = append(heads, h)
		}
	}
	if err := rows.Close(); err != nil {
		return nil, after, err
	}
	rows, err = tx.QueryContext(ctx, `SELECT first_key, last_key, filter FROM signin_batches WHERE first_key > ? ORDER BY first_key LIMIT ?`, after, maxFollowScan)
	if err != nil {
		return nil, after, err
	}
	for rows.Next() {
		var h head
		if err := rows.Scan(&h.first, &h.last, &h.filter); err != nil {
			rows.Close()
			return nil, after, err
		}
		heads = append(heads, h)
	}
	if err := rows.Close(); err != nil {
		return nil, after, err
	}
	var out []*access.SignIn
	var entries []entry
	reached := after
	for _, h := range heads {
		ok := true
		for _, pr := range probes {
			if !bloomHas(h.filter, pr) {
				ok = false
				break
			}
		}
		if ok {
			var body []byte
			if err := tx.QueryRowContext(ctx, `SELECT body FROM signin_batches WHERE first_key = ?`, h.first).Scan(&body); err != nil {
				return nil, after, err
			}
			if entries, err = decodeBatch(entries[:0], h.first, body); err != nil {
				return nil, after, fmt.Errorf("%w (batch %d)", err, h.first)
			}
			for i := range entries {
				e := &entries[i]
				if !match(e) {
					continue
				}
				if len(out) == limit {
					return out, reached, nil
				}
				out = append(out, e.signIn())
				reached = e.key
			}
		}
		reached = max(reached, h.last)
	}
	return out, reached, nil
}

// SignInsChanged implements access.Store: on PostgreSQL a channel closed when a
// replica (this one included) may have stored sign-ins, from a NOTIFY its WriteBatch
// sends at commit; nil on SQLite, whose only writer is this process (its Recorder
// says when it wrote) or while LISTEN is off.
func (s *Store) SignInsChanged() <-chan struct{} {
	if s.pg == nil || s.pg.signIns == nil {
		return nil
	}
	return s.pg.signIns.changedCh()
}

// notifier LISTENs on a channel and closes (and replaces) changed on each
// notification, and after each reconnection (notifications sent while it was down
// are lost: a waiter then reads anyway).
type notifier struct {
	db      *pgdb.DB
	channel string
	retry   time.Duration
	log     *slog.Logger

	mu      sync.Mutex
	changed chan struct{}
	cancel  context.CancelFunc
	done    chan struct{}
}

func newNotifier(db *pgdb.DB, channel string, retry time.Duration, log *slog.Logger) *notifier {
	if len(channel) > 63 {
		channel = channel[:63]
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &notifier{db: db, channel: channel, retry: retry, log: log, changed: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	go n.loop(ctx)
	return n
}

func (n *notifier) changedCh() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.changed
}

func (n *notifier) wake() {
	n.mu.Lock()
	close(n.changed)
	n.changed = make(chan struct{})
	n.mu.Unlock()
}

func (n *notifier) loop(ctx context.Context) {
	defer close(n.done)
	for ctx.Err() == nil {
		c, err := pgx.ConnectConfig(ctx, n.db.ConnConfig())
		if err == nil {
			if _, err = c.Exec(ctx, `LISTEN "`+n.channel+`"`); err != nil {
				c.Close(context.Background())
			}
		}
		if err != nil {
			if ctx.Err() == nil {
				n.log.Warn("accessstore: LISTEN for sign-ins failed; followers read every second only", "err", err)
			}
		} else {
			n.wake() // what was written while not listening
			for {
				if _, err = c.WaitForNotification(ctx); err != nil {
					break
				}
				n.wake()
			}
			c.Close(context.Background())
			if ctx.Err() == nil {
				n.log.Warn("accessstore: sign-in LISTEN connection lost", "err", err)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(n.retry):
		}
	}
}

func (n *notifier) close() {
	n.cancel()
	<-n.done
}
