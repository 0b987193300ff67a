package accesscore

import (
	"context"
	"slices"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	"github.com/condaccess/condaccess/internal/consumer"
	"github.com/condaccess/condaccess/internal/telemetry"
	"github.com/condaccess/condaccess/services/access"
	"github.com/condaccess/condaccess/services/access/compliancefeed"
	pe "github.com/condaccess/condaccess/services/access/policyengine"
)

// ReasonDeviceNoncompliant is the revoke reason of continuous access evaluation.
const ReasonDeviceNoncompliant = "DEVICE_NONCOMPLIANT"

// ReasonDeviceIdentityRevoked blocks a device whose identity was revoked and is the
// revoke reason of its sessions.
const ReasonDeviceIdentityRevoked = "DEVICE_IDENTITY_REVOKED"

var tracer = otel.Tracer("condaccess/access")

// RunFeed follows the compliance service's events until ctx ends: list, then
// watch, resuming from the stored cursor (internal/consumer).
// beforeWatch (optional) runs before each watch attempt (see compliancefeed.Source).
func (s *Service) RunFeed(ctx context.Context, client compliancev1.ComplianceServiceClient, beforeWatch func()) error {
	s.consuming.Store(true)
	defer s.consuming.Store(false)
	c := s.NewFeedConsumer(client, beforeWatch)
	if s.cf != nil && s.cfg.FeedHealth != nil && s.cfg.FeedHealthName != "" {
		// A replica of a shared store consumes while it holds the lease: once it
		// stops (its lease moved on), its health no longer reports the consumer's,
		// e.g. the event a fenced write could not apply.
		defer func() {
			if c.Status().Stuck {
				s.cfg.FeedHealth.SetServingStatus(s.cfg.FeedHealthName, healthpb.HealthCheckResponse_SERVING)
			}
		}()
	}
	// The consumer also counts contacts that reach no callback (a progress
	// message at the current cursor, a duplicate): mirror its LastContact.
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if st := c.Status(); st.Connected && !st.LastContact.IsZero() {
					n := st.LastContact.UnixNano()
					for {
						cur := s.lastContact.Load()
						if cur >= n || s.lastContact.CompareAndSwap(cur, n) {
							break
						}
					}
				}
			}
		}
	}()
	return c.Run(ctx)
}

// NewFeedConsumer returns the compliance feed consumer; the feed counts as
// started (the staleness clock runs) from this call.
func (s *Service) NewFeedConsumer(client compliancev1.ComplianceServiceClient, beforeWatch func()) *consumer.Consumer[compliancefeed.Event] {
	s.feedStarted.CompareAndSwap(0, time.Now().UnixNano())
	c := consumer.New(consumer.Config[compliancefeed.Event]{
		Name:   "access<-compliance",
		Source: compliancefeed.Source{Client: client, BeforeWatch: beforeWatch, OnRiskAsOf: s.noteRiskAsOf},
		Cursor: s.store.FeedCursor,
		Resync: func(ctx context.Context) (int64, error) {
			devs, rev, riskAsOf, err := compliancefeed.List(ctx, client)
			if err != nil {
				return 0, err
			}
			// The listing's risk_as_of bounds the chain's age from now on, as a watch
			// message's does; it is noted before the states it qualifies are used.
			s.noteRiskAsOf(riskAsOf)
			return rev, s.Resync(ctx, devs, rev)
		},
		Apply:      s.ApplyCompliance,
		OnProgress: s.Progress,
		Logger:     s.log,
		Health:     s.cfg.FeedHealth,
		HealthName: s.cfg.FeedHealthName,
	})
	s.feed.Store(c)
	return c
}

// noteRiskAsOf records the compliance service's risk_as_of; a zero time (a sender
// that does not report it) forgets it, so that an older compliance service is judged
// on this hop alone rather than on a risk_as_of that no longer advances. The Unix
// epoch (or earlier), which a compliance service that never heard from risk sends, is
// kept as the oldest known time: stored as is, it would read as 0, "unknown".
func (s *Service) noteRiskAsOf(t time.Time) {
	if s.cf != nil {
		s.cf.NoteRiskAsOf(t)
	}
	if t.IsZero() {
		s.riskAsOf.Store(0)
		return
	}
	s.riskAsOf.Store(max(t.UnixNano(), 1))
}

func (s *Service) contact(rev int64) {
	s.lastContact.Store(time.Now().UnixNano())
	s.feedRev.Store(rev)
}

// Progress stores a progress revision as the cursor.
func (s *Service) Progress(ctx context.Context, rev int64) error {
	if err := s.store.SaveFeedCursor(ctx, rev); err != nil {
		return err
	}
	s.contact(rev)
	return nil
}

// Resync replaces every device's compliance with a full listing at rev, and
// revokes the sessions of devices that stopped counting as compliant.
func (s *Service) Resync(ctx context.Context, devs []*access.DeviceCompliance, rev int64) error {
	defer s.changes.notify()
	old := s.devices.Load()
	idx := pe.NewDeviceIndex()
	entries := make([]pe.DeviceEntry, len(devs))
	for i, d := range devs {
		if cur, ok := old.Get(d.DeviceID); ok && cur != nil {
			if d.Platform == 0 {
				d.Platform = access.Platform(cur.Platform)
			}
			// A listing from a compliance service that does not carry the
			// device's users (older): keep what device_changed events said.
			if !d.UsersListed {
				d.OwnerUserID, d.RegisteredUserIDs = cur.Owner, cur.RegisteredUsers
			}
		}
		entries[i] = pe.DeviceEntry{ID: d.DeviceID, State: DeviceState(d)}
	}
	idx.PutMany(entries)
	if err := s.store.ReplaceDevices(ctx, devs, rev, func() { s.devices.Store(idx) }); err != nil {
		return err
	}
	s.contact(rev)
	// Continuous access evaluation across the resync.
	for _, d := range devs {
		if d.State.CountsAsCompliant() {
			continue
		}
		if prev, ok := old.Get(d.DeviceID); ok && prev != nil && !prev.State.CountsAsCompliant() {
			continue
		}
		if ls := s.sessions.ForDevice(d.DeviceID); len(ls) > 0 {
			revs := s.revocations(ls, rev, "", "")
			if err := s.store.ApplyDevice(ctx, nil, rev, revs, func() { s.sessions.Remove(ls) }); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Service) revocations(ls []*access.LiveSession, rev int64, tp, ts string) []access.Revocation {
	return s.revocationsFor(ls, ReasonDeviceNoncompliant, rev, tp, ts)
}

// revocationsFor builds the revocations of sessions ls for reason (rev: the
// compliance revision that caused them, 0 for a directory change).
func (s *Service) revocationsFor(ls []*access.LiveSession, reason string, rev int64, tp, ts string) []access.Revocation {
	now := s.now()
	out := make([]access.Revocation, len(ls))
	for i, l := range ls {
		x := l.Snapshot()
		x.State, x.RevokeTime, x.RevokeReason = access.SessionRevoked, now, reason
		out[i] = access.Revocation{Session: x, ReasonCode: reason, ComplianceRevision: rev, TraceParent: tp, TraceState: ts}
	}
	return out
}

// ApplyCompliance applies one compliance event: the device's new state and the
// cursor, plus, when the device stopped counting as compliant, the revocation
// of each of its sessions (session_revoked events), in one store write; the
// in-memory index follows after the commit. A session opened by a decision
// that still saw the old state while the write was in flight is revoked by a
// second write right after.
func (s *Service) ApplyCompliance(ctx context.Context, ev compliancefeed.Event, rev int64) error {
	defer s.changes.notify()
	ctx = telemetry.ContextFromTraceContext(ctx, ev.Trace)
	ctx, span := tracer.Start(ctx, "access.ApplyComplianceEvent", trace.WithAttributes(attribute.Int64("compliance.revision", rev)))
	defer span.End()
	idx := s.devices.Load()
	switch {
	case ev.Device != nil:
		d := ev.Device
		span.SetAttributes(attribute.String("device.id", d.DeviceID), attribute.Int("compliance.state", int(d.State)))
		prev, known := idx.Get(d.DeviceID)
		if known && prev != nil {
			if d.Platform == 0 {
				d.Platform = access.Platform(prev.Platform)
			}
			if d.OwnerUserID == "" && len(d.RegisteredUserIDs) == 0 {
				d.OwnerUserID, d.RegisteredUserIDs = prev.Owner, prev.RegisteredUsers
			}
		}
		st := DeviceState(d)
		revoke := !d.State.CountsAsCompliant() && (!known || prev == nil || prev.State.CountsAsCompliant())
		var revs []access.Revocation
		var ls []*access.LiveSession
		tc := telemetry.TraceContextFromContext(ctx)
		if revoke {
			ls = s.sessions.ForDevice(d.DeviceID)
			revs = s.revocations(ls, rev, tc.GetTraceparent(), tc.GetTracestate())
			others, err := s.storedRevocations(ctx, access.SessionFilter{DeviceID: d.DeviceID}, ReasonDeviceNoncompliant, ls, rev, tc.GetTraceparent(), tc.GetTracestate())
			if err != nil {
				return err
			}
			revs = append(revs, others...)
		}
		var cutoff time.Time
		err := s.store.ApplyDevice(ctx, d, rev, revs, func() {
			s.devices.Load().Put(d.DeviceID, st)
			cutoff = time.Now()
			s.sessions.Remove(ls)
		})
		if err != nil {
			return err
		}
		if revoke {
			var late []*access.LiveSession
			for _, l := range s.sessions.ForDevice(d.DeviceID) {
				if !l.CreateTime.After(cutoff) {
					late = append(late, l)
				}
			}
			if len(late) > 0 {
				if err := s.store.ApplyDevice(ctx, nil, rev, s.revocations(late, rev, tc.GetTraceparent(), tc.GetTracestate()),
					func() { s.sessions.Remove(late) }); err != nil {
					return err
				}
			}
			span.SetAttributes(attribute.Int("sessions.revoked", len(revs)+len(late)))
			s.recheckStoredSessions(ctx, d.DeviceID, ReasonDeviceNoncompliant, cutoff, rev, tc.GetTraceparent(), tc.GetTracestate())
		}
	case ev.Identity != nil && ev.Identity.Revoked:
		// Decisions block the device from now (the process's set may not have
		// seen the event yet), then its sessions are revoked.
		if s.cfg.Revocations != nil {
			s.cfg.Revocations.Revoke(ev.Identity.DeviceID, ev.Identity.RevokeTime)
		}
		tc := telemetry.TraceContextFromContext(ctx)
		ls := s.sessions.ForDevice(ev.Identity.DeviceID)
		revs := s.revocationsFor(ls, ReasonDeviceIdentityRevoked, rev, tc.GetTraceparent(), tc.GetTracestate())
		others, err := s.storedRevocations(ctx, access.SessionFilter{DeviceID: ev.Identity.DeviceID}, ReasonDeviceIdentityRevoked, ls, rev, tc.GetTraceparent(), tc.GetTracestate())
		if err != nil {
			return err
		}
		revs = append(revs, others...)
		if err := s.store.ApplyDevice(ctx, nil, rev, revs, func() { s.sessions.Remove(ls) }); err != nil {
			return err
		}
		span.SetAttributes(attribute.String("device.id", ev.Identity.DeviceID), attribute.Int("sessions.revoked", len(revs)))
	case ev.PlatformOf != nil:
		p := ev.PlatformOf
		cur, ok := idx.Get(p.DeviceID)
		var st pe.DeviceState
		switch {
		case ok && cur != nil && cur.Platform == pe.Platform(p.Platform) && cur.Owner == p.Owner && slices.Equal(cur.RegisteredUsers, p.RegisteredUsers):
			if err := s.store.SaveFeedCursor(ctx, rev); err != nil {
				return err
			}
			s.contact(rev)
			return nil
		case ok && cur != nil:
			st = *cur
		default:
			// Enrolled, not evaluated yet (its compliance event follows): known,
			// with its users, and not compliant.
			st = pe.DeviceState{State: pe.ComplianceNotEvaluated, Revision: rev}
		}
		st.Platform = pe.Platform(p.Platform)
		st.Owner, st.RegisteredUsers = p.Owner, slices.Clone(p.RegisteredUsers)
		d := &access.DeviceCompliance{DeviceID: p.DeviceID, State: access.ComplianceState(st.State), Risk: access.RiskLevel(st.Risk),
			RiskAlertIDs: st.AlertIDs, Platform: p.Platform, Revision: st.Revision, Reason: st.Reason,
			OwnerUserID: st.Owner, RegisteredUserIDs: st.RegisteredUsers}
		if err := s.store.ApplyDevice(ctx, d, rev, nil, func() { s.devices.Load().Put(p.DeviceID, st) }); err != nil {
			return err
		}
	default:
		if err := s.store.SaveFeedCursor(ctx, rev); err != nil {
			return err
		}
	}
	s.contact(rev)
	return nil
}
