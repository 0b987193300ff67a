package accesscore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/condaccess/condaccess/internal/eventlog"
	"github.com/condaccess/condaccess/services/access"
	pe "github.com/condaccess/condaccess/services/access/policyengine"
)

// Replicas: when the store is shared by several processes (access.ChangeFeed with
// Replicated true, PostgreSQL), each replica keeps the whole decision engine in
// memory and follows the store's change log (Follow): a directory or policy change
// written on any replica is reloaded here, a device's compliance stored by the
// consumer leader is put in this replica's index, and the leader's contact with the
// compliance feed is this replica's measure of staleness. An admin write first
// catches the model up with the log, and the store refuses it (ErrEtagMismatch,
// ABORTED) when another replica's change committed after the revision it was
// validated against.

// replicated returns the store's change feed when other replicas share the store.
func replicated(st access.Store) access.ChangeFeed {
	if cf, ok := st.(access.ChangeFeed); ok && cf.Replicated() {
		return cf
	}
	return nil
}

// catchUp reloads the directory and policies while the change log's head is
// ahead of the model (wmu held).
func (s *Service) catchUp(ctx context.Context) error {
	if s.cf == nil {
		return nil
	}
	for range 3 {
		head, err := s.cf.ChangeHead(ctx)
		if err != nil {
			return fmt.Errorf("read the change log: %w", err)
		}
		if head <= s.changeRev {
			return nil
		}
		if err := s.reloadModel(ctx, head); err != nil {
			return err
		}
	}
	return nil
}

// guard prepares an admin write (wmu held): it catches the model up and returns
// ctx carrying the change revision the write is validated against, and done,
// which records the revision the write took once it has committed.
func (s *Service) guard(ctx context.Context) (context.Context, func(), error) {
	if s.cf == nil {
		return ctx, func() {}, nil
	}
	if err := s.catchUp(ctx); err != nil {
		return ctx, func() {}, err
	}
	took := new(int64)
	return access.ExpectChanges(ctx, s.changeRev, took), func() { s.changeRev = max(s.changeRev, *took) }, nil
}

// reloadModel replaces the model with the stored directory and policies, which
// include every change up to head (read before them), and recompiles (wmu held).
func (s *Service) reloadModel(ctx context.Context, head int64) error {
	d, err := s.store.LoadDirectory(ctx)
	if err != nil {
		return fmt.Errorf("reload directory: %w", err)
	}
	ps, err := s.store.LoadPolicies(ctx)
	if err != nil {
		return fmt.Errorf("reload policies: %w", err)
	}
	s.model = access.NewModel(d, ps)
	if err := s.compile(); err != nil {
		return fmt.Errorf("compile reloaded directory and policies: %w", err)
	}
	s.changeRev = head
	return nil
}

// Follow keeps this replica's state current with the changes other replicas write
// to the shared store, until ctx ends (at once returns nil when the store is not
// shared). It also marks the compliance feed as followed: decisions judge its
// staleness by the consumer leader's last contact.
func (s *Service) Follow(ctx context.Context) error {
	if s.cf == nil {
		return nil
	}
	s.feedStarted.CompareAndSwap(0, time.Now().UnixNano())
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(2)
	go func() { defer wg.Done(); s.followContact(ctx) }()
	go s.follow(ctx, &wg, "device", s.cf.WatchDeviceChanges, s.followFromDevices, s.applyDeviceChange, func(ctx context.Context) (int64, error) {
		head, err := s.cf.DeviceChangeHead(ctx)
		if err != nil {
			return 0, err
		}
		return head, s.reloadDevices(ctx)
	})
	wg.Add(1)
	s.follow(ctx, &wg, "directory", s.cf.WatchChanges, s.followFrom, s.applyModelChange, func(ctx context.Context) (int64, error) {
		head, err := s.cf.ChangeHead(ctx)
		if err != nil {
			return 0, err
		}
		s.wmu.Lock()
		defer s.wmu.Unlock()
		return head, s.reloadModel(ctx, head)
	})
	return nil
}

// follow applies one change log from start until ctx ends, retrying with backoff;
// a start older than the retained log reloads everything (reload) and goes on from
// the head it returns.
func (s *Service) follow(ctx context.Context, wg *sync.WaitGroup, name string,
	watch func(context.Context, int64, func(access.Change) error, func(int64) error) error, start int64,
	apply func(context.Context, access.Change) error, reload func(context.Context) (int64, error)) {
	defer wg.Done()
	backoff := 50 * time.Millisecond
	for {
		err := watch(ctx, start, func(c access.Change) error {
			if err := apply(ctx, c); err != nil {
				return err
			}
			start = c.Revision
			backoff = 50 * time.Millisecond
			return nil
		}, func(rev int64) error {
			start = max(start, rev)
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, eventlog.ErrCompacted) {
			head, rerr := reload(ctx)
			if rerr == nil {
				start = head
				continue
			}
			err = rerr
		}
		s.log.Warn("access: following the shared store's changes failed; retrying", "log", name, "revision", start, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// applyDeviceChange brings one device compliance change into this replica's index.
func (s *Service) applyDeviceChange(ctx context.Context, c access.Change) error {
	if c.Kind == access.ChangeDevices {
		return s.reloadDevices(ctx)
	}
	d, err := s.cf.LoadDevice(ctx, c.ID)
	if errors.Is(err, access.ErrNotFound) {
		return nil // replaced since by a resync without it
	}
	if err != nil {
		return err
	}
	return s.followDevice(ctx, d)
}

// applyModelChange reloads the directory and policies for a change this replica
// did not make.
func (s *Service) applyModelChange(ctx context.Context, c access.Change) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if c.Revision <= s.changeRev {
		return nil // this replica's own write, or already reloaded
	}
	head, err := s.cf.ChangeHead(ctx)
	if err != nil {
		return err
	}
	return s.reloadModel(ctx, max(head, c.Revision))
}

// followDevice puts a stored device compliance in the index unless the index
// already holds a newer one, and revokes this replica's sessions of a device that
// stopped counting as compliant (the leader revokes its own; each replica knows
// the sessions its decisions opened).
func (s *Service) followDevice(ctx context.Context, d *access.DeviceCompliance) error {
	defer s.changes.notify()
	idx := s.devices.Load()
	prev, known := idx.Get(d.DeviceID)
	if known && prev != nil && prev.Revision > d.Revision {
		return nil
	}
	st := DeviceState(d)
	idx.Put(d.DeviceID, st)
	if s.consuming.Load() || d.State.CountsAsCompliant() || (known && prev != nil && !prev.State.CountsAsCompliant()) {
		return nil
	}
	ls := s.sessions.ForDevice(d.DeviceID)
	if len(ls) == 0 {
		return nil
	}
	return s.store.RevokeSessions(ctx, s.revocations(ls, d.Revision, "", ""), func() { s.sessions.Remove(ls) })
}

// reloadDevices replaces the index with the stored device compliance, keeping an
// entry that is newer in memory.
func (s *Service) reloadDevices(ctx context.Context) error {
	defer s.changes.notify()
	cur := s.devices.Load()
	var entries []pe.DeviceEntry
	if err := s.store.LoadDevices(ctx, func(d *access.DeviceCompliance) {
		st := DeviceState(d)
		if prev, ok := cur.Get(d.DeviceID); ok && prev != nil && prev.Revision > st.Revision {
			st = *prev
		}
		entries = append(entries, pe.DeviceEntry{ID: d.DeviceID, State: st})
	}); err != nil {
		return fmt.Errorf("reload device compliance: %w", err)
	}
	idx := pe.NewDeviceIndex()
	idx.PutMany(entries)
	s.devices.Store(idx)
	return nil
}

// followContact copies the consumer leader's last contact with the compliance
// feed (and its cursor) into this replica every poll, until ctx ends.
func (s *Service) followContact(ctx context.Context) {
	every := min(s.cfg.StalenessBound/4, time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if fc, err := s.cf.FeedContact(ctx); err == nil && !fc.Contact.IsZero() {
			n := fc.Contact.UnixNano()
			for cur := s.lastContact.Load(); cur < n && !s.lastContact.CompareAndSwap(cur, n); cur = s.lastContact.Load() {
			}
			for cur := s.feedRev.Load(); cur < fc.Revision && !s.feedRev.CompareAndSwap(cur, fc.Revision); cur = s.feedRev.Load() {
			}
			if !s.consuming.Load() {
				// The whole chain: compliance's view of risk, as the leader heard it.
				s.riskAsOf.Store(nsOf(fc.RiskAsOf))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// storedRevocations returns, for a shared store, the revocations of the sessions
// of f (a device or a user) that other replicas' decisions opened (stored ACTIVE,
// not among ls): the writer revokes them with its own, in the same write.
func (s *Service) storedRevocations(ctx context.Context, f access.SessionFilter, reason string, ls []*access.LiveSession, rev int64, tp, ts string) ([]access.Revocation, error) {
	if s.cf == nil {
		return nil, nil
	}
	mine := make(map[string]bool, len(ls))
	for _, l := range ls {
		mine[l.ID] = true
	}
	var out []access.Revocation
	now := s.now()
	tok := ""
	for {
		f.State = access.SessionActive
		page, next, err := s.store.ListSessions(ctx, f, tok, 500)
		if err != nil {
			return nil, fmt.Errorf("list the stored sessions: %w", err)
		}
		for _, x := range page {
			if mine[x.ID] {
				continue
			}
			r := *x
			r.State, r.RevokeTime, r.RevokeReason = access.SessionRevoked, now, reason
			out = append(out, access.Revocation{Session: r, ReasonCode: reason, ComplianceRevision: rev, TraceParent: tp, TraceState: ts})
		}
		if next == "" {
			return out, nil
		}
		tok = next
	}
}

func nsOf(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
