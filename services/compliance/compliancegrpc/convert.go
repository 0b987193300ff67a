package compliancegrpc

import (
	"encoding/base64"
	"encoding/json"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	"github.com/condaccess/condaccess/services/compliance"
)

// This file holds every conversion between protos and the compliance domain.

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func fromTS(t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.AsTime().UTC()
}

// DeviceToProto converts a device.
func DeviceToProto(d *compliance.Device) *compliancev1.Device {
	if d == nil {
		return nil
	}
	out := &compliancev1.Device{
		DeviceId:     d.ID,
		DisplayName:  d.DisplayName,
		Platform:     commonv1.Platform(d.Platform),
		OsVersion:    d.OSVersion,
		OwnerUserId:  d.OwnerUserID,
		Groups:       d.Groups,
		EnrollTime:   ts(d.EnrollTime),
		LastSeenTime: ts(d.LastSeenTime),
		UpdateTime:   ts(d.UpdateTime),
		Retired:      d.Retired,
		RetireTime:   ts(d.RetireTime),
		Etag:         d.Etag(),
	}
	out.RegisteredUserIds = d.RegisteredUserIDs
	return out
}

func deviceFromProto(p *compliancev1.Device) compliance.Device {
	d := compliance.Device{
		ID:           p.GetDeviceId(),
		DisplayName:  p.GetDisplayName(),
		Platform:     compliance.Platform(p.GetPlatform()),
		OSVersion:    p.GetOsVersion(),
		OwnerUserID:  p.GetOwnerUserId(),
		Groups:       p.GetGroups(),
		LastSeenTime: fromTS(p.GetLastSeenTime()),
	}
	d.RegisteredUserIDs = p.GetRegisteredUserIds()
	return d
}

// PolicyToProto converts a policy.
func PolicyToProto(p *compliance.Policy) *compliancev1.CompliancePolicy {
	if p == nil {
		return nil
	}
	out := &compliancev1.CompliancePolicy{
		PolicyId:      p.ID,
		DisplayName:   p.DisplayName,
		Description:   p.Description,
		MaxDeviceRisk: commonv1.RiskLevel(p.MaxDeviceRisk),
		MinOsVersion:  p.MinOSVersion,
		Assignment: &compliancev1.PolicyAssignment{
			AllDevices:    p.Assignment.AllDevices,
			IncludeGroups: p.Assignment.IncludeGroups,
			ExcludeGroups: p.Assignment.ExcludeGroups,
		},
		Actions:    &compliancev1.NoncomplianceActions{},
		CreateTime: ts(p.CreateTime),
		UpdateTime: ts(p.UpdateTime),
		Etag:       p.Etag(),
	}
	for _, pl := range p.Platforms {
		out.Platforms = append(out.Platforms, commonv1.Platform(pl))
	}
	if p.Actions.Grace > 0 {
		out.Actions.GracePeriod = durationpb.New(p.Actions.Grace)
	}
	for _, g := range p.Actions.RiskGrace {
		out.Actions.RiskGracePeriods = append(out.Actions.RiskGracePeriods, &compliancev1.RiskGracePeriod{
			RiskLevel: commonv1.RiskLevel(g.Level), GracePeriod: durationpb.New(g.Grace),
		})
	}
	return out
}

func policyFromProto(p *compliancev1.CompliancePolicy) compliance.Policy {
	out := compliance.Policy{
		ID:            p.GetPolicyId(),
		DisplayName:   p.GetDisplayName(),
		Description:   p.GetDescription(),
		MaxDeviceRisk: compliance.RiskLevel(p.GetMaxDeviceRisk()),
		MinOSVersion:  p.GetMinOsVersion(),
		Assignment: compliance.Assignment{
			AllDevices:    p.GetAssignment().GetAllDevices(),
			IncludeGroups: p.GetAssignment().GetIncludeGroups(),
			ExcludeGroups: p.GetAssignment().GetExcludeGroups(),
		},
		Actions: compliance.Actions{Grace: p.GetActions().GetGracePeriod().AsDuration()},
	}
	for _, pl := range p.GetPlatforms() {
		out.Platforms = append(out.Platforms, compliance.Platform(pl))
	}
	for _, g := range p.GetActions().GetRiskGracePeriods() {
		out.Actions.RiskGrace = append(out.Actions.RiskGrace, compliance.RiskGrace{
			Level: compliance.RiskLevel(g.GetRiskLevel()), Grace: g.GetGracePeriod().AsDuration(),
		})
	}
	return out
}

// ExclusionToProto converts an exclusion.
func ExclusionToProto(x *compliance.Exclusion) *compliancev1.Exclusion {
	if x == nil {
		return nil
	}
	return &compliancev1.Exclusion{
		ExclusionId: x.ID,
		DeviceId:    x.DeviceID,
		Reason:      x.Reason,
		CreatedBy:   x.CreatedBy,
		CreateTime:  ts(x.CreateTime),
		ExpireTime:  ts(x.ExpireTime),
		EndTime:     ts(x.EndTime),
		EndedBy:     x.EndedBy,
	}
}

// ComplianceToProto converts a device's compliance.
func ComplianceToProto(c *compliance.DeviceCompliance) *compliancev1.DeviceCompliance {
	if c == nil {
		return nil
	}
	out := &compliancev1.DeviceCompliance{
		DeviceId:         c.DeviceID,
		State:            commonv1.ComplianceState(c.State),
		Reason:           c.Reason,
		DeviceRisk:       commonv1.RiskLevel(c.Risk),
		RiskAlertIds:     c.RiskAlertIDs,
		RiskRevision:     c.RiskRevision,
		Exclusion:        ExclusionToProto(c.Exclusion),
		EvaluateTime:     ts(c.EvaluateTime),
		Revision:         c.Revision,
		NextEvaluateTime: ts(c.NextEvaluateTime),
	}
	if e := c.Enrollment; e != nil {
		out.Enrollment = &compliancev1.DeviceEnrollment{Platform: commonv1.Platform(e.Platform), OwnerUserId: e.OwnerUserID,
			RegisteredUserIds: e.RegisteredUserIDs, Retired: e.Retired}
	}
	for _, p := range c.Policies {
		pc := &compliancev1.PolicyCompliance{
			PolicyId:          p.PolicyID,
			PolicyDisplayName: p.DisplayName,
			State:             commonv1.ComplianceState(p.State),
			GraceExpireTime:   ts(p.GraceExpireTime),
		}
		for _, s := range p.Settings {
			pc.Settings = append(pc.Settings, &compliancev1.SettingResult{
				Setting: s.Setting, Expected: s.Expected, Actual: s.Actual, Compliant: s.Compliant, Reason: s.Reason,
			})
		}
		out.Policies = append(out.Policies, pc)
	}
	return out
}

// SettingsToProto converts the tenant settings.
func SettingsToProto(s compliance.Settings) *compliancev1.ComplianceSettings {
	return &compliancev1.ComplianceSettings{DevicesWithoutPolicyCompliant: s.DevicesWithoutPolicyCompliant, Etag: s.Etag()}
}

// EncodeEvent is the compliance.Config Encode function: the event log stores a
// ComplianceEvent without its revision (the watch handler sets it).
func EncodeEvent(e compliance.Event) ([]byte, error) {
	ev := &compliancev1.ComplianceEvent{
		EventTime:    ts(e.Time),
		TraceContext: &commonv1.TraceContext{Traceparent: e.TraceParent, Tracestate: e.TraceState},
	}
	switch {
	case e.ComplianceChanged != nil:
		ev.Payload = &compliancev1.ComplianceEvent_DeviceComplianceChanged{DeviceComplianceChanged: &compliancev1.DeviceComplianceChanged{
			DeviceCompliance: ComplianceToProto(&e.ComplianceChanged.Compliance),
			PreviousState:    commonv1.ComplianceState(e.ComplianceChanged.PreviousState),
		}}
	case e.DeviceChanged != nil:
		ev.Payload = &compliancev1.ComplianceEvent_DeviceChanged{DeviceChanged: &compliancev1.DeviceChanged{Device: DeviceToProto(e.DeviceChanged)}}
	case e.IdentityChanged != nil:
		ev.Payload = &compliancev1.ComplianceEvent_DeviceIdentityChanged{DeviceIdentityChanged: &compliancev1.DeviceIdentityChanged{Identity: IdentityToProto(e.IdentityChanged)}}
	}
	return proto.Marshal(ev)
}

// DecodeEvent turns a stored event back into a ComplianceEvent with its revision (also
// set as the revision of the device compliance it carries).
func DecodeEvent(e compliance.StoredEvent) (*compliancev1.ComplianceEvent, error) {
	ev := &compliancev1.ComplianceEvent{}
	if err := proto.Unmarshal(e.Payload, ev); err != nil {
		return nil, err
	}
	ev.Revision = e.Revision
	if c := ev.GetDeviceComplianceChanged().GetDeviceCompliance(); c != nil {
		c.Revision = e.Revision
	}
	return ev, nil
}

// pageToken is the opaque AIP-158 page token: the position after the last item, and
// for compliance listings the revision of the first page.
type pageToken struct {
	After    string `json:"a,omitempty"`
	Revision int64  `json:"r,omitempty"`
	TimeNS   int64  `json:"t,omitempty"`
}

func encodeToken(t pageToken) string {
	b, _ := json.Marshal(t)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeToken(s string) (pageToken, error) {
	var t pageToken
	if s == "" {
		return t, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return t, err
	}
	err = json.Unmarshal(b, &t)
	return t, err
}

// IdentityToProto converts a device identity.
func IdentityToProto(id *compliance.DeviceIdentity) *compliancev1.DeviceIdentity {
	return &compliancev1.DeviceIdentity{
		DeviceId: id.DeviceID, SerialNumber: id.Serial, ExpireTime: ts(id.ExpireTime), IssueTime: ts(id.IssueTime),
		State: compliancev1.DeviceIdentityState(id.State), RevokeTime: ts(id.RevokeTime), RevokeReason: id.RevokeReason,
	}
}
