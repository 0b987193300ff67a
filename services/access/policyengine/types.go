// Package policyengine is the in-memory Conditional Access decision engine: it compiles the
// directory and the policies into an immutable Snapshot and answers decisions from it with
// no allocation.
//
// # Usage
//
//	snap, err := policyengine.Compile(dir, policies)        // or snap.WithPolicies / WithDrafts
//	cur.Store(snap)                                          // atomic.Pointer[Snapshot] in the service
//	devs := policyengine.NewDeviceIndex()                    // written by the compliance feed
//	devs.Put("dev-1", policyengine.DeviceState{State: policyengine.ComplianceCompliant, ...})
//
//	var res policyengine.Result                              // reuse one per goroutine (sync.Pool)
//	cur.Load().EvaluateIn(&req, devs, policyengine.Feed{Stale: stale, Age: age}, &res)
//	// or, with a device state at hand (nil when unknown):
//	dev, _ := devs.Get(req.DeviceID)
//	cur.Load().Evaluate(&req, dev, policyengine.Feed{Stale: stale, Age: age}, &res)
//
// Evaluate writes into res, resetting its slices to [:0]; every string it puts there is a
// static string built at compile time, so a decision allocates nothing once res has grown.
// res is valid until the next Evaluate into it.
//
// # Enums
//
// Platform, ComplianceState, RiskLevel, State, Control, Operator, ClientApp, Decision,
// ResultKind and CauseKind have the same numeric values as the proto enums
// (commonv1.Platform, commonv1.ComplianceState, commonv1.RiskLevel, accessv1.PolicyState,
// accessv1.GrantControl, accessv1.GrantOperator, accessv1.ClientAppType, accessv1.Decision,
// accessv1.PolicyResultKind, accessv1.CauseKind), so conversion is a plain type conversion.
//
// # Rules
//
//   - Unknown user → BLOCK UNKNOWN_USER; unknown application → BLOCK UNKNOWN_APPLICATION;
//     disabled user → BLOCK USER_DISABLED. No policy is evaluated then (Policies is empty).
//   - DISABLED policies are skipped and not reported.
//   - A policy applies when the application is targeted (all or included, and not excluded),
//     the user is targeted (all, included directly or through a group, transitively through
//     nested groups, and not excluded directly or through a group: exclusion beats inclusion),
//     and the conditions hold: platform (Include empty = any; Exclude wins), client IP
//     (IncludeIPs empty = anywhere; ExcludeIPs wins), client app type (ClientApps empty = any).
//     An unknown platform (neither the request nor the device says) matches no Include list
//     and no Exclude list; so does an invalid/absent IP. A request that does not say its
//     client app type counts as ClientAppOther (legacy or unknown clients).
//   - An applying policy with Block blocks. Otherwise its Require controls are checked with
//     Operator (AND: all, OR: one). MFA holds when Request.MFADone. COMPLIANT_DEVICE holds when
//     the feed is not stale and the device is known and its state is COMPLIANT,
//     IN_GRACE_PERIOD or EXCLUDED. It fails with COMPLIANCE_STATE_STALE when the feed is stale
//     (fail closed, whatever the last known state), UNKNOWN_DEVICE when the device is unknown,
//     COMPLIANT_DEVICE_REQUIRED otherwise.
//   - Decision: BLOCK when any applying ENABLED policy blocks (block beats grant: every
//     applying enabled policy must be satisfied); otherwise ALLOW. REPORT_ONLY policies are
//     evaluated and reported (REPORT_ONLY_WOULD_BLOCK / _WOULD_GRANT / _NOT_APPLIED) but never
//     change the decision and add no reason.
//
// # Reasons (Result.Reasons; the first one is the main reason)
//
//   - BLOCK: one reason per failing control of each blocking enabled policy, in policy order
//     (BLOCKED_BY_POLICY for a block control; COMPLIANT_DEVICE_REQUIRED,
//     COMPLIANCE_STATE_STALE, UNKNOWN_DEVICE or MFA_REQUIRED for an unmet requirement),
//     each with the policy id. Or one of UNKNOWN_USER, UNKNOWN_APPLICATION, USER_DISABLED.
//   - ALLOW with no applying enabled policy: ALLOWED.
//   - ALLOW with applying enabled policies: GRANTED_BY_POLICY per granting policy, in policy
//     order; when the COMPLIANT_DEVICE control of a granting policy held and the device's
//     state is EXCLUDED (from compliance evaluation), DEVICE_EXCLUDED comes first
//     (informational: it is why access is allowed).
//
// # Per-policy results (Result.Policies)
//
// By default Policies holds the enabled and report-only policies that target the request's
// application (including those that exclude it: NOT_APPLIED "application excluded"), in
// policy id order. Policies that do not target the application at all are left out for
// speed; set Request.AllPolicies to have them listed too (NOT_APPLIED "application not
// targeted"), e.g. for WhatIf (that path visits every policy: slower).
// Request.OnlyApplied leaves out the policies that did not apply.
// NotApplied reasons: "application not targeted", "application excluded", "user not
// included", "user excluded", "user excluded by group <id>", "platform not included",
// "platform excluded", "location not included", "location excluded", "client app not
// included".
//
// A policy with a location condition (include or exclude ranges) and a request without a
// valid IP does not fall through to "not applied": it applies and blocks with
// CLIENT_IP_UNKNOWN (REPORT_ONLY_WOULD_BLOCK when report-only), whatever its controls,
// unless an exclusion or another condition already keeps it from applying (fail closed).
// REGISTERED_DEVICE holds when the device is known and the user is its owner or one of its
// registered users; it fails with DEVICE_NOT_REGISTERED_TO_USER.
//
// # Cause chain (Result.Causes), for a BLOCK only
//
// When a blocking enabled policy failed COMPLIANT_DEVICE because the device is not compliant
// (COMPLIANT_DEVICE_REQUIRED), the chain starts from the device: one ALERT step per active
// alert id, then RISK_LEVEL (the device risk), then COMPLIANCE_SETTING (DeviceState.Setting
// and DeviceState.Reason), when known. Then, for every blocking enabled policy, a POLICY step
// followed by one CONTROL step per failing control ("BLOCK", "COMPLIANT_DEVICE", "MFA").
//
// # How a decision stays fast
//
// Compile interns ids to dense int32s (users through an open-addressing table with inline
// keys whose 128-byte slots also hold the user's record, so finding the user and its groups
// is one pair of adjacent cache lines) and precomputes every user's transitive groups
// (sorted, inline when few, plus a one-word Bloom filter). Each application gets the list
// of the non-disabled policies targeting it (its own and the all-applications ones merged,
// in policy order), with a template of their NOT_APPLIED results, and a candidate index:
// the positions of its all-users policies, and a hash table from (application, group) and
// (application, user) to the positions of the policies including that group or user
// (all-applications policies are indexed once by group and user, with their position per
// application in a dense table), with exact per-application prefilters (a bitset of the
// groups that have a key, a 512-bit Bloom filter of the users) so that most decisions
// never probe the table. A decision looks up the user's groups in that index,
// marks the candidate positions in a bitset kept in the Result, copies the template into
// Result.Policies (one memmove; not with OnlyApplied; past 4M positions over all
// applications the entries come from per-policy templates) and evaluates only the candidates
// (about 9 of 73 in W1): exclusions (one-word Bloom filters in the policy's 64-byte hot
// record, the lists in a cold record read only when they meet), conditions and controls,
// patching the candidate's entry. Every string it writes was built at compile time.
// EvaluateIn reads the device from its DeviceIndex slot: one cache line with the id and
// the state's hot fields (state, risk, platform, revision packed in one atomic word); the
// full state is read only for the cause chain of a noncompliant device's block, and if it
// no longer matches the hot word (a concurrent update) the decision is made again from it.
// See bench_test.go (W1) for the figures:
//
//	go test -run '^$' -bench 'EvaluateW1$' -benchtime 2000000x -cpu 1 ./services/access/policyengine/
//	go test -run '^$' -bench 'EvaluateW1Latency' -benchtime 1000000x -cpu 1 ./services/access/policyengine/
//
// # Concurrency
//
// A Snapshot is immutable and safe for concurrent use; a Result is not (one per goroutine).
// DeviceIndex readers never wait for a writer: Get is lock-free (atomic loads only).
package policyengine

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// State is a policy's state (values of accessv1.PolicyState).
type State uint8

// Policy states.
const (
	StateUnspecified State = 0
	StateEnabled     State = 1
	StateReportOnly  State = 2
	StateDisabled    State = 3
)

// Control is a grant control (values of accessv1.GrantControl).
type Control uint8

// Grant controls.
const (
	ControlUnspecified     Control = 0
	ControlCompliantDevice Control = 1
	ControlMFA             Control = 2
	// ControlRegisteredDevice holds when the device's owner or one of its registered
	// users is the request's user (DeviceState.RegisteredTo).
	ControlRegisteredDevice Control = 3
)

// Operator combines required controls (values of accessv1.GrantOperator; 0 means AND).
type Operator uint8

// Grant operators.
const (
	OperatorUnspecified Operator = 0 // AND
	OperatorAND         Operator = 1
	OperatorOR          Operator = 2
)

// ClientApp is a client app type (values of accessv1.ClientAppType).
type ClientApp uint8

// Client app types.
const (
	ClientAppUnspecified        ClientApp = 0 // treated as ClientAppOther in conditions
	ClientAppBrowser            ClientApp = 1
	ClientAppMobileAndDesktop   ClientApp = 2
	ClientAppExchangeActiveSync ClientApp = 3
	ClientAppOther              ClientApp = 4
)

// Platform is a device platform (values of commonv1.Platform).
type Platform uint8

// Platforms.
const (
	PlatformUnspecified Platform = 0
	PlatformWindows     Platform = 1
	PlatformMacOS       Platform = 2
	PlatformLinux       Platform = 3
	PlatformIOS         Platform = 4
	PlatformAndroid     Platform = 5
)

// ComplianceState is a device's compliance state (values of commonv1.ComplianceState).
type ComplianceState uint8

// Compliance states.
const (
	ComplianceUnspecified   ComplianceState = 0
	ComplianceCompliant     ComplianceState = 1
	ComplianceNoncompliant  ComplianceState = 2
	ComplianceInGracePeriod ComplianceState = 3
	ComplianceExcluded      ComplianceState = 4
	ComplianceNotEvaluated  ComplianceState = 5
)

// CountsAsCompliant reports whether the state satisfies COMPLIANT_DEVICE (given a fresh feed).
func (c ComplianceState) CountsAsCompliant() bool {
	return c == ComplianceCompliant || c == ComplianceInGracePeriod || c == ComplianceExcluded
}

// RiskLevel is a device risk level (values of commonv1.RiskLevel).
type RiskLevel uint8

// Risk levels.
const (
	RiskUnspecified RiskLevel = 0
	RiskNone        RiskLevel = 1
	RiskLow         RiskLevel = 2
	RiskMedium      RiskLevel = 3
	RiskHigh        RiskLevel = 4
)

// Decision is ALLOW or BLOCK (values of accessv1.Decision).
type Decision uint8

// Decisions.
const (
	DecisionUnspecified Decision = 0
	DecisionAllow       Decision = 1
	DecisionBlock       Decision = 2
)

// ResultKind is one policy's result (values of accessv1.PolicyResultKind).
type ResultKind uint8

// Policy result kinds.
const (
	ResultUnspecified          ResultKind = 0
	ResultGranted              ResultKind = 1
	ResultBlocked              ResultKind = 2
	ResultNotApplied           ResultKind = 3
	ResultReportOnlyWouldBlock ResultKind = 4
	ResultReportOnlyWouldGrant ResultKind = 5
	ResultReportOnlyNotApplied ResultKind = 6
)

// CauseKind is the kind of a cause-chain step (values of accessv1.CauseKind).
type CauseKind uint8

// Cause kinds.
const (
	CauseUnspecified       CauseKind = 0
	CauseAlert             CauseKind = 1
	CauseRiskLevel         CauseKind = 2
	CauseComplianceSetting CauseKind = 3
	CausePolicy            CauseKind = 4
	CauseControl           CauseKind = 5
)

// Stable reason codes (Reason.Code).
const (
	CodeAllowed                 = "ALLOWED"
	CodeGrantedByPolicy         = "GRANTED_BY_POLICY"
	CodeBlockedByPolicy         = "BLOCKED_BY_POLICY"
	CodeCompliantDeviceRequired = "COMPLIANT_DEVICE_REQUIRED"
	CodeMFARequired             = "MFA_REQUIRED"
	CodeComplianceStateStale    = "COMPLIANCE_STATE_STALE"
	CodeDeviceExcluded          = "DEVICE_EXCLUDED"
	CodeUnknownUser             = "UNKNOWN_USER"
	CodeUnknownDevice           = "UNKNOWN_DEVICE"
	CodeUnknownApplication      = "UNKNOWN_APPLICATION"
	CodeUserDisabled            = "USER_DISABLED"
	// CodeDeviceNotRegistered: REGISTERED_DEVICE failed (the device is not the user's).
	CodeDeviceNotRegistered = "DEVICE_NOT_REGISTERED_TO_USER"
	// CodeClientIPUnknown: a policy with a location condition met a request without a
	// trustworthy client IP; the policy blocks (would block, if report-only).
	CodeClientIPUnknown = "CLIENT_IP_UNKNOWN"
)

// Not-applied reasons (PolicyResult.NotApplied). "user excluded by group <id>" is built per
// policy and group at compile time.
const (
	NotAppliedAppNotTargeted   = "application not targeted"
	NotAppliedAppExcluded      = "application excluded"
	NotAppliedUserNotIncluded  = "user not included"
	NotAppliedUserExcluded     = "user excluded"
	NotAppliedUserExcludedByGr = "user excluded by group " // + group id
	NotAppliedPlatformNotIncl  = "platform not included"
	NotAppliedPlatformExcluded = "platform excluded"
	NotAppliedLocationNotIncl  = "location not included"
	NotAppliedLocationExcluded = "location excluded"
	NotAppliedClientAppNotIncl = "client app not included"
)

// Directory is the input directory: users, groups (which may nest) and applications.
type Directory struct {
	Users        []User
	Groups       []Group
	Applications []Application
}

// User is a directory user.
type User struct {
	ID              string
	Disabled        bool
	EmergencyAccess bool
	// ExternalID is the user's identifier at the identity provider ("" = none; unique
	// when set): Snapshot.ResolveTokenUser.
	ExternalID string
}

// Group is a directory group; a user is in a group when a direct member of it or of any
// group nested in it (transitively). Members that are not in the directory are ignored;
// cycles are tolerated (each group is visited once).
type Group struct {
	ID           string
	MemberUsers  []string
	MemberGroups []string
}

// Application is an application.
type Application struct {
	ID string
}

// UserAssignment says which users a policy applies to. Ids that are not in the directory
// never match.
type UserAssignment struct {
	All           bool
	IncludeUsers  []string
	IncludeGroups []string
	ExcludeUsers  []string
	ExcludeGroups []string
}

// AppAssignment says which applications a policy applies to.
type AppAssignment struct {
	All     bool
	Include []string
	Exclude []string
}

// PlatformCondition limits a policy to platforms: Include empty = any platform.
type PlatformCondition struct {
	Include []Platform
	Exclude []Platform
}

// Policy is a Conditional Access policy (the engine's view of
// accessv1.ConditionalAccessPolicy).
type Policy struct {
	ID          string
	DisplayName string
	State       State
	Users       UserAssignment
	Apps        AppAssignment
	Platforms   PlatformCondition
	IncludeIPs  []netip.Prefix // empty = anywhere
	ExcludeIPs  []netip.Prefix
	ClientApps  []ClientApp // empty = any
	Block       bool
	Require     []Control
	Operator    Operator
}

// DeviceState is a device's compliance as derived from the compliance feed. A DeviceState
// stored in a DeviceIndex must not be modified afterwards (Put takes ownership of AlertIDs).
type DeviceState struct {
	State ComplianceState
	Risk  RiskLevel
	// Platform is the enrolled platform, used when the request does not say.
	Platform Platform
	// AlertIDs are the device's active alerts (root of the cause chain).
	AlertIDs []string
	// Setting names the failing compliance setting (e.g. "max-medium/maxDeviceRisk").
	Setting string
	// Reason describes why the device is not compliant (e.g. "device risk HIGH is above
	// the maximum MEDIUM of policy max-medium").
	Reason string
	// Revision is the compliance event revision the state comes from.
	Revision int64
	// UpdatedAt is when the state last changed.
	UpdatedAt time.Time
	// Owner and RegisteredUsers are the users the device belongs to
	// (GRANT_CONTROL_REGISTERED_DEVICE).
	Owner           string
	RegisteredUsers []string
}

// RegisteredTo reports whether the device belongs to user: its owner or one of its
// registered users. An empty user id never matches.
func (d *DeviceState) RegisteredTo(user string) bool {
	if d == nil || user == "" {
		return false
	}
	if d.Owner == user {
		return true
	}
	for _, u := range d.RegisteredUsers {
		if u == user {
			return true
		}
	}
	return false
}

// Feed is the health of the compliance feed, supplied by the service per decision.
type Feed struct {
	// Stale is true when the feed has been broken for longer than the configured bound:
	// COMPLIANT_DEVICE then fails with COMPLIANCE_STATE_STALE.
	Stale bool
	// Age is how long ago the state was last confirmed (copied to Result.Device.Age).
	Age time.Duration
}

// Request is one access request.
type Request struct {
	UserID   string
	DeviceID string
	AppID    string
	// Platform is the client platform; unspecified = DeviceState.Platform.
	Platform Platform
	// IP is the client address; the zero Addr when unknown.
	IP        netip.Addr
	MFADone   bool
	ClientApp ClientApp
	// TokenGroups are group ids asserted by the user's verified token (its groups
	// claim). With their enclosing groups they count for a policy's include_groups,
	// never for its exclude_groups (a token can make a policy apply, never exempt the
	// user from one). Ids that are not directory groups are ignored.
	TokenGroups []string
	// AllPolicies also lists the policies that do not target the application (NOT_APPLIED
	// "application not targeted"); slower, for explanations.
	AllPolicies bool
	// OnlyApplied leaves out the policies that did not apply (NOT_APPLIED and
	// REPORT_ONLY_NOT_APPLIED): for enforcement points that need the decision and its
	// reasons only. Faster. The decision, reasons and cause chain are the same.
	OnlyApplied bool
}

// Controls is a set of grant controls.
type Controls uint8

// Has reports whether c is in the set.
func (cs Controls) Has(c Control) bool { return c < 8 && cs&(1<<c) != 0 }

// With returns the set with c added.
func (cs Controls) With(c Control) Controls { return cs | 1<<c }

// List returns the controls in ascending order (allocates; for conversion).
func (cs Controls) List() []Control {
	var out []Control
	for c := Control(1); c < 8; c++ {
		if cs.Has(c) {
			out = append(out, c)
		}
	}
	return out
}

// Reason is one reason for a decision.
type Reason struct {
	Code     string
	Message  string
	PolicyID string
}

// PolicyResult is one policy's result for one request.
type PolicyResult struct {
	PolicyID    string
	DisplayName string
	// NotApplied says why the policy did not apply (NOT_APPLIED, REPORT_ONLY_NOT_APPLIED).
	NotApplied  string
	State       State
	Kind        ResultKind
	Satisfied   Controls
	Unsatisfied Controls

	idx       int32 // policy index in the snapshot
	ipUnknown bool  // blocked because its location condition met no client IP
}

// Cause is one step of a block's cause chain.
type Cause struct {
	Kind        CauseKind
	ID          string
	Description string
}

// DeviceInfo is the device compliance a decision used (for DeviceComplianceInfo).
type DeviceInfo struct {
	Known    bool
	State    ComplianceState
	Risk     RiskLevel
	Revision int64
	Age      time.Duration
	Stale    bool
}

// Result is the outcome of Evaluate. Reuse it across decisions (one per goroutine).
type Result struct {
	Decision        Decision
	Reasons         []Reason
	Policies        []PolicyResult
	Causes          []Cause
	Device          DeviceInfo
	SnapshotVersion int64

	groupBits       []uint64 // scratch: the user's transitive groups as a bitset
	dirBits         []uint64 // scratch: with token groups, the directory groups only (exclusions)
	allGroups       []int32  // scratch: with token groups, the directory and token groups
	candBits        []uint64 // scratch: the candidate positions of the application's policies
	granted         []int32  // scratch: indexes in Policies of the granting enabled policies
	grantedByDevice bool     // scratch: a granting enabled policy's COMPLIANT_DEVICE held
	devOutcome      uint8    // scratch: the device's COMPLIANT_DEVICE outcome (devOK...)
}

// Reset clears r, keeping its capacity.
func (r *Result) Reset() {
	r.Decision = DecisionUnspecified
	r.Reasons = r.Reasons[:0]
	r.Policies = r.Policies[:0]
	r.Causes = r.Causes[:0]
	r.Device = DeviceInfo{}
	r.SnapshotVersion = 0
	r.granted = r.granted[:0]
	r.grantedByDevice = false
	r.devOutcome = 0
}

// MainReason returns the first reason's code ("" when none).
func (r *Result) MainReason() string {
	if len(r.Reasons) == 0 {
		return ""
	}
	return r.Reasons[0].Code
}

// ErrInvalidPolicy is wrapped by the errors Compile, ValidatePolicy, WithPolicies and
// WithDrafts return for an invalid policy (see *PolicyError for the details).
var ErrInvalidPolicy = errors.New("policyengine: invalid policy")

// ErrInvalidDirectory is wrapped by Compile's errors for an invalid directory (empty or
// duplicate ids).
var ErrInvalidDirectory = errors.New("policyengine: invalid directory")

// PolicyError is an invalid policy: Field is a proto-style field path (e.g.
// "grant_controls", "conditions.locations.include_ip_ranges").
type PolicyError struct {
	PolicyID string
	Field    string
	Msg      string
}

func (e *PolicyError) Error() string {
	return fmt.Sprintf("policy %q: %s: %s", e.PolicyID, e.Field, e.Msg)
}

// Unwrap returns ErrInvalidPolicy.
func (e *PolicyError) Unwrap() error { return ErrInvalidPolicy }
