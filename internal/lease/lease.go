// Package lease elects the one replica of a service that runs its once-only background work, with a fencing token checked in every transaction that advances a cursor.
//
// On SQLite there is one process per database, so Local is always the leader (token
// 1) and its fence always passes. On PostgreSQL (PG) a row of the service's leases
// table holds the holder, the expiry and a token incremented on each acquisition.
// The leader renews every Duration/3; a replica takes over once the lease has
// expired (by the database's clock), incrementing the token. Every transaction that
// advances a consumer cursor calls Fence with the token its leadership began with:
// Fence fails with ErrFenced once the token has moved on (or the lease has expired),
// and holds a share lock on the lease row until the transaction ends, so a takeover
// waits for a fenced transaction in flight to commit. A paused old leader therefore
// cannot apply anything after the new leader has started.
package lease

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/condaccess/condaccess/internal/dbtx"
)

// DefaultDuration is the default lease duration (--lease-duration): the longest a
// dead leader's work waits for a new leader.
const DefaultDuration = 5 * time.Second

// ErrFenced: the lease has moved on to another holder (or expired); the transaction
// must not commit and the leader's work must stop.
var ErrFenced = errors.New("lease: not the leader any more (fencing token moved on)")

// ErrHeld: another holder has the lease and it has not expired.
var ErrHeld = errors.New("lease: held by another replica")

// Lease is a leader election with fencing tokens.
type Lease interface {
	// Run waits to become the leader, then calls fn with a context that ends when
	// leadership is lost (or ctx ends) and the token to pass to Fence; when fn
	// returns while ctx is live, Run gives the lease up and waits to lead again.
	// It returns ctx's error.
	Run(ctx context.Context, fn func(ctx context.Context, token int64) error) error
	// Fence fails with ErrFenced unless token is the current token of this holder's
	// unexpired lease; call it in every transaction that advances a cursor.
	Fence(ctx context.Context, tx dbtx.Tx, token int64) error
}

// Local is the lease of a single-process store (SQLite): always the leader, token 1.
type Local struct{}

var _ Lease = Local{}

// Run calls fn at once with token 1 and returns ctx's error after it.
func (Local) Run(ctx context.Context, fn func(ctx context.Context, token int64) error) error {
	if err := fn(ctx, 1); err != nil && ctx.Err() == nil {
		return err
	}
	return ctx.Err()
}

// Fence passes for token 1.
func (Local) Fence(_ context.Context, _ dbtx.Tx, token int64) error {
	if token != 1 {
		return fmt.Errorf("%w: token %d, the local lease's is 1", ErrFenced, token)
	}
	return nil
}

// HolderID returns an identifier unique to this process: host, pid and random bits.
func HolderID() string {
	host, _ := os.Hostname()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b))
}

// PGMigrations returns the leases table (append to the service's PostgreSQL migrations).
func PGMigrations() []string {
	return []string{`CREATE TABLE leases (
		name TEXT PRIMARY KEY,
		holder TEXT NOT NULL,
		token BIGINT NOT NULL,
		expires_at TIMESTAMPTZ NOT NULL
	)`}
}

// PG is a lease on PostgreSQL, in the leases table of the service's schema.
type PG struct {
	db     *sql.DB
	name   string
	holder string
	dur    time.Duration
	log    *slog.Logger
}

var _ Lease = (*PG)(nil)

// PGOptions configures NewPG.
type PGOptions struct {
	Name     string        // the work this lease elects a leader for, e.g. "compliance-consumer"
	Holder   string        // default HolderID()
	Duration time.Duration // default DefaultDuration
	Logger   *slog.Logger
}

// NewPG returns the lease opts.Name on db (the service's pool, pgdb's Read(), whose
// search_path is the service's schema).
func NewPG(db *sql.DB, opts PGOptions) *PG {
	if opts.Holder == "" {
		opts.Holder = HolderID()
	}
	if opts.Duration <= 0 {
		opts.Duration = DefaultDuration
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &PG{db: db, name: opts.Name, holder: opts.Holder, dur: opts.Duration, log: opts.Logger}
}

// Holder returns this replica's holder id.
func (l *PG) Holder() string { return l.holder }

// TryAcquire takes the lease if it is free or expired and returns the new token
// (the previous one plus one); ErrHeld if another holder's lease is live.
func (l *PG) TryAcquire(ctx context.Context) (int64, error) {
	tok, ok, err := l.token(ctx, `INSERT INTO leases (name, holder, token, expires_at)
		VALUES ($1, $2, 1, clock_timestamp() + $3 * interval '1 microsecond')
		ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, token = leases.token + 1, expires_at = EXCLUDED.expires_at
		WHERE leases.expires_at <= clock_timestamp()
		RETURNING token`, l.name, l.holder, l.dur.Microseconds())
	if err != nil {
		return 0, fmt.Errorf("lease: acquire %s: %w", l.name, err)
	}
	if !ok {
		return 0, ErrHeld
	}
	return tok, nil
}

// token runs a statement returning the token; ok is false when it returned no row.
func (l *PG) token(ctx context.Context, query string, args ...any) (tok int64, ok bool, err error) {
	err = l.db.QueryRowContext(ctx, query, args...).Scan(&tok)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	return tok, err == nil, err
}

// Renew extends the lease held with token by Duration from now; ErrFenced if it
// has expired or moved on.
func (l *PG) Renew(ctx context.Context, token int64) error {
	_, ok, err := l.token(ctx, `UPDATE leases SET expires_at = clock_timestamp() + $4 * interval '1 microsecond'
		WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > clock_timestamp() RETURNING token`,
		l.name, l.holder, token, l.dur.Microseconds())
	if err != nil {
		return fmt.Errorf("lease: renew %s: %w", l.name, err)
	}
	if !ok {
		return ErrFenced
	}
	return nil
}

// Release gives the lease up (expires it now) if still held with token, so that
// another replica takes over without waiting out the duration.
func (l *PG) Release(ctx context.Context, token int64) error {
	_, err := l.db.ExecContext(ctx, `UPDATE leases SET expires_at = clock_timestamp() WHERE name = $1 AND holder = $2 AND token = $3`,
		l.name, l.holder, token)
	if err != nil {
		return fmt.Errorf("lease: release %s: %w", l.name, err)
	}
	return nil
}

// Fence fails with ErrFenced unless token is this holder's current, unexpired
// lease. It locks the lease row (FOR SHARE) until tx ends, so no takeover can
// commit while tx is in flight.
func (l *PG) Fence(ctx context.Context, tx dbtx.Tx, token int64) error {
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM leases WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > clock_timestamp() FOR SHARE`,
		l.name, l.holder, token).Scan(&one)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: lease %s token %d", ErrFenced, l.name, token)
		}
		return fmt.Errorf("lease: fence %s: %w", l.name, err)
	}
	return nil
}

// Run implements Lease: it tries to acquire every Duration/3 (also after leading,
// so a fn that fails at once is run at most that often); as leader it renews
// every Duration/3 and ends fn's context when a renewal fails with ErrFenced or
// when no renewal has succeeded for Duration (by this process's clock, started
// before the acquiring statement), whichever comes first.
func (l *PG) Run(ctx context.Context, fn func(ctx context.Context, token int64) error) error {
	every := l.dur / 3
	for {
		start := time.Now()
		tok, err := l.TryAcquire(ctx)
		switch {
		case err == nil:
			// Then wait like a follower before trying again: a fn that keeps failing
			// must not spin on the lease.
			l.lead(ctx, start, tok, fn)
		case errors.Is(err, ErrHeld):
		default:
			if ctx.Err() == nil {
				l.log.Warn("lease: acquire failed", "lease", l.name, "err", err)
			}
		}
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (l *PG) lead(ctx context.Context, start time.Time, tok int64, fn func(context.Context, int64) error) {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		valid := start.Add(l.dur)
		tk := time.NewTicker(l.dur / 3)
		defer tk.Stop()
		deadline := time.NewTimer(time.Until(valid))
		defer deadline.Stop()
		for {
			select {
			case <-lctx.Done():
				return
			case <-deadline.C:
				l.log.Warn("lease: not renewed in time, stepping down", "lease", l.name, "token", tok)
				cancel()
				return
			case <-tk.C:
				at := time.Now()
				err := l.Renew(lctx, tok)
				switch {
				case err == nil:
					valid = at.Add(l.dur)
					deadline.Reset(time.Until(valid))
				case errors.Is(err, ErrFenced):
					l.log.Warn("lease: lost", "lease", l.name, "token", tok)
					cancel()
					return
				default:
					if lctx.Err() == nil {
						l.log.Warn("lease: renew failed", "lease", l.name, "err", err)
					}
				}
			}
		}
	}()
	l.log.Info("lease: leading", "lease", l.name, "holder", l.holder, "token", tok)
	if err := fn(lctx, tok); err != nil && lctx.Err() == nil {
		l.log.Warn("lease: leader's work failed", "lease", l.name, "err", err)
	}
	cancel()
	<-done
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), l.dur)
	defer rcancel()
	if err := l.Release(rctx, tok); err != nil {
		l.log.Warn("lease: release failed", "lease", l.name, "err", err)
	}
}
