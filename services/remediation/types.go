// Package remediation is the automated investigation and remediation domain: investigations, actions, approvals, automation levels and agent dispatch.
package remediation

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/condaccess/condaccess/internal/audit"
)

// Sentinel errors; the gRPC layer maps them to status codes.
var (
	// ErrNotFound: no such investigation, action or device.
	ErrNotFound = errors.New("not found")
	// ErrFailedPrecondition: the object is not in a state that allows the operation.
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrPermissionDenied: the caller may not act on this object (another device's action).
	ErrPermissionDenied = errors.New("permission denied")
	// ErrInvalidArgument: a request that the proto rules cannot reject; see *InvalidError.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrAborted: a newer agent connection replaced this one.
	ErrAborted = errors.New("aborted")
)

// Violation is one bad request field.
type Violation struct{ Field, Description string }

// InvalidError lists the bad fields of a request; it matches ErrInvalidArgument.
type InvalidError struct{ Violations []Violation }

func (e *InvalidError) Error() string {
	parts := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		parts[i] = v.Field + ": " + v.Description
	}
	return "invalid argument: " + strings.Join(parts, "; ")
}

// Is makes errors.Is(err, ErrInvalidArgument) true.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalidArgument }

func invalid(field, desc string) error {
	return &InvalidError{Violations: []Violation{{Field: field, Description: desc}}}
}

func precondition(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrFailedPrecondition}, args...)...)
}

// Severity is an alert severity (numbers as in condaccess.common.v1.Severity).
type Severity int32

// Severities.
const (
	SeverityUnspecified   Severity = 0
	SeverityInformational Severity = 1
	SeverityLow           Severity = 2
	SeverityMedium        Severity = 3
	SeverityHigh          Severity = 4
)

// Level is an automation level (numbers as in the proto AutomationLevel).
type Level int32

// Automation levels.
const (
	LevelUnspecified Level = 0
	LevelFull        Level = 1
	LevelSemi        Level = 2
	LevelNone        Level = 3
)

// DefaultLevel applies to device groups without a setting (and to devices without
// groups, unknown devices, or when the compliance service cannot be reached): FULL,
// Defender's default for new tenants. The "*" group overrides it.
const DefaultLevel = LevelFull

// DefaultGroup is the pseudo group whose setting replaces DefaultLevel.
const DefaultGroup = "*"

// restrictiveness orders levels: NONE is the most restrictive.
func (l Level) restrictiveness() int {
	switch l {
	case LevelNone:
		return 2
	case LevelSemi:
		return 1
	default:
		return 0
	}
}

func (l Level) String() string {
	switch l {
	case LevelFull:
		return "FULL"
	case LevelSemi:
		return "SEMI"
	case LevelNone:
		return "NONE"
	}
	return "UNSPECIFIED"
}

// InvestigationState numbers match the proto InvestigationState.
type InvestigationState int32

// Investigation states.
const (
	StateUnspecified         InvestigationState = 0
	StateRunning             InvestigationState = 1
	StatePendingApproval     InvestigationState = 2
	StateRemediated          InvestigationState = 3
	StatePartiallyRemediated InvestigationState = 4
	StateFailed              InvestigationState = 5
	StateCancelled           InvestigationState = 6
	StateNoThreatsFound      InvestigationState = 7
)

// Open reports whether the investigation can still change (RUNNING or PENDING_APPROVAL).
func (s InvestigationState) Open() bool { return s == StateRunning || s == StatePendingApproval }

// Verdict numbers match the proto Verdict.
type Verdict int32

// Verdicts.
const (
	VerdictUnspecified Verdict = 0
	VerdictMalicious   Verdict = 1
	VerdictSuspicious  Verdict = 2
	VerdictClean       Verdict = 3
)

// ActionType numbers match the proto ActionType.
type ActionType int32

// Action types.
const (
	ActionUnspecified    ActionType = 0
	ActionQuarantineFile ActionType = 1
	ActionKillProcess    ActionType = 2
	ActionRunScan        ActionType = 3
	ActionRestoreFile    ActionType = 4
)

// ActionState numbers match the proto ActionState.
type ActionState int32

// Action states.
const (
	ActionStateUnspecified     ActionState = 0
	ActionStatePendingApproval ActionState = 1
	ActionStateQueued          ActionState = 2
	ActionStateSent            ActionState = 3
	ActionStateSucceeded       ActionState = 4
	ActionStateFailed          ActionState = 5
	ActionStateTimedOut        ActionState = 6
	ActionStateRejected        ActionState = 7
	ActionStateCancelled       ActionState = 8
	ActionStateUndone          ActionState = 9
)

// Final reports whether the action will not run (any more).
func (s ActionState) Final() bool {
	return s != ActionStatePendingApproval && s != ActionStateQueued && s != ActionStateSent
}

// succeeded counts a succeeded action and an undone one (it did succeed).
func (s ActionState) succeeded() bool {
	return s == ActionStateSucceeded || s == ActionStateUndone
}

// AgentHealth numbers match the proto AgentHealth.
type AgentHealth int32

// Agent health values.
const (
	AgentHealthUnspecified  AgentHealth = 0
	AgentHealthHealthy      AgentHealth = 1
	AgentHealthStale        AgentHealth = 2
	AgentHealthDisconnected AgentHealth = 3
)

// FileEvidence is a file.
type FileEvidence struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256,omitempty"`
	Size   int64  `json:"size,omitempty"`
}

// ProcessEvidence is a process.
type ProcessEvidence struct {
	PID         int64  `json:"pid"`
	Name        string `json:"name,omitempty"`
	CommandLine string `json:"command_line,omitempty"`
	ImageSHA256 string `json:"image_sha256,omitempty"`
}

// Evidence is a file or a process (or nothing).
type Evidence struct {
	File    *FileEvidence    `json:"file,omitempty"`
	Process *ProcessEvidence `json:"process,omitempty"`
}

// IsZero reports whether the evidence names nothing.
func (e Evidence) IsZero() bool { return e.File == nil && e.Process == nil }

// Key identifies the entity: the same file or process in two alerts has one key.
func (e Evidence) Key() string {
	switch {
	case e.File != nil:
		return "file:" + strings.ToLower(e.File.SHA256) + ":" + e.File.Path
	case e.Process != nil:
		return fmt.Sprintf("process:%d:%s", e.Process.PID, e.Process.Name)
	}
	return ""
}

// TraceContext is a W3C trace context.
type TraceContext struct {
	TraceParent string `json:"traceparent,omitempty"`
	TraceState  string `json:"tracestate,omitempty"`
}

// EvidenceVerdict is one piece of evidence with its verdict.
type EvidenceVerdict struct {
	Evidence Evidence `json:"evidence"`
	Verdict  Verdict  `json:"verdict"`
	AlertID  string   `json:"alert_id"`
	Reason   string   `json:"reason"`
}

// Approval is a SecOps decision (or the system's, when an approval expires).
type Approval struct {
	DecidedBy string    `json:"decided_by"`
	Time      time.Time `json:"time"`
	Comment   string    `json:"comment"`
	Approved  bool      `json:"approved"`
}

// Action is one remediation action.
type Action struct {
	ID                 string       `json:"id"`
	InvestigationID    string       `json:"investigation_id,omitempty"`
	DeviceID           string       `json:"device_id"`
	Type               ActionType   `json:"type"`
	State              ActionState  `json:"state"`
	Target             Evidence     `json:"target"`
	UndoOf             string       `json:"undo_of,omitempty"`
	UndoActionID       string       `json:"undo_action_id,omitempty"` // the RESTORE_FILE that undoes this quarantine
	QuarantineID       string       `json:"quarantine_id,omitempty"`
	Approval           *Approval    `json:"approval,omitempty"`
	Result             string       `json:"result,omitempty"`
	Findings           []Evidence   `json:"findings,omitempty"`
	CreateTime         time.Time    `json:"create_time"`
	UpdateTime         time.Time    `json:"update_time"`
	ApprovalExpireTime time.Time    `json:"approval_expire_time,omitzero"`
	Deadline           time.Time    `json:"deadline,omitzero"` // result deadline while SENT
	RequestedBy        string       `json:"requested_by"`
	Trace              TraceContext `json:"trace"`
	// ApprovalReason says why an action the automation proposed waits for approval.
	ApprovalReason string `json:"approval_reason,omitempty"`
	// AutoEligible: the target is the device's own evidence, a file named by SHA-256
	// under its agent's detection roots, so the automation may run it (FULL level,
	// malicious verdict) without approval.
	AutoEligible bool `json:"auto_eligible,omitempty"`
	// WaitsForRoots: AutoEligible but for the agent's detection roots, unknown when
	// the action was proposed; decided when the agent says hello.
	WaitsForRoots bool `json:"waits_for_roots,omitempty"`
}

// Due returns when the timer must look at the action: the approval expiry while
// PENDING_APPROVAL, the result deadline while SENT; zero otherwise.
func (a *Action) Due() time.Time {
	switch a.State {
	case ActionStatePendingApproval:
		return a.ApprovalExpireTime
	case ActionStateSent:
		return a.Deadline
	}
	return time.Time{}
}

// Investigation is an automated investigation of one device.
type Investigation struct {
	ID         string             `json:"id"`
	DeviceID   string             `json:"device_id"`
	State      InvestigationState `json:"state"`
	AlertIDs   []string           `json:"alert_ids"`
	Evidence   []EvidenceVerdict  `json:"evidence"`
	Level      Level              `json:"level"`
	StartedBy  string             `json:"started_by"`
	Reason     string             `json:"reason"`
	CreateTime time.Time          `json:"create_time"`
	UpdateTime time.Time          `json:"update_time"`
	EndTime    time.Time          `json:"end_time,omitzero"`
	Trace      TraceContext       `json:"trace"`
	// Actions are filled by reads; the store keeps actions apart.
	Actions []*Action `json:"-"`
}

// Alert is what the service needs of a risk alert.
type Alert struct {
	ID       string
	DeviceID string
	Severity Severity
	Title    string
	Evidence []Evidence
	Resolved bool
	// Reporter is how the risk service authenticated the alert's reporter.
	Reporter Reporter
}

// AutomationSetting is the automation level of one device group.
type AutomationSetting struct {
	Group      string
	Level      Level
	UpdateTime time.Time
	UpdatedBy  string
}

// Agent is an endpoint agent known to the service.
type Agent struct {
	DeviceID      string      `json:"device_id"`
	Version       string      `json:"version"`
	Hostname      string      `json:"hostname"`
	ConnectTime   time.Time   `json:"connect_time"`
	LastHeartbeat time.Time   `json:"last_heartbeat"`
	Health        AgentHealth `json:"-"`
	// DetectionRoots are the folders the agent reported watching in its last hello.
	DetectionRoots []string `json:"detection_roots,omitempty"`
	// Connected: connection ConnectionID was open when this record was written (at
	// connect, at each recorded heartbeat; false at its end).
	Connected bool `json:"connected,omitempty"`
	// ConnectionID identifies the connection (on any replica) the record is of.
	ConnectionID string `json:"connection_id,omitempty"`
}

// Resolution is an alert waiting to be resolved on the risk service because its
// investigation was remediated.
type Resolution struct {
	AlertID         string
	InvestigationID string
	Trace           TraceContext
	CreateTime      time.Time
}

// Event is one change published on the investigation event stream: exactly one of
// Investigation (without actions) and Action is set.
type Event struct {
	Investigation *Investigation
	Action        *Action
	Trace         TraceContext
	Time          time.Time
}

// InvestigationFilter filters ListInvestigations.
type InvestigationFilter struct {
	DeviceID string
	State    InvestigationState
}

// ActionFilter filters ListActions.
type ActionFilter struct {
	DeviceID        string
	InvestigationID string
	State           ActionState
}

// Store keeps the service's state and its event log. Every Update commits its state
// changes and the events it emits together.
type Store interface {
	// Update runs fn in one transaction; fn's error rolls back everything it did.
	Update(ctx context.Context, fn func(tx Tx) error) error
	// GetInvestigation returns one investigation with its actions; ErrNotFound.
	GetInvestigation(ctx context.Context, id string) (*Investigation, error)
	// OpenInvestigation returns the device's open investigation (without actions); ErrNotFound.
	OpenInvestigation(ctx context.Context, deviceID string) (*Investigation, error)
	// ListInvestigations lists investigations with their actions, newest first.
	ListInvestigations(ctx context.Context, f InvestigationFilter, pageSize int, pageToken string) ([]*Investigation, string, error)
	// GetAction returns one action; ErrNotFound.
	GetAction(ctx context.Context, id string) (*Action, error)
	// ListActions lists actions, newest first.
	ListActions(ctx context.Context, f ActionFilter, pageSize int, pageToken string) ([]*Action, string, error)
	// DeviceActions returns the device's actions in the given states, oldest first.
	DeviceActions(ctx context.Context, deviceID string, states ...ActionState) ([]*Action, error)
	// NextDue returns the earliest Action.Due among all actions (ok false when none).
	NextDue(ctx context.Context) (time.Time, bool, error)
	// AlertLinked returns the investigation an alert is linked to.
	AlertLinked(ctx context.Context, alertID string) (string, bool, error)
	// AutomationLevels returns every setting, including "*".
	AutomationLevels(ctx context.Context) ([]AutomationSetting, error)
	// Agent returns the agent of a device (ErrNotFound when it never connected).
	Agent(ctx context.Context, deviceID string) (*Agent, error)
	// ListAgents lists agents by device id.
	ListAgents(ctx context.Context, pageSize int, pageToken string) ([]*Agent, string, error)
	// PendingResolutions returns the alerts waiting to be resolved, oldest first.
	PendingResolutions(ctx context.Context) ([]Resolution, error)
	// Cursor returns the stored risk event cursor.
	Cursor(ctx context.Context) (int64, bool, error)
	// Revision returns the last event revision.
	Revision() int64
	// Watch delivers each event's revision and encoded payload after start, then
	// tails; see eventlog.Log.Watch for its errors.
	Watch(ctx context.Context, start int64, onEvent func(rev int64, payload []byte) error, onProgress func(rev int64) error) error
	// Close releases the store.
	Close() error
}

// Tx is a store transaction.
type Tx interface {
	Investigation(id string) (*Investigation, error)
	OpenInvestigation(deviceID string) (*Investigation, error)
	PutInvestigation(inv *Investigation) error
	Action(id string) (*Action, error)
	Actions(investigationID string) ([]*Action, error)
	PutAction(a *Action) error
	// DueActions returns the actions whose Due is at or before now.
	DueActions(now time.Time) ([]*Action, error)
	// LinkAlert links an alert to an investigation; false when it was already linked.
	LinkAlert(alertID, investigationID string) (bool, error)
	// AlertLinked returns the investigation an alert is linked to.
	AlertLinked(alertID string) (string, bool, error)
	// RelinkAlert links an already linked alert to another investigation.
	RelinkAlert(alertID, investigationID string) error
	PutAutomationLevel(s AutomationSetting) error
	PutAgent(a *Agent) error
	// Agent returns the agent of a device as stored; ErrNotFound.
	Agent(deviceID string) (*Agent, error)
	AddResolution(r Resolution) error
	DeleteResolution(alertID string) error
	SetCursor(rev int64) error
	// Emit appends an event to the log.
	Emit(ev Event) error
	// Audit appends the audit event of an admin change (actor from ctx) in this
	// transaction; an error must fail the transaction.
	Audit(ctx context.Context, c audit.Change) error
}

// Audited resource types (audit.Change.ResourceType).
const (
	AuditInvestigation   = "investigation"
	AuditAction          = "remediation_action"
	AuditAutomationLevel = "automation_level"
)
