package accesscore

import (
	"context"
	"fmt"
	"time"

	"github.com/condaccess/condaccess/services/access"
)

// ReconcileSessions revokes every stored ACTIVE session of a device whose current
// compliance does not count as compliant, and returns how many it revoked.
//
// Why: with replicas on one store, a session opened by one replica is written by
// its recorder asynchronously. The consumer leader revokes the device's stored
// sessions when the device turns noncompliant, and each replica revokes the ones
// its own decisions opened when it follows the change; but a replica killed after
// its session reached the store and before it followed the change leaves an ACTIVE
// session of a blocked device behind (TestReplicasOnPostgres found one). This
// sweep, run by the consumer leader (RunReconcile), is the backstop: whatever the
// interleaving, no session of a noncompliant device stays ACTIVE longer than an
// interval. Its cost is one pass over the stored active sessions.
func (s *Service) ReconcileSessions(ctx context.Context) (int, error) {
	idx := s.devices.Load()
	now := s.now()
	var revs []access.Revocation
	for tok := ""; ; {
		page, next, err := s.store.ListSessions(ctx, access.SessionFilter{State: access.SessionActive}, tok, 500)
		if err != nil {
			return 0, fmt.Errorf("list the active sessions: %w", err)
		}
		for _, x := range page {
			st, ok := idx.Get(x.DeviceID)
			if !ok || st == nil || st.State.CountsAsCompliant() {
				continue
			}
			r := *x
			r.State, r.RevokeTime, r.RevokeReason = access.SessionRevoked, now, ReasonDeviceNoncompliant
			revs = append(revs, access.Revocation{Session: r, ReasonCode: ReasonDeviceNoncompliant, ComplianceRevision: st.Revision})
		}
		if next == "" {
			break
		}
		tok = next
	}
	if len(revs) == 0 {
		return 0, nil
	}
	ids := make(map[string]bool, len(revs))
	for _, r := range revs {
		ids[r.Session.ID] = true
	}
	err := s.store.RevokeSessions(ctx, revs, func() {
		for _, r := range revs {
			var mine []*access.LiveSession
			for _, l := range s.sessions.ForDevice(r.Session.DeviceID) {
				if ids[l.ID] {
					mine = append(mine, l)
				}
			}
			s.sessions.Remove(mine)
		}
	})
	if err != nil {
		return 0, err
	}
	s.changes.notify()
	return len(revs), nil
}

// RunReconcile runs ReconcileSessions every interval until ctx ends (the consumer
// leader of a replicated access service).
func (s *Service) RunReconcile(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := s.ReconcileSessions(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Warn("reconciling sessions with device compliance failed", "err", err)
		case n > 0:
			s.log.Warn("revoked sessions of noncompliant devices that were still active (a revocation raced with another replica's session write)", "count", n)
		}
	}
}
