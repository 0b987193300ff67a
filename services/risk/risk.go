// Package risk decides how risky each device is from its alerts: a device's risk level is the highest severity among its active (not RESOLVED) alerts, INFORMATIONAL alerts excluded, and RISK_LEVEL_NONE when none is active.
package risk

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/condaccess/condaccess/internal/audit"
)

// Sentinel errors; riskgrpc maps them to status codes.
var (
	// ErrAlertNotFound: no alert has that id (NOT_FOUND).
	ErrAlertNotFound = errors.New("alert not found")
	// ErrDeviceNotFound: no alert was ever reported for the device (NOT_FOUND).
	ErrDeviceNotFound = errors.New("device not found")
	// ErrAlertConflict: the alert id exists with different content (ALREADY_EXISTS).
	ErrAlertConflict = errors.New("alert already exists with different content")
	// ErrAlertResolved: the alert is already resolved (FAILED_PRECONDITION).
	ErrAlertResolved = errors.New("alert is resolved")
	// ErrStaleEtag: the etag does not match the alert's current etag (ABORTED).
	ErrStaleEtag = errors.New("etag does not match the alert's current etag")
	// ErrInvalidPageToken: the page token is malformed (INVALID_ARGUMENT).
	ErrInvalidPageToken = errors.New("invalid page token")
	// ErrTooManyComments: the alert has MaxCommentsPerAlert comments (RESOURCE_EXHAUSTED).
	ErrTooManyComments = errors.New("alert has the maximum number of comments")
)

// MaxCommentsPerAlert caps an alert's comments, so that an alert (and its event) stays
// within what every reader receives; it is the max_items of Alert.comments.
const MaxCommentsPerAlert = 1000

// Violation is one bad request field.
type Violation struct {
	Field       string // snake_case proto path, e.g. "alert.evidence[0].file.sha256"
	Description string
}

// ValidationError lists the bad fields of a request (INVALID_ARGUMENT).
type ValidationError struct {
	Violations []Violation
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		parts[i] = v.Field + ": " + v.Description
	}
	return "invalid argument: " + strings.Join(parts, "; ")
}

// Severity is an alert's severity (numbered as condaccess.common.v1.Severity).
type Severity int32

// Severities.
const (
	SeverityUnspecified   Severity = 0
	SeverityInformational Severity = 1
	SeverityLow           Severity = 2
	SeverityMedium        Severity = 3
	SeverityHigh          Severity = 4
)

// Level is a device's risk level (numbered as condaccess.common.v1.RiskLevel).
// LevelUnspecified is the "previous level" of a device seen for the first time.
type Level int32

// Levels.
const (
	LevelUnspecified Level = 0
	LevelNone        Level = 1
	LevelLow         Level = 2
	LevelMedium      Level = 3
	LevelHigh        Level = 4
)

// Status is an alert's lifecycle state (numbered as condaccess.risk.v1.AlertStatus).
type Status int32

// Statuses.
const (
	StatusUnspecified Status = 0
	StatusNew         Status = 1
	StatusInProgress  Status = 2
	StatusResolved    Status = 3
)

// Classification says whether an alert was a real threat (condaccess.risk.v1.AlertClassification).
type Classification int32

// Determination says what an alert turned out to be (condaccess.risk.v1.AlertDetermination).
type Determination int32

// ChangeType says what happened to an alert (condaccess.risk.v1.AlertChangeType).
type ChangeType int32

// Alert change types.
const (
	ChangeReported ChangeType = 1
	ChangeUpdated  ChangeType = 2
	ChangeResolved ChangeType = 3
)

// FileEvidence is a file seen by a sensor.
type FileEvidence struct {
	Path      string `json:"path,omitempty"`
	SHA256    string `json:"sha256,omitempty"`
	SizeBytes int64  `json:"size,omitempty"`
}

// ProcessEvidence is a process seen by a sensor.
type ProcessEvidence struct {
	PID         int64  `json:"pid,omitempty"`
	Name        string `json:"name,omitempty"`
	CommandLine string `json:"cmd,omitempty"`
	ImageSHA256 string `json:"image_sha256,omitempty"`
}

// Evidence is one file or process (exactly one is set).
type Evidence struct {
	File    *FileEvidence    `json:"file,omitempty"`
	Process *ProcessEvidence `json:"process,omitempty"`
}

// Comment is one comment on an alert.
type Comment struct {
	Author     string    `json:"author"`
	Text       string    `json:"text"`
	CreateTime time.Time `json:"time"`
}

// Alert is a threat detection on a device.
type Alert struct {
	ID              string         `json:"id"`
	DeviceID        string         `json:"device_id"`
	Severity        Severity       `json:"severity"`
	Status          Status         `json:"status"`
	Category        string         `json:"category,omitempty"`
	Title           string         `json:"title"`
	Description     string         `json:"description,omitempty"`
	DetectionSource string         `json:"detection_source,omitempty"`
	DetectTime      time.Time      `json:"detect_time"`
	Evidence        []Evidence     `json:"evidence,omitempty"`
	Comments        []Comment      `json:"comments,omitempty"`
	Classification  Classification `json:"classification,omitempty"`
	Determination   Determination  `json:"determination,omitempty"`
	ResolvedBy      string         `json:"resolved_by,omitempty"`
	ResolveTime     time.Time      `json:"resolve_time,omitzero"`
	ResolutionNote  string         `json:"resolution_comment,omitempty"`
	AssignedTo      string         `json:"assigned_to,omitempty"`
	CreateTime      time.Time      `json:"create_time"`
	UpdateTime      time.Time      `json:"update_time"`
	Version         int64          `json:"version"` // the etag is its decimal form
	InvestigationID string         `json:"investigation_id,omitempty"`
	// Reporter is how the caller that reported the alert was authenticated; set by
	// the gRPC layer from the verified identity, never from the request.
	Reporter Reporter `json:"reporter,omitzero"`
}

// ReporterKind is how an alert's reporter was authenticated (numbers as in the proto
// ReporterKind).
type ReporterKind int32

// Reporter kinds.
const (
	ReporterUnspecified ReporterKind = 0
	// ReporterDevice is the device's own identity.
	ReporterDevice ReporterKind = 1
	// ReporterSensor is a static sensor certificate that is not a device identity.
	ReporterSensor ReporterKind = 2
	// ReporterAdmin is an administrator.
	ReporterAdmin ReporterKind = 3
	// ReporterService is another condaccess service.
	ReporterService ReporterKind = 4
	// ReporterDevelopment is the unauthenticated caller of development mode.
	ReporterDevelopment ReporterKind = 5
)

// Reporter is the authenticated reporter of an alert: its kind and id (the device id
// for ReporterDevice, otherwise the certificate's subject).
type Reporter struct {
	Kind ReporterKind `json:"kind"`
	ID   string       `json:"id,omitempty"`
}

// Etag is the alert's AIP-154 etag.
func (a *Alert) Etag() string { return strconv.FormatInt(a.Version, 10) }

// Active reports whether the alert counts toward its device's risk.
func (a *Alert) Active() bool {
	return a.Status != StatusResolved && a.Severity > SeverityInformational
}

// ActiveAlert is one alert behind a device's risk level.
type ActiveAlert struct {
	ID         string    `json:"id"`
	Severity   Severity  `json:"sev"`
	DetectTime time.Time `json:"t"`
}

// DeviceRisk is a device's risk: its level (versioned: one version per level change)
// and the active alerts behind it.
type DeviceRisk struct {
	DeviceID string
	Level    Level
	// Active are the active alerts, highest severity first, then oldest detection, then id.
	Active []ActiveAlert
	// UpdateTime is when the level last changed.
	UpdateTime time.Time
	// Revision is the revision of the device_risk_changed event of the last level change.
	Revision int64
	// PreviousLevel and CauseAlertID describe the last level change.
	PreviousLevel Level
	CauseAlertID  string
}

// ActiveIDs returns the ids of the active alerts, in order.
func (r *DeviceRisk) ActiveIDs() []string {
	ids := make([]string, len(r.Active))
	for i, a := range r.Active {
		ids[i] = a.ID
	}
	return ids
}

// LevelOf applies the device risk rule to a set of alerts: the highest severity among
// the active (not resolved) ones, informational excluded; LevelNone when none is active.
func LevelOf(active []ActiveAlert) Level {
	l := LevelNone
	for _, a := range active {
		if a.Severity > SeverityInformational && Level(a.Severity) > l {
			l = Level(a.Severity)
		}
	}
	return l
}

// AlertChange is the payload of an alert_changed event.
type AlertChange struct {
	Type  ChangeType
	Alert Alert
}

// RiskChange is the payload of a device_risk_changed event.
type RiskChange struct {
	Risk          DeviceRisk
	PreviousLevel Level
	CauseAlertID  string
}

// Event is a change to publish; exactly one of Alert and Risk is set.
type Event struct {
	Time                    time.Time
	TraceParent, TraceState string
	Alert                   *AlertChange
	Risk                    *RiskChange
}

// Event types of the stored log.
const (
	EventAlertChanged      = "alert_changed"
	EventDeviceRiskChanged = "device_risk_changed"
)

// StoredEvent is an event as the log keeps it: Payload is the encoded Event (see
// Config.Encode) without its revision.
type StoredEvent struct {
	Revision                int64
	Type, Key               string
	Payload                 []byte
	TraceParent, TraceState string
	Time                    time.Time
}

// AlertQuery selects alerts for ListAlerts (newest detection first).
type AlertQuery struct {
	DeviceID       string
	Status         Status    // 0: any
	MinSeverity    Severity  // 0: any
	DetectedAfter  time.Time // inclusive; zero: unbounded
	DetectedBefore time.Time // exclusive; zero: unbounded
	PageSize       int
	PageToken      string
}

// DeviceRiskQuery selects device risks for ListDeviceRisks (by device id).
type DeviceRiskQuery struct {
	MinLevel  Level
	PageSize  int
	PageToken string
}

// Store keeps alerts, device risk versions and the event log. Every implementation
// passes riskstore/storetest.
type Store interface {
	// Update runs fn in one transaction: every change fn makes and every event it
	// appends commit together or not at all; events reach watchers after the commit.
	// fn may run on another goroutine and must not call Update.
	Update(ctx context.Context, fn func(tx Tx) error) error
	// Alert returns one alert, or ErrAlertNotFound.
	Alert(ctx context.Context, id string) (Alert, error)
	// ListAlerts returns a page of alerts and the next page token ("" on the last
	// page), or ErrInvalidPageToken.
	ListAlerts(ctx context.Context, q AlertQuery) ([]Alert, string, error)
	// DeviceRisk returns the device's current risk (level and active alerts read in one
	// snapshot), or ErrDeviceNotFound.
	DeviceRisk(ctx context.Context, deviceID string) (DeviceRisk, error)
	// ListDeviceRisks returns a page of the devices' risks (levels and active alerts)
	// as of one revision, that revision, and the next page token: every page of one
	// listing reflects the revision of the first page.
	ListDeviceRisks(ctx context.Context, q DeviceRiskQuery) ([]DeviceRisk, string, int64, error)
	// RiskHistory returns a page of the device's level changes, newest first, or
	// ErrDeviceNotFound.
	RiskHistory(ctx context.Context, deviceID string, pageSize int, pageToken string) ([]DeviceRisk, string, error)
	// Watch delivers every event after start, in revision order, then live events;
	// onProgress(rev) when idle. Errors are those of internal/eventlog Watch.
	Watch(ctx context.Context, start int64, onEvent func(StoredEvent) error, onProgress func(rev int64) error) error
	// Revision is the last committed revision.
	Revision() int64
}

// Tx is one Update transaction.
type Tx interface {
	// Alert returns the alert and the hash of its reported content; ok is false when
	// no alert has that id.
	Alert(ctx context.Context, id string) (a Alert, contentHash string, ok bool, err error)
	// AlertHash returns the hash of the alert's reported content; ok is false when no
	// alert has that id.
	AlertHash(ctx context.Context, id string) (contentHash string, ok bool, err error)
	// InsertAlert inserts a new alert reported by the event at revision rev.
	InsertAlert(ctx context.Context, a Alert, contentHash string, rev int64) error
	// InsertNewAlert is InsertAlert unless an alert with a.ID exists: then it changes
	// nothing and returns that alert's content hash with inserted false (one
	// statement for a new alert, instead of AlertHash then InsertAlert).
	InsertNewAlert(ctx context.Context, a Alert, contentHash string, rev int64) (existingHash string, inserted bool, err error)
	// NextRevision returns the revision the next Append in this transaction returns.
	NextRevision(ctx context.Context) (int64, error)
	// UpdateAlert replaces an existing alert, changed by the event at revision rev; an
	// alert whose status becomes RESOLVED stops being active at rev.
	UpdateAlert(ctx context.Context, a Alert, rev int64) error
	// ActiveAlerts lists the device's active alerts in DeviceRisk.Active order. The
	// slice may be shared (a store may cache it): the caller must not modify it.
	ActiveAlerts(ctx context.Context, deviceID string) ([]ActiveAlert, error)
	// DeviceLevel returns the device's latest level change (Active is not set); ok is
	// false for a device never seen.
	DeviceLevel(ctx context.Context, deviceID string) (r DeviceRisk, ok bool, err error)
	// PutDeviceRisk records a level change (r.Revision is its event's revision).
	PutDeviceRisk(ctx context.Context, r DeviceRisk) error
	// Append appends an event and returns its revision.
	Append(ctx context.Context, e StoredEvent) (int64, error)
	// Audit appends the audit event of an admin change (actor from ctx) in this
	// transaction; an error must fail the transaction.
	Audit(ctx context.Context, c audit.Change) error
}

// AuditAlert is the audited resource type of alert changes (audit.Change.ResourceType).
const AuditAlert = "alert"
