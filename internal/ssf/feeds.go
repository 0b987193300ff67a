package ssf

import (
	"context"
	"fmt"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/consumer"
)

// Feed names (the cursor keys).
const (
	feedCompliance = "compliance"
	feedAccess     = "access"
	feedRisk       = "risk"
)

// event is one CAEP event derived from an upstream event.
type event struct {
	Type    string
	Subject *Subject
	Body    map[string]any
}

// Feeds are the upstream clients the transmitter follows.
type Feeds struct {
	Compliance compliancev1.ComplianceServiceClient
	Access     accessv1.AccessServiceClient
	Risk       riskv1.RiskServiceClient
}

// Consumers returns one durable consumer per configured upstream feed.
func (t *Transmitter) Consumers(f Feeds) []interface{ Run(context.Context) error } {
	var out []interface{ Run(context.Context) error }
	if f.Compliance != nil {
		c := f.Compliance
		out = append(out, newFeed(t, feedCompliance, watchFunc[*compliancev1.ComplianceEvent](func(ctx context.Context, start int64) (recv[*compliancev1.ComplianceEvent], error) {
			st, err := c.WatchComplianceEvents(ctx, &compliancev1.WatchComplianceEventsRequest{StartRevision: start})
			if err != nil {
				return nil, err
			}
			return adapt(st, func(m *compliancev1.WatchComplianceEventsResponse) (*compliancev1.ComplianceEvent, int64, bool) {
				if p := m.GetProgress(); p != nil {
					return nil, p.GetRevision(), true
				}
				return m.GetEvent(), m.GetEvent().GetRevision(), false
			}), nil
		}), t.complianceEvent))
	}
	if f.Access != nil {
		c := f.Access
		out = append(out, newFeed(t, feedAccess, watchFunc[*accessv1.SessionEvent](func(ctx context.Context, start int64) (recv[*accessv1.SessionEvent], error) {
			st, err := c.WatchSessionEvents(ctx, &accessv1.WatchSessionEventsRequest{StartRevision: start})
			if err != nil {
				return nil, err
			}
			return adapt(st, func(m *accessv1.WatchSessionEventsResponse) (*accessv1.SessionEvent, int64, bool) {
				if p := m.GetProgress(); p != nil {
					return nil, p.GetRevision(), true
				}
				return m.GetEvent(), m.GetEvent().GetRevision(), false
			}), nil
		}), t.sessionEvent))
	}
	if f.Risk != nil {
		c := f.Risk
		out = append(out, newFeed(t, feedRisk, watchFunc[*riskv1.RiskEvent](func(ctx context.Context, start int64) (recv[*riskv1.RiskEvent], error) {
			st, err := c.WatchRiskEvents(ctx, &riskv1.WatchRiskEventsRequest{StartRevision: start})
			if err != nil {
				return nil, err
			}
			return adapt(st, func(m *riskv1.WatchRiskEventsResponse) (*riskv1.RiskEvent, int64, bool) {
				if p := m.GetProgress(); p != nil {
					return nil, p.GetRevision(), true
				}
				return m.GetEvent(), m.GetEvent().GetRevision(), false
			}), nil
		}), t.riskEvent))
	}
	return out
}

type recv[E any] func() (E, int64, bool, error)

func (r recv[E]) Recv() (E, int64, bool, error) { return r() }

type watchFunc[E any] func(ctx context.Context, start int64) (recv[E], error)

func (w watchFunc[E]) Watch(ctx context.Context, start int64) (consumer.Stream[E], error) {
	r, err := w(ctx, start)
	if err != nil {
		return nil, err
	}
	return r, nil
}

func adapt[M any, E any](st grpc.ServerStreamingClient[M], f func(*M) (E, int64, bool)) recv[E] {
	return func() (E, int64, bool, error) {
		m, err := st.Recv()
		if err != nil {
			var zero E
			return zero, 0, false, err
		}
		e, rev, prog := f(m)
		return e, rev, prog, nil
	}
}

// resumeAfterCompaction finds where to resume when the stored cursor was compacted
// upstream: the oldest retained revision (the OUT_OF_RANGE error's compacted_revision),
// so that whatever the upstream still holds is sent.
func resumeAfterCompaction[E any](ctx context.Context, st *Store, name string, src consumer.Source[E]) (int64, error) {
	cur, _, err := st.Cursor(ctx, name)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := src.Watch(ctx, cur)
	if err == nil {
		_, _, _, err = s.Recv()
	}
	if err == nil {
		return cur, nil // retained again (e.g. the upstream was restored): resume at the cursor
	}
	if status.Code(err) != codes.OutOfRange {
		return 0, err
	}
	rev, perr := strconv.ParseInt(apierr.Metadata(err)["compacted_revision"], 10, 64)
	if perr != nil {
		return 0, fmt.Errorf("OUT_OF_RANGE without a compacted_revision: %w", err)
	}
	return rev, nil
}

// derive maps one upstream event to CAEP events (and a device owner to remember).
type derive[E any] func(ctx context.Context, ev E) ([]event, *[2]string, error)

// newFeed returns the consumer of one upstream feed: each event's SETs are signed for
// every stream that takes them and stored with the feed's cursor in one transaction.
// Without a stored cursor the feed starts at the beginning of the retained history (no
// stream predates the transmitter's first start, so nothing is sent twice).
func newFeed[E any](t *Transmitter, name string, src consumer.Source[E], d derive[E]) *consumer.Consumer[E] {
	return consumer.New(consumer.Config[E]{
		Name:   "ssf<-" + name,
		Source: src,
		Cursor: func(ctx context.Context) (int64, bool, error) {
			rev, _, err := t.cfg.Store.Cursor(ctx, name)
			return rev, err == nil, err
		},
		Resync: func(ctx context.Context) (int64, error) {
			rev, err := resumeAfterCompaction(ctx, t.cfg.Store, name, src)
			if err != nil {
				return 0, err
			}
			t.log.ErrorContext(ctx, "ssf: upstream history compacted past the cursor; events in the gap are not sent", "feed", name, "resume_revision", rev)
			return rev, t.cfg.Store.SetCursor(ctx, name, rev)
		},
		Apply: func(ctx context.Context, ev E, rev int64) error {
			evs, owner, err := d(ctx, ev)
			if err != nil {
				return err
			}
			var sets []Outgoing
			for _, e := range evs {
				streams, err := t.streamsFor(ctx, e.Type, e.Subject)
				if err != nil {
					return err
				}
				for _, s := range streams {
					o, err := t.sign(s, e.Type, e.Subject, e.Body, name+":"+strconv.FormatInt(rev, 10))
					if err != nil {
						return err
					}
					sets = append(sets, o)
				}
			}
			res, err := t.cfg.Store.ApplyFeed(ctx, name, rev, sets, owner, t.bound())
			if err != nil {
				return err
			}
			t.enqueued(ctx, res)
			if len(sets) > 0 {
				t.notify()
			}
			return nil
		},
		OnProgress: func(ctx context.Context, rev int64) error { return t.cfg.Store.SetCursor(ctx, name, rev) },
		Logger:     t.log,
	})
}

func complianceStatus(s commonv1.ComplianceState) string {
	if s == commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT {
		return "not-compliant"
	}
	return "compliant"
}

// deviceSubject is the complex subject of a device and, when known, its owner.
func (t *Transmitter) deviceSubject(ctx context.Context, deviceID, userID string) (*Subject, error) {
	s := &Subject{Format: "complex", Device: &Subject{Format: "opaque", ID: deviceID}}
	if userID == "" {
		u, err := t.cfg.Store.DeviceOwner(ctx, deviceID)
		if err != nil {
			return nil, err
		}
		userID = u
	}
	if userID != "" {
		s.User = &Subject{Format: "iss_sub", Iss: t.cfg.Issuer, Sub: userID}
	}
	return s, nil
}

// complianceEvent: a change between compliant (compliant, in grace period, excluded)
// and not-compliant becomes device-compliance-change. A device first seen as
// noncompliant reports previous_status compliant (nothing restricted it before).
func (t *Transmitter) complianceEvent(ctx context.Context, ev *compliancev1.ComplianceEvent) ([]event, *[2]string, error) {
	if d := ev.GetDeviceChanged().GetDevice(); d != nil {
		if d.GetDeviceId() == "" {
			return nil, nil, nil
		}
		return nil, &[2]string{d.GetDeviceId(), d.GetOwnerUserId()}, nil
	}
	c := ev.GetDeviceComplianceChanged()
	dc := c.GetDeviceCompliance()
	if dc == nil || dc.GetState() == commonv1.ComplianceState_COMPLIANCE_STATE_UNSPECIFIED {
		return nil, nil, nil
	}
	cur, prev := complianceStatus(dc.GetState()), complianceStatus(c.GetPreviousState())
	if cur == prev {
		return nil, nil, nil
	}
	sub, err := t.deviceSubject(ctx, dc.GetDeviceId(), "")
	if err != nil {
		return nil, nil, err
	}
	body := map[string]any{
		"current_status": cur, "previous_status": prev, "initiating_entity": "policy",
		"event_timestamp": ev.GetEventTime().AsTime().Unix(),
	}
	if dc.GetReason() != "" {
		body["reason_admin"] = map[string]string{"en": dc.GetReason()}
	}
	if dc.GetState() == commonv1.ComplianceState_COMPLIANCE_STATE_EXCLUDED {
		body["initiating_entity"] = "admin"
	}
	return []event{{Type: EventDeviceComplianceChange, Subject: sub, Body: body}}, nil, nil
}

func (t *Transmitter) sessionEvent(ctx context.Context, ev *accessv1.SessionEvent) ([]event, *[2]string, error) {
	r := ev.GetSessionRevoked()
	s := r.GetSession()
	if s == nil {
		return nil, nil, nil
	}
	sub, err := t.deviceSubject(ctx, s.GetDeviceId(), s.GetUserId())
	if err != nil {
		return nil, nil, err
	}
	if s.GetDeviceId() == "" {
		sub.Device = nil
	}
	sub.Session = &Subject{Format: "opaque", ID: s.GetSessionId()}
	body := map[string]any{"initiating_entity": "policy", "event_timestamp": ev.GetEventTime().AsTime().Unix()}
	if r.GetReasonCode() != "" {
		body["reason_admin"] = map[string]string{"en": r.GetReasonCode()}
	}
	return []event{{Type: EventSessionRevoked, Subject: sub, Body: body}}, nil, nil
}

// caepLevel maps a risk level to CAEP's LOW, MEDIUM, HIGH (none counts as low).
func caepLevel(l commonv1.RiskLevel) string {
	switch l {
	case commonv1.RiskLevel_RISK_LEVEL_HIGH:
		return "HIGH"
	case commonv1.RiskLevel_RISK_LEVEL_MEDIUM:
		return "MEDIUM"
	}
	return "LOW"
}

func (t *Transmitter) riskEvent(ctx context.Context, ev *riskv1.RiskEvent) ([]event, *[2]string, error) {
	c := ev.GetDeviceRiskChanged()
	r := c.GetDeviceRisk()
	if r == nil {
		return nil, nil, nil
	}
	cur, prev := caepLevel(r.GetLevel()), caepLevel(c.GetPreviousLevel())
	if cur == prev {
		return nil, nil, nil
	}
	sub, err := t.deviceSubject(ctx, r.GetDeviceId(), "")
	if err != nil {
		return nil, nil, err
	}
	body := map[string]any{
		"principal": "DEVICE", "current_level": cur, "previous_level": prev,
		"event_timestamp": ev.GetEventTime().AsTime().Unix(),
	}
	if id := c.GetCauseAlertId(); id != "" {
		body["risk_reason"] = fmt.Sprintf("alert %s", id)
	}
	return []event{{Type: EventRiskLevelChange, Subject: sub, Body: body}}, nil, nil
}
