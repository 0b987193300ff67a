// Package access is the access service's domain: directory, Conditional Access policies, device compliance as known to access, sessions and sign-ins, their rules and the Store interface.
package access

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Sentinel errors; accessgrpc maps them to status codes.
var (
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrEtagMismatch       = errors.New("etag mismatch")
	ErrInvalid            = errors.New("invalid argument")
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrLockout: an enabled policy could block an emergency-access account.
	ErrLockout = fmt.Errorf("%w: emergency-access lockout", ErrFailedPrecondition)
	// ErrMembershipCycle: nested group membership would form a cycle.
	ErrMembershipCycle = fmt.Errorf("%w: group membership cycle", ErrFailedPrecondition)
)

// Enumerations carry the numbers of their proto counterparts so conversion is a cast.
type (
	// PolicyState is ENABLED, REPORT_ONLY or DISABLED.
	PolicyState int32
	// GrantControl is a requirement a policy can place on access.
	GrantControl int32
	// GrantOperator is AND (default) or OR.
	GrantOperator int32
	// Platform is a device platform (condaccess.common.v1.Platform).
	Platform int32
	// ClientAppType is a client kind.
	ClientAppType int32
	// ComplianceState is condaccess.common.v1.ComplianceState.
	ComplianceState int32
	// RiskLevel is condaccess.common.v1.RiskLevel.
	RiskLevel int32
	// Decision is ALLOW or BLOCK.
	Decision int32
	// SessionState is ACTIVE or REVOKED.
	SessionState int32
)

// Enumeration values.
const (
	PolicyEnabled    PolicyState = 1
	PolicyReportOnly PolicyState = 2
	PolicyDisabled   PolicyState = 3

	ControlCompliantDevice GrantControl = 1
	ControlMFA             GrantControl = 2
	// ControlRegisteredDevice: the device belongs to the user (owner or registered user).
	ControlRegisteredDevice GrantControl = 3

	OperatorAnd GrantOperator = 1
	OperatorOr  GrantOperator = 2

	ComplianceUnspecified  ComplianceState = 0
	ComplianceCompliant    ComplianceState = 1
	ComplianceNoncompliant ComplianceState = 2
	ComplianceGrace        ComplianceState = 3
	ComplianceExcluded     ComplianceState = 4
	ComplianceNotEvaluated ComplianceState = 5

	DecisionAllow Decision = 1
	DecisionBlock Decision = 2

	SessionActive  SessionState = 1
	SessionRevoked SessionState = 2
)

// CountsAsCompliant reports whether Conditional Access treats s as compliant.
func (s ComplianceState) CountsAsCompliant() bool {
	return s == ComplianceCompliant || s == ComplianceGrace || s == ComplianceExcluded
}

// User is a directory user.
type User struct {
	ID              string
	DisplayName     string
	Disabled        bool
	EmergencyAccess bool
	// ExternalID is the user's identifier at the identity provider (the value of the
	// token's user claim); "" = none. Unique in the directory: a user with one is
	// matched from a token only by it.
	ExternalID string
	// GroupIDs and TransitiveGroupIDs are output only (membership is set on groups).
	GroupIDs, TransitiveGroupIDs []string
	CreateTime, UpdateTime       time.Time
	Etag                         string
}

// Group is a directory group; groups nest.
type Group struct {
	ID                            string
	DisplayName                   string
	MemberUserIDs, MemberGroupIDs []string
	CreateTime, UpdateTime        time.Time
	Etag                          string
}

// Application is an application protected by Conditional Access.
type Application struct {
	ID                     string
	DisplayName            string
	CreateTime, UpdateTime time.Time
	Etag                   string
}

// Directory is the whole directory, as loaded from the store.
type Directory struct {
	Users        []*User
	Groups       []*Group
	Applications []*Application
}

// UserAssignment says which users a policy applies to; exclusion beats inclusion.
type UserAssignment struct {
	All                         bool
	IncludeUsers, IncludeGroups []string
	ExcludeUsers, ExcludeGroups []string
}

// ApplicationAssignment says which applications a policy applies to.
type ApplicationAssignment struct {
	All              bool
	Include, Exclude []string
}

// Conditions narrow when a policy applies.
type Conditions struct {
	IncludePlatforms, ExcludePlatforms []Platform
	IncludeIPRanges, ExcludeIPRanges   []string
	ClientAppTypes                     []ClientAppType
}

// GrantControls: block, or the required controls.
type GrantControls struct {
	Block    bool
	Require  []GrantControl
	Operator GrantOperator
}

// Policy is a Conditional Access policy.
type Policy struct {
	ID, DisplayName, Description string
	State                        PolicyState
	Users                        UserAssignment
	Applications                 ApplicationAssignment
	Conditions                   Conditions
	Grant                        GrantControls
	CreateTime, UpdateTime       time.Time
	Etag                         string
}

// SettingReason is one compliance setting behind a device's state (the cause chain).
type SettingReason struct {
	PolicyID, PolicyName string
	Setting, Reason      string
	Compliant            bool
}

// DeviceCompliance is a device's compliance as received from the compliance feed.
type DeviceCompliance struct {
	DeviceID     string
	State        ComplianceState
	Risk         RiskLevel
	RiskAlertIDs []string
	Settings     []SettingReason
	Platform     Platform
	Revision     int64 // compliance event revision of the state
	Reason       string
	// OwnerUserID and RegisteredUserIDs are the device's users (from the
	// compliance feed's device_changed events): GRANT_CONTROL_REGISTERED_DEVICE.
	OwnerUserID       string
	RegisteredUserIDs []string
	// UsersListed says OwnerUserID, RegisteredUserIDs and Platform come from a
	// listing that carries them (DeviceCompliance.enrollment): a resync replaces the
	// known ones even with none. False: the message did not say; keep the known ones.
	// Not stored.
	UsersListed bool
}

// Session is a user's access to an application from a device.
type Session struct {
	ID                         string
	UserID, DeviceID, AppID    string
	State                      SessionState
	CreateTime, LastAccessTime time.Time
	RevokeTime                 time.Time
	RevokeReason               string
	// TraceParent, TraceState: the trace of the decision that opened the
	// session (carried by its session_opened event; not stored with the session).
	TraceParent, TraceState string
}

// Revocation is a session revoked by a compliance change (continuous access evaluation).
type Revocation struct {
	Session            Session
	ReasonCode         string
	ComplianceRevision int64
	// TraceParent, TraceState: the compliance event's trace context.
	TraceParent, TraceState string
}

// SignIn is one recorded decision. Detail is the encoded wire record (reasons,
// per-policy results, client context) kept opaque to the store.
type SignIn struct {
	ID                      string
	Time                    time.Time
	UserID, DeviceID, AppID string
	Decision                Decision
	TraceID                 string
	Detail                  []byte
	// UserProof and DeviceProof say how the user and the device were proven
	// (values of accessv1.Proof; 0 = not recorded).
	UserProof, DeviceProof Proof
	// Key, when set by the Recorder, is the sign-in's store key (its time in
	// nanoseconds, unique and increasing): ID is SignInID(Key).
	Key int64
}

// Proof says how an identity was proven (values of accessv1.Proof).
type Proof uint8

// Proofs.
const (
	ProofUnspecified         Proof = 0
	ProofVerifiedToken       Proof = 1
	ProofVerifiedCertificate Proof = 2
	ProofAssertedByCaller    Proof = 3
	ProofNone                Proof = 4
)

// SignInID is the id of the sign-in with store key key: "si-" and the key in base 36.
func SignInID(key int64) string {
	var b [3 + 13]byte
	return string(strconv.AppendInt(append(b[:0], "si-"...), key, 36))
}

// SignInFilter filters ListSignIns; zero fields match anything.
type SignInFilter struct {
	UserID, DeviceID, AppID string
	Decision                Decision
	After, Before           time.Time
	UserProof, DeviceProof  Proof
}

// SessionFilter filters ListSessions.
type SessionFilter struct {
	UserID, DeviceID string
	State            SessionState
}

// SessionEventKind is the kind of a session event.
type SessionEventKind int

// Session event kinds.
const (
	SessionOpenedEvent SessionEventKind = iota + 1
	SessionRevokedEvent
)

// SessionEvent is one event of the session event log.
type SessionEvent struct {
	Revision                int64
	Time                    time.Time
	Kind                    SessionEventKind
	Session                 Session
	ReasonCode              string
	ComplianceRevision      int64
	TraceParent, TraceState string
}
