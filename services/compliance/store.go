package compliance

import (
	"context"
	"time"

	"github.com/condaccess/condaccess/internal/audit"
)

// Store keeps the compliance service's state and its event log. Reads outside Update
// see every committed Update.
type Store interface {
	// Update runs fn in one transaction: everything fn writes (state, events, cursors)
	// commits together or not at all. fn must not call Update.
	Update(ctx context.Context, fn func(tx Tx) error) error

	// GetDevice returns a device or ErrDeviceNotFound.
	GetDevice(ctx context.Context, id string) (*Device, error)
	// ListDevices returns devices by id after f.After, at most f.Limit.
	ListDevices(ctx context.Context, f DeviceFilter) ([]*Device, error)
	// GetPolicy returns a policy or ErrPolicyNotFound.
	GetPolicy(ctx context.Context, id string) (*Policy, error)
	// ListPolicies returns policies by id after after, at most limit.
	ListPolicies(ctx context.Context, after string, limit int) ([]*Policy, error)
	// GetCompliance returns a device's stored compliance or ErrDeviceNotFound.
	GetCompliance(ctx context.Context, deviceID string) (*DeviceCompliance, error)
	// ListCompliance returns device compliance by device id after f.After, at most
	// f.Limit, and the event revision the page reflects (read in the same snapshot).
	ListCompliance(ctx context.Context, f ComplianceFilter) ([]*DeviceCompliance, int64, error)
	// ListExclusions returns exclusions newest first, after the f.After position.
	ListExclusions(ctx context.Context, f ExclusionFilter) ([]*Exclusion, error)
	// GetSettings returns the tenant settings (defaults when never written).
	GetSettings(ctx context.Context) (Settings, error)
	// GetRisk returns a device's stored risk, nil when none was received.
	GetRisk(ctx context.Context, deviceID string) (*DeviceRisk, error)
	// Cursor returns a consumer's stored cursor.
	Cursor(ctx context.Context, name string) (rev int64, ok bool, err error)
	// Sweep returns the re-evaluation sweep state.
	Sweep(ctx context.Context) (SweepState, error)
	// NextEvaluation returns the earliest NextEvaluateTime of any device.
	NextEvaluation(ctx context.Context) (time.Time, bool, error)

	// ListDeviceIdentities returns device identities by device id after after, at
	// most limit.
	ListDeviceIdentities(ctx context.Context, after string, limit int) ([]*DeviceIdentity, error)

	// Revision is the last committed event revision.
	Revision() int64
	// Watch delivers every event after start, then live events (see eventlog.Log.Watch).
	Watch(ctx context.Context, start int64, onEvent func(StoredEvent) error, onProgress func(rev int64) error) error
	// Close releases the store.
	Close() error
}

// Tx is one Store transaction.
type Tx interface {
	// Device returns a device or ErrDeviceNotFound.
	Device(ctx context.Context, id string) (*Device, error)
	// PutDevice inserts or replaces a device.
	PutDevice(ctx context.Context, d *Device) error
	// Policy returns a policy or ErrPolicyNotFound.
	Policy(ctx context.Context, id string) (*Policy, error)
	// Policies returns every policy by id.
	Policies(ctx context.Context) ([]*Policy, error)
	// PutPolicy inserts or replaces a policy.
	PutPolicy(ctx context.Context, p *Policy) error
	// DeletePolicy deletes a policy (no error when absent).
	DeletePolicy(ctx context.Context, id string) error
	// Settings returns the tenant settings.
	Settings(ctx context.Context) (Settings, error)
	// PutSettings replaces the tenant settings.
	PutSettings(ctx context.Context, s Settings) error
	// Risk returns a device's stored risk, nil when none.
	Risk(ctx context.Context, deviceID string) (*DeviceRisk, error)
	// PutRisk inserts or replaces a device's risk (enrolled or not).
	PutRisk(ctx context.Context, r *DeviceRisk) error
	// DeleteAllRisks removes every stored risk (before a resync writes them again).
	DeleteAllRisks(ctx context.Context) error
	// EvalRows loads what evaluating the selected enrolled devices needs, by device id.
	EvalRows(ctx context.Context, q EvalQuery) ([]EvalRow, error)
	// PutCompliances inserts or replaces devices' compliance.
	PutCompliances(ctx context.Context, cs []*DeviceCompliance) error
	// ActiveExclusion returns the device's exclusion that has not ended (it may have
	// expired), nil when none.
	ActiveExclusion(ctx context.Context, deviceID string) (*Exclusion, error)
	// PutExclusion inserts or replaces an exclusion by id.
	PutExclusion(ctx context.Context, e *Exclusion) error
	// Cursor returns a consumer's cursor; SetCursor stores it.
	Cursor(ctx context.Context, name string) (int64, bool, error)
	SetCursor(ctx context.Context, name string, rev int64) error
	// Sweep returns the re-evaluation sweep state; PutSweep stores it.
	Sweep(ctx context.Context) (SweepState, error)
	PutSweep(ctx context.Context, s SweepState) error
	// DeviceIdentity returns a device's identity, nil when it never had one.
	DeviceIdentity(ctx context.Context, deviceID string) (*DeviceIdentity, error)
	// PutDeviceIdentity inserts or replaces a device's identity.
	PutDeviceIdentity(ctx context.Context, id *DeviceIdentity) error
	// EnrollmentToken returns the token with this hash, nil when none.
	EnrollmentToken(ctx context.Context, hash string) (*EnrollmentToken, error)
	// PutEnrollmentToken stores a token; DeleteEnrollmentToken removes it (used).
	PutEnrollmentToken(ctx context.Context, t *EnrollmentToken) error
	DeleteEnrollmentToken(ctx context.Context, hash string) error
	// AppendEvent appends an event to the log and returns its revision; watchers see
	// it after the commit.
	AppendEvent(ctx context.Context, e StoredEvent) (int64, error)
	// AppendEvents appends events with consecutive revisions and returns the first.
	AppendEvents(ctx context.Context, es []StoredEvent) (int64, error)
	// Audit appends the audit event of an admin change (actor from ctx) in this
	// transaction; an error must fail the transaction.
	Audit(ctx context.Context, c audit.Change) error
}

// DeviceFilter selects devices for ListDevices.
type DeviceFilter struct {
	After          string
	Limit          int
	Platform       Platform // unspecified = any
	Group          string
	OwnerUserID    string
	IncludeRetired bool
}

// ComplianceFilter selects device compliance for ListCompliance.
type ComplianceFilter struct {
	After string
	Limit int
	State State // unspecified = any
}

// ExclusionFilter selects exclusions for ListExclusions. The position is the
// (CreateTime, ID) of the last exclusion of the previous page, newest first.
type ExclusionFilter struct {
	AfterTime  time.Time
	AfterID    string
	Limit      int
	DeviceID   string
	ActiveOnly bool // not ended (expired ones that have not been lapsed yet included)
}

// EvalQuery selects enrolled devices to evaluate: by ids, or by id after After (in
// any of Groups when Groups is not nil), or those whose NextEvaluateTime is at or
// before DueAt; at most Limit (0 = no limit).
type EvalQuery struct {
	DeviceIDs []string
	After     string
	Groups    []string
	DueAt     time.Time
	Limit     int
}

// EvalRow is one enrolled device with what its evaluation reads.
type EvalRow struct {
	Device     *Device
	Risk       *DeviceRisk       // nil when the risk service never reported the device
	Compliance *DeviceCompliance // nil before the first evaluation
	Exclusion  *Exclusion        // the exclusion that has not ended, if any
}

// SweepState is a durable re-evaluation of every device (or of the devices in Groups
// when Groups is not nil), run in batches by id. Starting one bumps Generation and
// restarts from the first device.
type SweepState struct {
	Active                  bool
	After                   string
	Groups                  []string
	Generation              int64
	TraceParent, TraceState string
	Cause                   string
}

// StoredEvent is an encoded event in the log.
type StoredEvent struct {
	Revision                int64
	Type, Key               string
	Payload                 []byte
	TraceParent, TraceState string
	Time                    time.Time
}
