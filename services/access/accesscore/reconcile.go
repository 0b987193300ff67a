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
	err := s.store.RevokeSessions(ctx, revs, func() {
		byDevice := map[string][]access.Revocation{}
		for _, r := range revs {
			byDevice[r.Session.DeviceID] = append(byDevice[r.Session.DeviceID], r)
		}
		for device, rs := range byDevice {
			s.removeLive(device, rs)
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

// recheckDelays are when, after revoking a device's sessions, the consumer leader
// looks again for stored sessions the revocation could not see.
var recheckDelays = []time.Duration{300 * time.Millisecond, 2 * time.Second}

// recheckStoredSessions revokes, a little later, the device's stored ACTIVE
// sessions created before cutoff (when the device's sessions were revoked) that
// were not stored yet at that moment: another replica opened them and its recorder
// wrote them after the revocation. That replica revokes its own sessions when it
// follows the change, but it reads the device's current state from the change
// log: a device blocked and remediated within a second may already read compliant
// again, and ReconcileSessions only looks at devices that are noncompliant now.
// Only with a shared store; it ends with ctx (the leadership).
func (s *Service) recheckStoredSessions(ctx context.Context, device, reason string, cutoff time.Time, rev int64, tp, ts string) {
	if s.cf == nil || cutoff.IsZero() {
		return
	}
	go func() {
		for _, d := range recheckDelays {
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
			others, err := s.storedRevocations(ctx, access.SessionFilter{DeviceID: device}, reason, nil, rev, tp, ts)
			var revs []access.Revocation
			for _, r := range others {
				if !r.Session.CreateTime.After(cutoff) {
					revs = append(revs, r)
				}
			}
			if err == nil && len(revs) > 0 {
				err = s.store.RevokeSessions(ctx, revs, func() { s.removeLive(device, revs) })
				if err == nil {
					s.log.Warn("revoked sessions another replica stored after the device's sessions were revoked", "device_id", device, "count", len(revs))
				}
			}
			if err != nil && ctx.Err() == nil {
				s.log.Warn("re-checking the device's stored sessions failed", "device_id", device, "err", err)
			}
		}
	}()
}

// removeLive drops the revoked sessions of device from this replica's live set.
func (s *Service) removeLive(device string, revs []access.Revocation) {
	ids := make(map[string]bool, len(revs))
	for _, r := range revs {
		ids[r.Session.ID] = true
	}
	var mine []*access.LiveSession
	for _, l := range s.sessions.ForDevice(device) {
		if ids[l.ID] {
			mine = append(mine, l)
		}
	}
	s.sessions.Remove(mine)
}
