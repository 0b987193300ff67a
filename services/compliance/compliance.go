// Package compliance is the compliance service's domain: device inventory, compliance policies, exclusions, the evaluation rules that give each device its compliance state with an explanation, and the Store interface.
package compliance

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors; compliancegrpc maps them to status codes. Errors returned by the
// Service wrap one of them (errors.Is) and say which resource in their message.
var (
	ErrDeviceNotFound    = errors.New("device not found")
	ErrPolicyNotFound    = errors.New("compliance policy not found")
	ErrExclusionNotFound = errors.New("device has no active exclusion")
	ErrDeviceExists      = errors.New("device already enrolled")
	ErrPolicyExists      = errors.New("compliance policy already exists")
	ErrEtagMismatch      = errors.New("etag does not match the current version")
	ErrDeviceRetired     = errors.New("device is retired")
	ErrPermissionDenied  = errors.New("permission denied")
	ErrInvalid           = errors.New("invalid argument")
)

// Violation is one bad request field (snake_case proto path) and why.
type Violation struct {
	Field, Description string
}

// InvalidError is bad input; errors.Is(err, ErrInvalid) is true.
type InvalidError struct {
	Violations []Violation
}

func (e *InvalidError) Error() string {
	parts := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		parts[i] = v.Field + ": " + v.Description
	}
	return "invalid argument: " + strings.Join(parts, "; ")
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &InvalidError{Violations: []Violation{{Field: field, Description: fmt.Sprintf(format, args...)}}}
}

// Enumerations carry the numbers of their condaccess.common.v1 counterparts, so
// conversion is a cast.
type (
	// Platform is an operating system family.
	Platform int32
	// RiskLevel is a device's machine risk.
	RiskLevel int32
	// State is a compliance state.
	State int32
)

// Platforms.
const (
	PlatformUnspecified Platform = 0
	PlatformWindows     Platform = 1
	PlatformMacOS       Platform = 2
	PlatformLinux       Platform = 3
	PlatformIOS         Platform = 4
	PlatformAndroid     Platform = 5
)

// Risk levels. RiskUnspecified in a policy means "setting not configured".
const (
	RiskUnspecified RiskLevel = 0
	RiskNone        RiskLevel = 1
	RiskLow         RiskLevel = 2
	RiskMedium      RiskLevel = 3
	RiskHigh        RiskLevel = 4
)

// Compliance states.
const (
	StateUnspecified  State = 0
	StateCompliant    State = 1
	StateNoncompliant State = 2
	StateInGrace      State = 3
	StateExcluded     State = 4
	StateNotEvaluated State = 5
)

var platformNames = map[Platform]string{
	PlatformWindows: "WINDOWS", PlatformMacOS: "MACOS", PlatformLinux: "LINUX",
	PlatformIOS: "IOS", PlatformAndroid: "ANDROID",
}

func (p Platform) String() string {
	if s, ok := platformNames[p]; ok {
		return s
	}
	return fmt.Sprintf("PLATFORM(%d)", int32(p))
}

// Valid reports whether p is a defined platform other than unspecified.
func (p Platform) Valid() bool { _, ok := platformNames[p]; return ok }

var riskNames = map[RiskLevel]string{RiskNone: "NONE", RiskLow: "LOW", RiskMedium: "MEDIUM", RiskHigh: "HIGH"}

func (r RiskLevel) String() string {
	if s, ok := riskNames[r]; ok {
		return s
	}
	return fmt.Sprintf("RISK(%d)", int32(r))
}

// Valid reports whether r is a defined level other than unspecified.
func (r RiskLevel) Valid() bool { _, ok := riskNames[r]; return ok }

var stateNames = map[State]string{
	StateCompliant: "COMPLIANT", StateNoncompliant: "NONCOMPLIANT", StateInGrace: "IN_GRACE_PERIOD",
	StateExcluded: "EXCLUDED", StateNotEvaluated: "NOT_EVALUATED",
}

func (s State) String() string {
	if n, ok := stateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("STATE(%d)", int32(s))
}

// Valid reports whether s is a defined state other than unspecified.
func (s State) Valid() bool { _, ok := stateNames[s]; return ok }

// CountsAsCompliant reports whether Conditional Access treats the state as compliant.
func (s State) CountsAsCompliant() bool {
	return s == StateCompliant || s == StateInGrace || s == StateExcluded
}

// Device is an enrolled device.
type Device struct {
	ID           string    `json:"id"`
	DisplayName  string    `json:"display_name,omitempty"`
	Platform     Platform  `json:"platform"`
	OSVersion    string    `json:"os_version,omitempty"`
	OwnerUserID  string    `json:"owner_user_id,omitempty"`
	Groups       []string  `json:"groups,omitempty"`
	EnrollTime   time.Time `json:"enroll_time"`
	LastSeenTime time.Time `json:"last_seen_time,omitzero"`
	UpdateTime   time.Time `json:"update_time"`
	Retired      bool      `json:"retired,omitempty"`
	RetireTime   time.Time `json:"retire_time,omitzero"`
	Version      int64     `json:"version"`

	// RegisteredUserIDs are the users, besides the owner, who may use the device
	// (admin-managed; the access service's GRANT_CONTROL_REGISTERED_DEVICE).
	RegisteredUserIDs []string `json:"registered_user_ids,omitempty"`
}

// Etag is the device's current etag.
func (d *Device) Etag() string { return etag(d.Version) }

// InGroup reports whether the device carries group g.
func (d *Device) InGroup(g string) bool {
	for _, x := range d.Groups {
		if x == g {
			return true
		}
	}
	return false
}

func etag(v int64) string { return strconv.FormatInt(v, 10) }

// Assignment says which devices a policy applies to; exclusion beats inclusion.
type Assignment struct {
	AllDevices    bool     `json:"all_devices,omitempty"`
	IncludeGroups []string `json:"include_groups,omitempty"`
	ExcludeGroups []string `json:"exclude_groups,omitempty"`
}

// RiskGrace is a grace period for one device risk level.
type RiskGrace struct {
	Level RiskLevel     `json:"level"`
	Grace time.Duration `json:"grace"`
}

// Actions are the actions for noncompliance.
type Actions struct {
	// Grace before a failing device is marked noncompliant; 0 = at once.
	Grace time.Duration `json:"grace,omitempty"`
	// RiskGrace overrides Grace for a device risk level. Without an entry for HIGH,
	// a HIGH-risk device gets no grace period.
	RiskGrace []RiskGrace `json:"risk_grace,omitempty"`
}

// GraceFor returns the grace period that applies to a device at risk level r.
func (a *Actions) GraceFor(r RiskLevel) time.Duration {
	for _, g := range a.RiskGrace {
		if g.Level == r {
			return g.Grace
		}
	}
	if r == RiskHigh {
		return 0
	}
	return a.Grace
}

// Policy is a compliance policy.
type Policy struct {
	ID            string     `json:"id"`
	DisplayName   string     `json:"display_name"`
	Description   string     `json:"description,omitempty"`
	MaxDeviceRisk RiskLevel  `json:"max_device_risk,omitempty"`
	MinOSVersion  string     `json:"min_os_version,omitempty"`
	Platforms     []Platform `json:"platforms,omitempty"`
	Assignment    Assignment `json:"assignment"`
	Actions       Actions    `json:"actions"`
	CreateTime    time.Time  `json:"create_time"`
	UpdateTime    time.Time  `json:"update_time"`
	Version       int64      `json:"version"`
}

// Etag is the policy's current etag.
func (p *Policy) Etag() string { return etag(p.Version) }

// AppliesTo reports whether the policy is assigned to d: (all devices or d in an
// included group) and d in no excluded group and (no platform scope or d's platform
// in it).
func (p *Policy) AppliesTo(d *Device) bool {
	in := p.Assignment.AllDevices
	for _, g := range p.Assignment.IncludeGroups {
		if in {
			break
		}
		in = d.InGroup(g)
	}
	if !in {
		return false
	}
	for _, g := range p.Assignment.ExcludeGroups {
		if d.InGroup(g) {
			return false
		}
	}
	if len(p.Platforms) == 0 {
		return true
	}
	for _, pl := range p.Platforms {
		if pl == d.Platform {
			return true
		}
	}
	return false
}

// Exclusion is an audited exclusion of a device from compliance evaluation.
type Exclusion struct {
	ID         string    `json:"id"`
	DeviceID   string    `json:"device_id"`
	Reason     string    `json:"reason"`
	CreatedBy  string    `json:"created_by"`
	CreateTime time.Time `json:"create_time"`
	ExpireTime time.Time `json:"expire_time,omitzero"` // zero = never
	EndTime    time.Time `json:"end_time,omitzero"`    // zero while active
	EndedBy    string    `json:"ended_by,omitempty"`
	Comment    string    `json:"comment,omitempty"`
}

// ActiveAt reports whether the exclusion is in force at now.
func (e *Exclusion) ActiveAt(now time.Time) bool {
	return e.EndTime.IsZero() && (e.ExpireTime.IsZero() || now.Before(e.ExpireTime))
}

// SystemSubject is who ends an exclusion that expires.
const SystemSubject = "system"

// DeviceRisk is the risk of one device as last received from the risk service.
// A device the risk service never reported counts as RiskNone.
type DeviceRisk struct {
	DeviceID       string
	Level          RiskLevel
	ActiveAlertIDs []string // highest severity first
	// AlertLevels are the severities (as risk levels) of active alerts seen in
	// alert_changed events; alerts reported before a resync may be missing.
	AlertLevels map[string]RiskLevel `json:",omitempty"`
	Revision    int64                // the risk revision the level was taken from
	UpdateTime  time.Time
}

// CauseAlerts returns the active alerts behind the level: those whose severity is the
// level or not known, else (none) every active alert.
func (r *DeviceRisk) CauseAlerts() []string {
	var at []string
	for _, id := range r.ActiveAlertIDs {
		if l, ok := r.AlertLevels[id]; !ok || l == r.Level {
			at = append(at, id)
		}
	}
	if len(at) == 0 {
		return slices.Clone(r.ActiveAlertIDs)
	}
	return at
}

// AlertChange is an alert reported, updated or resolved at the risk service.
type AlertChange struct {
	AlertID, DeviceID string
	// Level is the alert's severity as a risk level (RiskNone for informational).
	Level RiskLevel
	// Active: not resolved and above informational.
	Active bool
}

// Settings are the tenant-wide compliance settings.
type Settings struct {
	// DevicesWithoutPolicyCompliant: false (the default) makes a device that no policy
	// is assigned to NONCOMPLIANT; true makes it COMPLIANT.
	DevicesWithoutPolicyCompliant bool
	Version                       int64
}

// Etag is the settings' current etag.
func (s *Settings) Etag() string { return etag(s.Version) }

// SettingResult is the evaluation of one setting of one policy.
type SettingResult struct {
	Setting   string `json:"setting"`
	Expected  string `json:"expected"`
	Actual    string `json:"actual"`
	Compliant bool   `json:"compliant"`
	Reason    string `json:"reason"`
}

// PolicyResult is a device's compliance with one policy.
type PolicyResult struct {
	PolicyID    string          `json:"policy_id"`
	DisplayName string          `json:"display_name"`
	State       State           `json:"state"`
	Settings    []SettingResult `json:"settings"`
	// FailingSince is when the policy started failing for the device (zero while
	// compliant); the grace period runs from it.
	FailingSince    time.Time `json:"failing_since,omitzero"`
	GraceExpireTime time.Time `json:"grace_expire_time,omitzero"`
}

// DeviceCompliance is a device's compliance state with its explanation.
type DeviceCompliance struct {
	DeviceID         string         `json:"device_id"`
	State            State          `json:"state"`
	Reason           string         `json:"reason"`
	Policies         []PolicyResult `json:"policies,omitempty"`
	Risk             RiskLevel      `json:"risk"`
	RiskAlertIDs     []string       `json:"risk_alert_ids,omitempty"`
	RiskRevision     int64          `json:"risk_revision,omitempty"`
	Exclusion        *Exclusion     `json:"exclusion,omitempty"`
	EvaluateTime     time.Time      `json:"evaluate_time"`
	NextEvaluateTime time.Time      `json:"next_evaluate_time,omitzero"`
	// Revision is the compliance event revision of the last change.
	Revision int64 `json:"revision"`
	// Enrollment is the device's platform and users, filled by ListDeviceCompliance
	// (not stored with the compliance state).
	Enrollment *Enrollment `json:"-"`
}

// Enrollment is what the inventory says about a device that access decisions use.
type Enrollment struct {
	Platform          Platform
	OwnerUserID       string
	RegisteredUserIDs []string
	Retired           bool
}

// Event is a change the service publishes, appended in the transaction that makes it.
type Event struct {
	Time                    time.Time
	TraceParent, TraceState string
	// Exactly one of the following is set.
	ComplianceChanged *ComplianceChange
	DeviceChanged     *Device
	IdentityChanged   *DeviceIdentity
}

// ComplianceChange says a device's compliance changed.
type ComplianceChange struct {
	Compliance    DeviceCompliance
	PreviousState State
}

// Event types stored with each event.
const (
	EventComplianceChanged = "device_compliance_changed"
	EventDeviceChanged     = "device_changed"
	EventIdentityChanged   = "device_identity_changed"
)

// Key returns the device id the event is about.
func (e *Event) Key() string {
	switch {
	case e.ComplianceChanged != nil:
		return e.ComplianceChanged.Compliance.DeviceID
	case e.DeviceChanged != nil:
		return e.DeviceChanged.ID
	case e.IdentityChanged != nil:
		return e.IdentityChanged.DeviceID
	}
	return ""
}

// Type returns the event's type.
func (e *Event) Type() string {
	if e.DeviceChanged != nil {
		return EventDeviceChanged
	}
	if e.IdentityChanged != nil {
		return EventIdentityChanged
	}
	return EventComplianceChanged
}
