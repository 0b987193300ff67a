// Package compliancefeed adapts the compliance service's WatchComplianceEvents and ListDeviceCompliance to the access service's consumer.
package compliancefeed

import (
	"context"
	"fmt"
	"time"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	"github.com/condaccess/condaccess/internal/consumer"
	"github.com/condaccess/condaccess/services/access"
)

// Event is one compliance event as the access service needs it.
type Event struct {
	// Device is set for device_compliance_changed.
	Device *access.DeviceCompliance
	// Previous is the state before the change.
	Previous access.ComplianceState
	// PlatformOf is set for device_changed: the device's platform (and Retired).
	PlatformOf *DevicePlatform
	// Trace is the event's trace context.
	Trace *commonv1.TraceContext
	// Identity is set for a device identity change.
	Identity *IdentityChange
}

// IdentityChange is a device identity revoked or issued (DeviceIdentityChanged).
type IdentityChange struct {
	DeviceID   string
	Revoked    bool
	RevokeTime time.Time
}

// DevicePlatform is a device's enrollment platform, its users and its retirement
// (DeviceChanged).
type DevicePlatform struct {
	DeviceID string
	Platform access.Platform
	Retired  bool
	// Owner and RegisteredUsers are the users the device belongs to.
	Owner           string
	RegisteredUsers []string
}

// Source is a consumer.Source over a compliance client.
type Source struct {
	Client compliancev1.ComplianceServiceClient
	// BeforeWatch, when set, runs before each Watch: pass the connection's
	// ResetConnectBackoff so that a restarted compliance service is reached at
	// the consumer's pace, not after gRPC's own (up to 2 minutes) reconnect backoff.
	BeforeWatch func()
	// OnRiskAsOf, when set, receives each message's risk_as_of (how fresh the
	// compliance service's view of risk is; zero when the message has none), before
	// the message is handed on.
	OnRiskAsOf func(time.Time)
}

var _ consumer.Source[Event] = Source{}

// Watch implements consumer.Source.
func (s Source) Watch(ctx context.Context, start int64) (consumer.Stream[Event], error) {
	if s.BeforeWatch != nil {
		s.BeforeWatch()
	}
	st, err := s.Client.WatchComplianceEvents(ctx, &compliancev1.WatchComplianceEventsRequest{StartRevision: start})
	if err != nil {
		return nil, err
	}
	return stream{st, s.OnRiskAsOf}, nil
}

type stream struct {
	s          compliancev1.ComplianceService_WatchComplianceEventsClient
	onRiskAsOf func(time.Time)
}

func (st stream) Recv() (Event, int64, bool, error) {
	for {
		m, err := st.s.Recv()
		if err != nil {
			return Event{}, 0, false, err
		}
		if st.onRiskAsOf != nil {
			var t time.Time // zero: the sender does not report it
			if m.GetRiskAsOf() != nil {
				t = m.GetRiskAsOf().AsTime()
			}
			st.onRiskAsOf(t)
		}
		switch k := m.Kind.(type) {
		case *compliancev1.WatchComplianceEventsResponse_Progress:
			return Event{}, k.Progress.GetRevision(), true, nil
		case *compliancev1.WatchComplianceEventsResponse_Event:
			e := k.Event
			ev := Event{Trace: e.GetTraceContext()}
			switch p := e.Payload.(type) {
			case *compliancev1.ComplianceEvent_DeviceComplianceChanged:
				ev.Device = FromProto(p.DeviceComplianceChanged.GetDeviceCompliance())
				if ev.Device.Revision == 0 {
					ev.Device.Revision = e.GetRevision()
				}
				ev.Previous = access.ComplianceState(p.DeviceComplianceChanged.GetPreviousState())
			case *compliancev1.ComplianceEvent_DeviceIdentityChanged:
				id := p.DeviceIdentityChanged.GetIdentity()
				ev.Identity = &IdentityChange{DeviceID: id.GetDeviceId(),
					Revoked:    id.GetState() == compliancev1.DeviceIdentityState_DEVICE_IDENTITY_STATE_REVOKED,
					RevokeTime: id.GetRevokeTime().AsTime()}
			case *compliancev1.ComplianceEvent_DeviceChanged:
				d := p.DeviceChanged.GetDevice()
				ev.PlatformOf = &DevicePlatform{DeviceID: d.GetDeviceId(), Platform: access.Platform(d.GetPlatform()), Retired: d.GetRetired(),
					Owner: d.GetOwnerUserId(), RegisteredUsers: d.GetRegisteredUserIds()}
			}
			// Unknown payloads still advance the cursor (Apply sees an empty Event).
			return ev, e.GetRevision(), false, nil
		default:
			return Event{}, 0, false, fmt.Errorf("compliance watch: empty message")
		}
	}
}

// FromProto converts a DeviceCompliance; only the non-compliant settings are kept as reasons.
func FromProto(p *compliancev1.DeviceCompliance) *access.DeviceCompliance {
	d := &access.DeviceCompliance{
		DeviceID: p.GetDeviceId(), State: access.ComplianceState(p.GetState()), Risk: access.RiskLevel(p.GetDeviceRisk()),
		RiskAlertIDs: p.GetRiskAlertIds(), Revision: p.GetRevision(), Reason: p.GetReason(),
	}
	if e := p.GetEnrollment(); e != nil {
		d.Platform, d.OwnerUserID, d.RegisteredUserIDs, d.UsersListed = access.Platform(e.GetPlatform()), e.GetOwnerUserId(), e.GetRegisteredUserIds(), true
	}
	for _, pc := range p.GetPolicies() {
		for _, s := range pc.GetSettings() {
			if s.GetCompliant() {
				continue
			}
			d.Settings = append(d.Settings, access.SettingReason{PolicyID: pc.GetPolicyId(), PolicyName: pc.GetPolicyDisplayName(),
				Setting: s.GetSetting(), Reason: s.GetReason(), Compliant: false})
		}
	}
	return d
}

// List pages through ListDeviceCompliance and returns every device, the revision of
// the listing (the first page's; every page reflects it) and the listing's risk_as_of:
// the oldest of its pages', zero when a page has none (the sender does not report it).
func List(ctx context.Context, c compliancev1.ComplianceServiceClient) ([]*access.DeviceCompliance, int64, time.Time, error) {
	var out []*access.DeviceCompliance
	var rev int64
	var riskAsOf time.Time
	known := true
	tok := ""
	for first := true; ; first = false {
		r, err := c.ListDeviceCompliance(ctx, &compliancev1.ListDeviceComplianceRequest{PageSize: 10000, PageToken: tok})
		if err != nil {
			return nil, 0, time.Time{}, fmt.Errorf("list device compliance: %w", err)
		}
		if first {
			rev = r.GetRevision()
		}
		if r.GetRiskAsOf() == nil {
			known = false
		} else if t := r.GetRiskAsOf().AsTime(); first || t.Before(riskAsOf) {
			riskAsOf = t
		}
		for _, d := range r.GetDeviceCompliances() {
			out = append(out, FromProto(d))
		}
		if tok = r.GetNextPageToken(); tok == "" {
			if !known {
				riskAsOf = time.Time{}
			}
			return out, rev, riskAsOf, nil
		}
	}
}
