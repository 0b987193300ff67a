package compliance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/parallel"
	"github.com/condaccess/condaccess/internal/telemetry"
)

// RiskCursor is the name of the risk event consumer's cursor.
const RiskCursor = "risk"

// DefaultSweepBatch is the number of devices re-evaluated per transaction by a sweep.
const DefaultSweepBatch = 1000

// Config configures New.
type Config struct {
	Store Store
	// Encode turns an event into the payload stored in the event log (the gRPC layer
	// stores a condaccess.compliance.v1.ComplianceEvent).
	Encode func(Event) ([]byte, error)
	// Now defaults to time.Now.
	Now func() time.Time
	// SweepBatch defaults to DefaultSweepBatch.
	SweepBatch int
	Logger     *slog.Logger
}

// Service is the compliance service's logic. Its background work (sweeps after policy
// and settings changes, grace period and exclusion deadlines) runs in Run, which must be
// running for policy and settings changes to return (they wait for their sweep).
type Service struct {
	st     Store
	encode func(Event) ([]byte, error)
	now    func() time.Time
	batch  int
	log    *slog.Logger

	timerWake chan struct{}
	sweepWake chan struct{}

	idcfg IdentityConfig

	mu        sync.Mutex
	sweptGen  int64
	sweptCh   chan struct{} // closed and replaced when sweptGen advances
	sweepInit bool
	// observedNext is the earliest deadline Observe last read.
	observedNext time.Time
}

// New returns a Service.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SweepBatch <= 0 {
		cfg.SweepBatch = DefaultSweepBatch
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{
		st: cfg.Store, encode: cfg.Encode, now: cfg.Now, batch: cfg.SweepBatch, log: cfg.Logger,
		timerWake: make(chan struct{}, 1), sweepWake: make(chan struct{}, 1), sweptCh: make(chan struct{}),
	}
}

func (s *Service) clock() time.Time { return s.now().UTC().Round(0) }

func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// ---- devices ----

func validateDevice(d *Device) error {
	var vs []Violation
	if d.ID == "" {
		vs = append(vs, Violation{"device.device_id", "required"})
	}
	if !d.Platform.Valid() {
		vs = append(vs, Violation{"device.platform", "must be one of WINDOWS, MACOS, LINUX, IOS, ANDROID"})
	}
	if d.OSVersion != "" {
		if _, err := ParseVersion(d.OSVersion); err != nil {
			vs = append(vs, Violation{"device.os_version", err.Error()})
		}
	}
	for i, g := range d.Groups {
		if g == "" {
			vs = append(vs, Violation{fmt.Sprintf("device.groups[%d]", i), "must not be empty"})
		}
	}
	for i, u := range d.RegisteredUserIDs {
		if u == "" {
			vs = append(vs, Violation{fmt.Sprintf("device.registered_user_ids[%d]", i), "must not be empty"})
		}
	}
	if len(vs) > 0 {
		return &InvalidError{Violations: vs}
	}
	return nil
}

func cleanGroups(gs []string) []string {
	gs = slices.Clone(gs)
	slices.Sort(gs)
	return slices.Compact(gs)
}

// Audited resource types (audit.Change.ResourceType).
const (
	AuditDevice    = "device"
	AuditPolicy    = "compliance_policy"
	AuditSettings  = "compliance_settings"
	AuditExclusion = "compliance_exclusion"
	// AuditEnrollmentToken records that a token was created for a device (its device
	// and expiry; never the token or its hash).
	AuditEnrollmentToken = "enrollment_token"
	// AuditDeviceIdentity records a device identity's revocation.
	AuditDeviceIdentity = "device_identity"
)

// EnrollDevice adds a device and evaluates it at once (with the risk already received
// for it, if any).
func (s *Service) EnrollDevice(ctx context.Context, d Device) (*Device, error) {
	if err := validateDevice(&d); err != nil {
		return nil, err
	}
	now := s.clock()
	d.Groups = cleanGroups(d.Groups)
	d.RegisteredUserIDs = cleanGroups(d.RegisteredUserIDs)
	d.EnrollTime, d.UpdateTime, d.Version = now, now, 1
	d.Retired, d.RetireTime = false, time.Time{}
	err := s.update(ctx, func(tx Tx) error {
		if _, err := tx.Device(ctx, d.ID); err == nil {
			return fmt.Errorf("%w: %s", ErrDeviceExists, d.ID)
		} else if !errors.Is(err, ErrDeviceNotFound) {
			return err
		}
		if err := tx.PutDevice(ctx, &d); err != nil {
			return err
		}
		if err := tx.Audit(ctx, audit.Change{ResourceType: AuditDevice, ResourceID: d.ID, After: &d, Etag: d.Etag()}); err != nil {
			return err
		}
		if err := s.appendEvent(ctx, tx, Event{DeviceChanged: &d}, now); err != nil {
			return err
		}
		_, err := s.evalIDs(ctx, tx, []string{d.ID}, now, nil)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &d, nil
}

// GetDevice returns one device.
func (s *Service) GetDevice(ctx context.Context, id string) (*Device, error) {
	return s.st.GetDevice(ctx, id)
}

// ListDevices lists devices by id.
func (s *Service) ListDevices(ctx context.Context, f DeviceFilter) ([]*Device, error) {
	if f.Platform != PlatformUnspecified && !f.Platform.Valid() {
		return nil, invalid("platform", "unknown platform %d", f.Platform)
	}
	return s.st.ListDevices(ctx, f)
}

// Device fields UpdateDevice can change.
const (
	FieldDisplayName  = "display_name"
	FieldPlatform     = "platform"
	FieldOSVersion    = "os_version"
	FieldOwnerUserID  = "owner_user_id"
	FieldGroups       = "groups"
	FieldLastSeenTime = "last_seen_time"
	// FieldRegisteredUserIDs is the device's registered users (admin-managed).
	FieldRegisteredUserIDs = "registered_user_ids"
)

var deviceFields = []string{FieldDisplayName, FieldPlatform, FieldOSVersion, FieldOwnerUserID, FieldGroups, FieldLastSeenTime, FieldRegisteredUserIDs}

// SensorDeviceFields are the fields a sensor may change.
var SensorDeviceFields = []string{FieldLastSeenTime, FieldOSVersion}

// DeviceUpdate is an UpdateDevice request.
type DeviceUpdate struct {
	Device Device   // ID and the new values
	Paths  []string // empty or ["*"] = every mutable field
	Etag   string   // when set, must match
	// SensorOnly restricts the change to SensorDeviceFields (a caller whose only
	// relevant role is sensor).
	SensorOnly bool
}

func expandMask(paths, all []string) ([]string, error) {
	if len(paths) == 0 || (len(paths) == 1 && paths[0] == "*") {
		return all, nil
	}
	for _, p := range paths {
		if !slices.Contains(all, p) {
			return nil, invalid("update_mask", "unknown or immutable field %q (mutable: %v)", p, all)
		}
	}
	return paths, nil
}

// UpdateDevice changes a device's properties and re-evaluates it.
func (s *Service) UpdateDevice(ctx context.Context, u DeviceUpdate) (*Device, error) {
	paths, err := expandMask(u.Paths, deviceFields)
	if err != nil {
		return nil, err
	}
	if u.SensorOnly {
		for _, p := range paths {
			if !slices.Contains(SensorDeviceFields, p) {
				return nil, fmt.Errorf("%w: a sensor may change only last_seen_time and os_version, not %s", ErrPermissionDenied, p)
			}
		}
	}
	now := s.clock()
	var out *Device
	err = s.update(ctx, func(tx Tx) error {
		cur, err := tx.Device(ctx, u.Device.ID)
		if err != nil {
			return err
		}
		if u.Etag != "" && u.Etag != cur.Etag() {
			return fmt.Errorf("%w: device %s has etag %s, not %s", ErrEtagMismatch, cur.ID, cur.Etag(), u.Etag)
		}
		if cur.Retired {
			return fmt.Errorf("%w: %s", ErrDeviceRetired, cur.ID)
		}
		d := *cur
		for _, p := range paths {
			switch p {
			case FieldDisplayName:
				d.DisplayName = u.Device.DisplayName
			case FieldPlatform:
				d.Platform = u.Device.Platform
			case FieldOSVersion:
				d.OSVersion = u.Device.OSVersion
			case FieldOwnerUserID:
				d.OwnerUserID = u.Device.OwnerUserID
			case FieldGroups:
				d.Groups = cleanGroups(u.Device.Groups)
			case FieldLastSeenTime:
				d.LastSeenTime = u.Device.LastSeenTime
			case FieldRegisteredUserIDs:
				d.RegisteredUserIDs = cleanGroups(u.Device.RegisteredUserIDs)
			}
		}
		if err := validateDevice(&d); err != nil {
			return err
		}
		d.UpdateTime = now
		d.Version++
		if err := tx.PutDevice(ctx, &d); err != nil {
			return err
		}
		// A sensor's own last_seen/os_version report is telemetry, not an admin change.
		if !u.SensorOnly {
			if err := tx.Audit(ctx, audit.Change{ResourceType: AuditDevice, ResourceID: d.ID, Before: cur, After: &d, Etag: d.Etag()}); err != nil {
				return err
			}
		}
		if err := s.appendEvent(ctx, tx, Event{DeviceChanged: &d}, now); err != nil {
			return err
		}
		out = &d
		_, err = s.evalIDs(ctx, tx, []string{d.ID}, now, nil)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// RetireDevice marks a device retired; it becomes NOT_EVALUATED.
func (s *Service) RetireDevice(ctx context.Context, id string) (*Device, error) {
	now := s.clock()
	var out *Device
	err := s.update(ctx, func(tx Tx) error {
		cur, err := tx.Device(ctx, id)
		if err != nil {
			return err
		}
		if cur.Retired {
			return fmt.Errorf("%w: %s (since %s)", ErrDeviceRetired, id, cur.RetireTime.Format(time.RFC3339))
		}
		// A retired device is no longer evaluated: its exclusion ends with it.
		if x, err := tx.ActiveExclusion(ctx, id); err != nil {
			return err
		} else if x != nil {
			x.EndTime, x.EndedBy, x.Comment = now, SystemSubject, "device retired"
			if err := tx.PutExclusion(ctx, x); err != nil {
				return err
			}
		}
		d := *cur
		d.Retired, d.RetireTime, d.UpdateTime = true, now, now
		d.Version++
		if err := tx.PutDevice(ctx, &d); err != nil {
			return err
		}
		// A retired device's identity is revoked with it.
		if _, err := s.revoke(ctx, tx, id, "device retired", now); err != nil && !errors.Is(err, ErrIdentityRevoked) {
			return err
		}
		if err := tx.Audit(ctx, audit.Change{ResourceType: AuditDevice, ResourceID: d.ID, Before: cur, After: &d, Etag: d.Etag()}); err != nil {
			return err
		}
		if err := s.appendEvent(ctx, tx, Event{DeviceChanged: &d}, now); err != nil {
			return err
		}
		out = &d
		_, err = s.evalIDs(ctx, tx, []string{d.ID}, now, nil)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ---- policies ----

func validatePolicy(p *Policy) error {
	var vs []Violation
	add := func(f, d string) { vs = append(vs, Violation{"policy." + f, d}) }
	if p.ID == "" {
		add("policy_id", "required")
	}
	if p.DisplayName == "" {
		add("display_name", "required")
	}
	if p.MaxDeviceRisk != RiskUnspecified && !p.MaxDeviceRisk.Valid() {
		add("max_device_risk", fmt.Sprintf("unknown risk level %d", p.MaxDeviceRisk))
	}
	if p.MinOSVersion != "" {
		if _, err := ParseVersion(p.MinOSVersion); err != nil {
			add("min_os_version", err.Error())
		}
	}
	for i, pl := range p.Platforms {
		if !pl.Valid() {
			add(fmt.Sprintf("platforms[%d]", i), fmt.Sprintf("unknown platform %d", pl))
		}
	}
	for i, g := range p.Assignment.IncludeGroups {
		if g == "" {
			add(fmt.Sprintf("assignment.include_groups[%d]", i), "must not be empty")
		}
	}
	for i, g := range p.Assignment.ExcludeGroups {
		if g == "" {
			add(fmt.Sprintf("assignment.exclude_groups[%d]", i), "must not be empty")
		}
	}
	if p.Actions.Grace < 0 {
		add("actions.grace_period", "must not be negative")
	}
	seen := map[RiskLevel]bool{}
	for i, g := range p.Actions.RiskGrace {
		f := fmt.Sprintf("actions.risk_grace_periods[%d]", i)
		switch {
		case !g.Level.Valid():
			add(f+".risk_level", fmt.Sprintf("unknown risk level %d", g.Level))
		case seen[g.Level]:
			add(f+".risk_level", "risk level "+g.Level.String()+" appears twice")
		}
		seen[g.Level] = true
		if g.Grace < 0 {
			add(f+".grace_period", "must not be negative")
		}
	}
	if len(vs) > 0 {
		return &InvalidError{Violations: vs}
	}
	return nil
}

// CreatePolicy creates a policy and re-evaluates the devices; it returns once they are.
func (s *Service) CreatePolicy(ctx context.Context, p Policy) (*Policy, error) {
	if err := validatePolicy(&p); err != nil {
		return nil, err
	}
	now := s.clock()
	p.CreateTime, p.UpdateTime, p.Version = now, now, 1
	var gen int64
	err := s.update(ctx, func(tx Tx) error {
		if _, err := tx.Policy(ctx, p.ID); err == nil {
			return fmt.Errorf("%w: %s", ErrPolicyExists, p.ID)
		} else if !errors.Is(err, ErrPolicyNotFound) {
			return err
		}
		if err := tx.PutPolicy(ctx, &p); err != nil {
			return err
		}
		if err := tx.Audit(ctx, audit.Change{ResourceType: AuditPolicy, ResourceID: p.ID, After: &p, Etag: p.Etag()}); err != nil {
			return err
		}
		var err error
		gen, err = s.startSweep(ctx, tx, "policy "+p.ID+" created", affectedGroups(&p))
		return err
	})
	if err != nil {
		return nil, err
	}
	return &p, s.waitSweep(ctx, gen)
}

// GetPolicy returns one policy.
func (s *Service) GetPolicy(ctx context.Context, id string) (*Policy, error) {
	return s.st.GetPolicy(ctx, id)
}

// ListPolicies lists policies by id.
func (s *Service) ListPolicies(ctx context.Context, after string, limit int) ([]*Policy, error) {
	return s.st.ListPolicies(ctx, after, limit)
}

// Policy fields UpdatePolicy can change ("assignment" and "actions" stand for all
// their sub-fields).
var policyFields = []string{"display_name", "description", "max_device_risk", "min_os_version", "platforms",
	"assignment", "assignment.all_devices", "assignment.include_groups", "assignment.exclude_groups",
	"actions", "actions.grace_period", "actions.risk_grace_periods"}

// policyLeafFields is policyFields with the parent messages expanded.
var policyLeafFields = []string{"display_name", "description", "max_device_risk", "min_os_version", "platforms",
	"assignment.all_devices", "assignment.include_groups", "assignment.exclude_groups",
	"actions.grace_period", "actions.risk_grace_periods"}

// UpdatePolicy changes a policy and re-evaluates the devices; it returns once they are.
func (s *Service) UpdatePolicy(ctx context.Context, p Policy, paths []string, etag string) (*Policy, error) {
	paths, err := expandMask(paths, policyFields)
	if err != nil {
		return nil, err
	}
	var leaves []string
	for _, path := range paths {
		if path == "assignment" || path == "actions" {
			for _, l := range policyLeafFields {
				if strings.HasPrefix(l, path+".") {
					leaves = append(leaves, l)
				}
			}
			continue
		}
		leaves = append(leaves, path)
	}
	paths = leaves
	now := s.clock()
	var out *Policy
	var gen int64
	err = s.update(ctx, func(tx Tx) error {
		cur, err := tx.Policy(ctx, p.ID)
		if err != nil {
			return err
		}
		if etag != "" && etag != cur.Etag() {
			return fmt.Errorf("%w: policy %s has etag %s, not %s", ErrEtagMismatch, cur.ID, cur.Etag(), etag)
		}
		n := *cur
		for _, f := range paths {
			switch f {
			case "display_name":
				n.DisplayName = p.DisplayName
			case "description":
				n.Description = p.Description
			case "max_device_risk":
				n.MaxDeviceRisk = p.MaxDeviceRisk
			case "min_os_version":
				n.MinOSVersion = p.MinOSVersion
			case "platforms":
				n.Platforms = p.Platforms
			case "assignment.all_devices":
				n.Assignment.AllDevices = p.Assignment.AllDevices
			case "assignment.include_groups":
				n.Assignment.IncludeGroups = p.Assignment.IncludeGroups
			case "assignment.exclude_groups":
				n.Assignment.ExcludeGroups = p.Assignment.ExcludeGroups
			case "actions.grace_period":
				n.Actions.Grace = p.Actions.Grace
			case "actions.risk_grace_periods":
				n.Actions.RiskGrace = p.Actions.RiskGrace
			}
		}
		if err := validatePolicy(&n); err != nil {
			return err
		}
		n.UpdateTime = now
		n.Version++
		if err := tx.PutPolicy(ctx, &n); err != nil {
			return err
		}
		if err := tx.Audit(ctx, audit.Change{ResourceType: AuditPolicy, ResourceID: n.ID, Before: cur, After: &n, Etag: n.Etag()}); err != nil {
			return err
		}
		out = &n
		gen, err = s.startSweep(ctx, tx, "policy "+p.ID+" updated", affectedGroups(cur, &n))
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, s.waitSweep(ctx, gen)
}

// DeletePolicy deletes a policy and re-evaluates the devices; it returns once they are.
func (s *Service) DeletePolicy(ctx context.Context, id, etag string) error {
	var gen int64
	err := s.update(ctx, func(tx Tx) error {
		cur, err := tx.Policy(ctx, id)
		if err != nil {
			return err
		}
		if etag != "" && etag != cur.Etag() {
			return fmt.Errorf("%w: policy %s has etag %s, not %s", ErrEtagMismatch, cur.ID, cur.Etag(), etag)
		}
		if err := tx.DeletePolicy(ctx, id); err != nil {
			return err
		}
		if err := tx.Audit(ctx, audit.Change{ResourceType: AuditPolicy, ResourceID: id, Before: cur, Etag: cur.Etag()}); err != nil {
			return err
		}
		gen, err = s.startSweep(ctx, tx, "policy "+id+" deleted", affectedGroups(cur))
		return err
	})
	if err != nil {
		return err
	}
	return s.waitSweep(ctx, gen)
}

// ---- settings ----

// GetSettings returns the tenant settings.
func (s *Service) GetSettings(ctx context.Context) (Settings, error) { return s.st.GetSettings(ctx) }

// UpdateSettings replaces the tenant settings and re-evaluates every device; it returns
// once they are.
func (s *Service) UpdateSettings(ctx context.Context, n Settings, paths []string, etag string) (Settings, error) {
	paths, err := expandMask(paths, []string{"devices_without_policy_compliant"})
	if err != nil {
		return Settings{}, err
	}
	var out Settings
	var gen int64
	err = s.update(ctx, func(tx Tx) error {
		cur, err := tx.Settings(ctx)
		if err != nil {
			return err
		}
		if etag != "" && etag != cur.Etag() {
			return fmt.Errorf("%w: settings have etag %s, not %s", ErrEtagMismatch, cur.Etag(), etag)
		}
		out = cur
		if slices.Contains(paths, "devices_without_policy_compliant") {
			out.DevicesWithoutPolicyCompliant = n.DevicesWithoutPolicyCompliant
		}
		out.Version++
		if err := tx.PutSettings(ctx, out); err != nil {
			return err
		}
		if err := tx.Audit(ctx, audit.Change{ResourceType: AuditSettings, ResourceID: "tenant", Before: &cur, After: &out, Etag: out.Etag()}); err != nil {
			return err
		}
		gen, err = s.startSweep(ctx, tx, "tenant settings updated", nil)
		return err
	})
	if err != nil {
		return Settings{}, err
	}
	return out, s.waitSweep(ctx, gen)
}

// ---- compliance ----

// GetDeviceCompliance returns a device's compliance.
func (s *Service) GetDeviceCompliance(ctx context.Context, deviceID string) (*DeviceCompliance, error) {
	return s.st.GetCompliance(ctx, deviceID)
}

// ListDeviceCompliance lists device compliance and the revision the page reflects,
// each with its device's Enrollment (platform and users), so that a consumer
// resyncing from a listing learns who each device belongs to. The enrollments are
// read after the page: a device change in between is newer than the revision, and a
// consumer that watches from the revision applies it again (device_changed carries
// the whole device), ending at the same state.
func (s *Service) ListDeviceCompliance(ctx context.Context, f ComplianceFilter) ([]*DeviceCompliance, int64, error) {
	if f.State != StateUnspecified && !f.State.Valid() {
		return nil, 0, invalid("state", "unknown compliance state %d", f.State)
	}
	cs, rev, err := s.st.ListCompliance(ctx, f)
	if err != nil {
		return nil, 0, err
	}
	if err := s.fillEnrollments(ctx, cs, f.After); err != nil {
		return nil, 0, err
	}
	return cs, rev, nil
}

// enrollmentPage is how many devices fillEnrollments reads at a time.
var enrollmentPage = 1000

// fillEnrollments sets the Enrollment of each of cs (sorted by device id, all after
// after) from the devices in the same id range.
func (s *Service) fillEnrollments(ctx context.Context, cs []*DeviceCompliance, after string) error {
	if len(cs) == 0 {
		return nil
	}
	byID := make(map[string]*DeviceCompliance, len(cs))
	for _, c := range cs {
		byID[c.DeviceID] = c
	}
	last := cs[len(cs)-1].DeviceID
	page := enrollmentPage
	for {
		ds, err := s.st.ListDevices(ctx, DeviceFilter{After: after, Limit: page, IncludeRetired: true})
		if err != nil {
			return err
		}
		for _, d := range ds {
			if d.ID > last {
				return nil
			}
			if c := byID[d.ID]; c != nil {
				c.Enrollment = &Enrollment{Platform: d.Platform, OwnerUserID: d.OwnerUserID, RegisteredUserIDs: d.RegisteredUserIDs, Retired: d.Retired}
			}
		}
		if len(ds) < page {
			return nil
		}
		after = ds[len(ds)-1].ID
	}
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "ex-" + hex.EncodeToString(b[:])
}

// ExcludeDevice excludes a device from compliance evaluation; an exclusion already in
// force is ended (replaced) by the new one.
func (s *Service) ExcludeDevice(ctx context.Context, deviceID, reason string, expire time.Time, who string) (*Exclusion, *DeviceCompliance, error) {
	if reason == "" {
		return nil, nil, invalid("reason", "required: an exclusion is audited")
	}
	now := s.clock()
	if !expire.IsZero() && !expire.After(now) {
		return nil, nil, invalid("expire_time", "must be in the future")
	}
	if expire.Year() > 9999 {
		// Stored (and audited) as RFC 3339, which ends at year 9999.
		return nil, nil, invalid("expire_time", "must be before the year 10000")
	}
	x := &Exclusion{ID: newID(), DeviceID: deviceID, Reason: reason, CreatedBy: who, CreateTime: now}
	if !expire.IsZero() {
		x.ExpireTime = expire.UTC().Round(0)
	}
	var dc *DeviceCompliance
	err := s.update(ctx, func(tx Tx) error {
		d, err := tx.Device(ctx, deviceID)
		if err != nil {
			return err
		}
		if d.Retired {
			return fmt.Errorf("%w: %s cannot be excluded", ErrDeviceRetired, deviceID)
		}
		if old, err := tx.ActiveExclusion(ctx, deviceID); err != nil {
			return err
		} else if old != nil {
			before := *old
			old.EndTime, old.EndedBy, old.Comment = now, who, "replaced by exclusion "+x.ID
			if err := tx.PutExclusion(ctx, old); err != nil {
				return err
			}
			if err := tx.Audit(ctx, audit.Change{ResourceType: AuditExclusion, ResourceID: old.ID, Before: &before, After: old}); err != nil {
				return err
			}
		}
		if err := tx.PutExclusion(ctx, x); err != nil {
			return err
		}
		if err := tx.Audit(ctx, audit.Change{ResourceType: AuditExclusion, ResourceID: x.ID, After: x}); err != nil {
			return err
		}
		out, err := s.evalIDs(ctx, tx, []string{deviceID}, now, nil)
		if err == nil && len(out) == 1 {
			dc = out[0]
		}
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return x, dc, nil
}

// RemoveExclusion ends a device's exclusion and re-evaluates the device.
func (s *Service) RemoveExclusion(ctx context.Context, deviceID, comment, who string) (*Exclusion, *DeviceCompliance, error) {
	now := s.clock()
	var x *Exclusion
	var dc *DeviceCompliance
	err := s.update(ctx, func(tx Tx) error {
		if _, err := tx.Device(ctx, deviceID); err != nil {
			return err
		}
		cur, err := tx.ActiveExclusion(ctx, deviceID)
		if err != nil {
			return err
		}
		if cur == nil || !cur.ActiveAt(now) {
			return fmt.Errorf("%w: %s", ErrExclusionNotFound, deviceID)
		}
		before := *cur
		cur.EndTime, cur.EndedBy, cur.Comment = now, who, comment
		if err := tx.PutExclusion(ctx, cur); err != nil {
			return err
		}
		if err := tx.Audit(ctx, audit.Change{ResourceType: AuditExclusion, ResourceID: cur.ID, Before: &before, After: cur}); err != nil {
			return err
		}
		x = cur
		out, err := s.evalIDs(ctx, tx, []string{deviceID}, now, nil)
		if err == nil && len(out) == 1 {
			dc = out[0]
		}
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return x, dc, nil
}

// ListExclusions lists exclusions newest first.
func (s *Service) ListExclusions(ctx context.Context, f ExclusionFilter) ([]*Exclusion, error) {
	return s.st.ListExclusions(ctx, f)
}

// ---- risk ----

// RiskCursor returns the stored risk event cursor.
func (s *Service) RiskCursor(ctx context.Context) (int64, bool, error) {
	return s.st.Cursor(ctx, RiskCursor)
}

// ApplyRisk stores a device's new risk (enrolled or not), re-evaluates the device if it
// is enrolled, and stores rev as the risk cursor, in one transaction. Events at or
// before the stored cursor are ignored. The compliance event carries ctx's trace.
func (s *Service) ApplyRisk(ctx context.Context, rev int64, r DeviceRisk) error {
	now := s.clock()
	if r.Revision == 0 {
		r.Revision = rev
	}
	return s.update(ctx, func(tx Tx) error {
		cur, _, err := tx.Cursor(ctx, RiskCursor)
		if err != nil {
			return err
		}
		if rev <= cur {
			return nil
		}
		old, err := tx.Risk(ctx, r.DeviceID)
		if err != nil {
			return err
		}
		if old == nil || old.Revision <= r.Revision {
			// Keep the severities known for the alerts still active.
			if old != nil && len(old.AlertLevels) > 0 {
				r.AlertLevels = map[string]RiskLevel{}
				for _, id := range r.ActiveAlertIDs {
					if l, ok := old.AlertLevels[id]; ok {
						r.AlertLevels[id] = l
					}
				}
			}
			if err := tx.PutRisk(ctx, &r); err != nil {
				return err
			}
			if _, err := s.evalIDs(ctx, tx, []string{r.DeviceID}, now, nil); err != nil {
				return err
			}
		}
		return tx.SetCursor(ctx, RiskCursor, rev)
	})
}

// ApplyAlert keeps a device's list of active alerts (the cause chain of its risk
// level) current between level changes: the risk service publishes a level change only
// when the level changes, so a second alert at the same level, or the resolution of
// one of two, arrives only as an alert change. The device is re-evaluated (its
// explanation may change) and rev stored as the cursor, in one transaction. For a
// device without a stored risk only the alert's severity is kept (its level is not
// known yet: it counts as NONE): its first level change follows.
func (s *Service) ApplyAlert(ctx context.Context, rev int64, a AlertChange) error {
	now := s.clock()
	return s.update(ctx, func(tx Tx) error {
		cur, _, err := tx.Cursor(ctx, RiskCursor)
		if err != nil || rev <= cur {
			return err
		}
		r, err := tx.Risk(ctx, a.DeviceID)
		if err != nil {
			return err
		}
		if r == nil && a.Active {
			// Remember the alert's severity for the level change that follows it.
			r = &DeviceRisk{DeviceID: a.DeviceID}
		}
		if r != nil && r.Revision < rev {
			changed, evaluate := updateAlerts(r, a)
			if changed {
				r.Revision = rev
				if err := tx.PutRisk(ctx, r); err != nil {
					return err
				}
			}
			if evaluate {
				if _, err := s.evalIDs(ctx, tx, []string{a.DeviceID}, now, nil); err != nil {
					return err
				}
			}
		}
		return tx.SetCursor(ctx, RiskCursor, rev)
	})
}

// updateAlerts applies an alert change to r's active alerts. It reports whether r
// changed, and whether to re-evaluate now: not when the change moves the level (an
// alert above it, or the resolution of the last known alert at it), because the risk
// service then publishes the level change next, with the list; evaluating in between
// would publish a passing, misleading explanation.
func updateAlerts(r *DeviceRisk, a AlertChange) (changed, evaluate bool) {
	i := slices.Index(r.ActiveAlertIDs, a.AlertID)
	known, wasKnown := r.AlertLevels[a.AlertID]
	switch {
	case a.Active && i < 0:
		r.ActiveAlertIDs = append(slices.Clone(r.ActiveAlertIDs), a.AlertID)
		evaluate = a.Level <= r.Level
	case a.Active && (!wasKnown || known != a.Level):
		evaluate = true // the level is already current; the severity refines the cause
	case a.Active:
		return false, false
	case i >= 0:
		r.ActiveAlertIDs = slices.Delete(slices.Clone(r.ActiveAlertIDs), i, i+1)
		evaluate = true
		if wasKnown && known == r.Level {
			evaluate = false
			for _, id := range r.ActiveAlertIDs {
				if r.AlertLevels[id] == r.Level {
					evaluate = true // another alert holds the level
				}
			}
		}
	default:
		return false, false
	}
	if r.AlertLevels == nil {
		r.AlertLevels = map[string]RiskLevel{}
	}
	if a.Active {
		r.AlertLevels[a.AlertID] = a.Level
	} else {
		delete(r.AlertLevels, a.AlertID)
	}
	// Highest severity first (unknown severities last, in their order).
	slices.SortStableFunc(r.ActiveAlertIDs, func(x, y string) int { return int(r.AlertLevels[y]) - int(r.AlertLevels[x]) })
	return true, evaluate
}

// SkipRisk stores rev as the risk cursor for an event that changes nothing here.
func (s *Service) SkipRisk(ctx context.Context, rev int64) error {
	return s.update(ctx, func(tx Tx) error {
		cur, _, err := tx.Cursor(ctx, RiskCursor)
		if err != nil || rev <= cur {
			return err
		}
		return tx.SetCursor(ctx, RiskCursor, rev)
	})
}

// ResyncRisks replaces every stored risk with a full listing taken at revision rev,
// stores rev as the cursor and starts a sweep that re-evaluates every device, in one
// transaction (the sweep then runs in batches, resuming after a restart).
func (s *Service) ResyncRisks(ctx context.Context, risks []DeviceRisk, rev int64) error {
	now := s.clock()
	err := s.update(ctx, func(tx Tx) error {
		if err := tx.DeleteAllRisks(ctx); err != nil {
			return err
		}
		for i := range risks {
			r := risks[i]
			if r.Revision == 0 {
				r.Revision = rev
			}
			if r.UpdateTime.IsZero() {
				r.UpdateTime = now
			}
			if err := tx.PutRisk(ctx, &r); err != nil {
				return err
			}
		}
		if err := tx.SetCursor(ctx, RiskCursor, rev); err != nil {
			return err
		}
		_, err := s.startSweep(ctx, tx, fmt.Sprintf("risk resync at revision %d", rev), nil)
		return err
	})
	return err
}

// ---- evaluation ----

func (s *Service) update(ctx context.Context, fn func(tx Tx) error) error {
	wake := false
	err := s.st.Update(ctx, func(tx Tx) error {
		return fn(&wakeTx{Tx: tx, wake: &wake})
	})
	if err == nil && wake {
		poke(s.timerWake)
	}
	return err
}

// wakeTx notes whether a deadline was written, to wake the timer after the commit.
type wakeTx struct {
	Tx
	wake *bool
}

func (t *wakeTx) PutCompliances(ctx context.Context, cs []*DeviceCompliance) error {
	for _, c := range cs {
		if !c.NextEvaluateTime.IsZero() {
			*t.wake = true
		}
	}
	return t.Tx.PutCompliances(ctx, cs)
}

type traceCtx struct{ parent, state string }

func (s *Service) appendEvent(ctx context.Context, tx Tx, e Event, now time.Time) error {
	_, err := s.appendEventRev(ctx, tx, e, now, nil)
	return err
}

func (s *Service) appendEventRev(ctx context.Context, tx Tx, e Event, now time.Time, tc *traceCtx) (int64, error) {
	if tc == nil {
		t := telemetry.TraceContextFromContext(ctx)
		tc = &traceCtx{t.GetTraceparent(), t.GetTracestate()}
	}
	ev, err := s.encodeEvent(e, now, tc)
	if err != nil {
		return 0, err
	}
	return tx.AppendEvent(ctx, ev)
}

func (s *Service) encodeEvent(e Event, now time.Time, tc *traceCtx) (StoredEvent, error) {
	e.Time, e.TraceParent, e.TraceState = now, tc.parent, tc.state
	payload, err := s.encode(e)
	if err != nil {
		return StoredEvent{}, fmt.Errorf("encode event: %w", err)
	}
	return StoredEvent{
		Type: e.Type(), Key: e.Key(), Payload: payload,
		TraceParent: tc.parent, TraceState: tc.state, Time: now,
	}, nil
}

type evalEnv struct {
	policies []*Policy
	settings Settings
}

func (s *Service) loadEnv(ctx context.Context, tx Tx) (*evalEnv, error) {
	ps, err := tx.Policies(ctx)
	if err != nil {
		return nil, err
	}
	st, err := tx.Settings(ctx)
	if err != nil {
		return nil, err
	}
	return &evalEnv{policies: ps, settings: st}, nil
}

// evalIDs re-evaluates the given enrolled devices (unknown ids are skipped).
func (s *Service) evalIDs(ctx context.Context, tx Tx, ids []string, now time.Time, tc *traceCtx) ([]*DeviceCompliance, error) {
	rows, err := tx.EvalRows(ctx, EvalQuery{DeviceIDs: ids})
	if err != nil {
		return nil, err
	}
	env, err := s.loadEnv(ctx, tx)
	if err != nil {
		return nil, err
	}
	return s.evalRows(ctx, tx, rows, env, now, tc)
}

// evalRows evaluates rows, lapses expired exclusions, and stores each changed
// outcome with its event.
func (s *Service) evalRows(ctx context.Context, tx Tx, rows []EvalRow, env *evalEnv, now time.Time, tc *traceCtx) ([]*DeviceCompliance, error) {
	if tc == nil {
		t := telemetry.TraceContextFromContext(ctx)
		tc = &traceCtx{t.GetTraceparent(), t.GetTracestate()}
	}
	// Evaluate and encode in parallel (pure work), then write in order.
	type result struct {
		dc      DeviceCompliance
		lapsed  bool
		changed bool
		ev      StoredEvent
		err     error
	}
	res := make([]result, len(rows))
	parallel.For(len(rows), parallelMin, func(i int) {
		row, r := &rows[i], &res[i]
		ex := row.Exclusion
		if ex != nil && !ex.ActiveAt(now) {
			r.lapsed, ex = true, nil
		}
		r.dc = Evaluate(EvalInput{
			Device: row.Device, Policies: env.policies, Risk: row.Risk, Exclusion: ex,
			Settings: env.settings, Previous: row.Compliance, Now: now,
		})
		prev := row.Compliance
		if prev != nil && SameOutcome(prev, &r.dc) {
			return
		}
		prevState := StateNotEvaluated
		if prev != nil {
			prevState = prev.State
		}
		r.changed = true
		r.ev, r.err = s.encodeEvent(Event{ComplianceChanged: &ComplianceChange{Compliance: r.dc, PreviousState: prevState}}, now, tc)
	})
	out := make([]*DeviceCompliance, 0, len(rows))
	var changed []*DeviceCompliance
	var evs []StoredEvent
	for i := range rows {
		row, r := &rows[i], &res[i]
		if r.err != nil {
			return nil, r.err
		}
		if r.lapsed {
			x := row.Exclusion
			x.EndTime, x.EndedBy, x.Comment = x.ExpireTime, SystemSubject, "expired"
			if err := tx.PutExclusion(ctx, x); err != nil {
				return nil, err
			}
		}
		if !r.changed {
			out = append(out, row.Compliance)
			continue
		}
		evs = append(evs, r.ev)
		changed = append(changed, &r.dc)
		out = append(out, &r.dc)
	}
	if len(changed) > 0 {
		first, err := tx.AppendEvents(ctx, evs)
		if err != nil {
			return nil, err
		}
		for i, c := range changed {
			c.Revision = first + int64(i)
		}
		if err := tx.PutCompliances(ctx, changed); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// parallelMin is the smallest batch evaluated on more than one goroutine.
const parallelMin = 64

// ---- background work ----

// affectedGroups returns the groups whose devices the given versions of a policy can
// apply to, or nil when that is every device (a policy assigned to all devices).
func affectedGroups(ps ...*Policy) []string {
	groups := []string{}
	for _, p := range ps {
		if p.Assignment.AllDevices {
			return nil
		}
		groups = append(groups, p.Assignment.IncludeGroups...)
	}
	return cleanGroups(groups)
}

// startSweep starts (or widens and restarts) the sweep: over the devices in groups, or
// over every device when groups is nil.
func (s *Service) startSweep(ctx context.Context, tx Tx, cause string, groups []string) (int64, error) {
	st, err := tx.Sweep(ctx)
	if err != nil {
		return 0, err
	}
	if st.Active {
		// Widen the sweep in progress: its devices must still be re-evaluated.
		if groups != nil && st.Groups != nil {
			groups = cleanGroups(append(slices.Clone(groups), st.Groups...))
		} else {
			groups = nil
		}
		cause = st.Cause + "; " + cause
	}
	t := telemetry.TraceContextFromContext(ctx)
	st = SweepState{Active: true, Generation: st.Generation + 1, Groups: groups,
		TraceParent: t.GetTraceparent(), TraceState: t.GetTracestate(), Cause: cause}
	if err := tx.PutSweep(ctx, st); err != nil {
		return 0, err
	}
	poke(s.sweepWake)
	return st.Generation, nil
}

// waitSweep waits until sweep generation gen (or a later one) has completed.
func (s *Service) waitSweep(ctx context.Context, gen int64) error {
	poke(s.sweepWake)
	for {
		s.mu.Lock()
		done, ch := s.sweepInit && s.sweptGen >= gen, s.sweptCh
		s.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

func (s *Service) setSwept(gen int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.sweepInit || gen > s.sweptGen {
		s.sweepInit = true
		s.sweptGen = gen
		close(s.sweptCh)
		s.sweptCh = make(chan struct{})
	}
}

// SweepStep re-evaluates the next batch of an active sweep; it reports whether the
// sweep is complete (or none was active).
func (s *Service) SweepStep(ctx context.Context) (bool, error) {
	now := s.clock()
	var done bool
	var gen int64
	err := s.update(ctx, func(tx Tx) error {
		st, err := tx.Sweep(ctx)
		if err != nil {
			return err
		}
		gen = st.Generation
		if !st.Active {
			done = true
			return nil
		}
		rows, err := tx.EvalRows(ctx, EvalQuery{After: st.After, Groups: st.Groups, Limit: s.batch})
		if err != nil {
			return err
		}
		env, err := s.loadEnv(ctx, tx)
		if err != nil {
			return err
		}
		if _, err := s.evalRows(ctx, tx, rows, env, now, &traceCtx{st.TraceParent, st.TraceState}); err != nil {
			return err
		}
		if len(rows) < s.batch {
			st.Active, st.After, done = false, "", true
		} else {
			st.After = rows[len(rows)-1].Device.ID
		}
		return tx.PutSweep(ctx, st)
	})
	if err != nil {
		return false, err
	}
	if done {
		s.setSwept(gen)
	}
	return done, nil
}

// DueStep re-evaluates a batch of devices whose grace period or exclusion has ended;
// it reports how many it evaluated.
func (s *Service) DueStep(ctx context.Context) (int, error) {
	now := s.clock()
	var n int
	err := s.update(ctx, func(tx Tx) error {
		rows, err := tx.EvalRows(ctx, EvalQuery{DueAt: now, Limit: s.batch})
		if err != nil || len(rows) == 0 {
			return err
		}
		n = len(rows)
		env, err := s.loadEnv(ctx, tx)
		if err != nil {
			return err
		}
		_, err = s.evalRows(ctx, tx, rows, env, now, nil)
		return err
	})
	return n, err
}

// Observe brings this replica in step with what other replicas of a shared store
// (PostgreSQL) wrote: a stored sweep that has completed releases this replica's
// policy and settings changes waiting for it; an active one wakes this replica's
// sweep loop (when it runs: the leader's); a changed earliest deadline wakes its
// deadline timer. Call it periodically on every replica of a shared store; an
// embedded store needs none (one process writes it).
func (s *Service) Observe(ctx context.Context) error {
	st, err := s.st.Sweep(ctx)
	if err != nil {
		return err
	}
	if st.Active {
		poke(s.sweepWake)
	} else {
		s.setSwept(st.Generation)
	}
	next, ok, err := s.st.NextEvaluation(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	changed := ok && !next.Equal(s.observedNext)
	if ok {
		s.observedNext = next
	}
	s.mu.Unlock()
	if changed {
		poke(s.timerWake)
	}
	return nil
}

// Run runs the sweeps and the deadline timer until ctx ends; it returns nil then.
// The timer sleeps until the earliest stored deadline and is woken when a write
// stores a deadline; nothing polls.
func (s *Service) Run(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- s.runSweeps(ctx) }()
	go func() { errc <- s.runTimer(ctx) }()
	err := <-errc
	err2 := <-errc
	if ctx.Err() != nil {
		return nil
	}
	return errors.Join(err, err2)
}

func (s *Service) retryWait(ctx context.Context, what string, err error) bool {
	s.log.WarnContext(ctx, "compliance background work failed, retrying", "work", what, "err", err)
	t := time.NewTimer(500 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (s *Service) runSweeps(ctx context.Context) error {
	poke(s.sweepWake) // resume a sweep a restart interrupted
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.sweepWake:
		}
		for {
			done, err := s.SweepStep(ctx)
			if err != nil {
				if ctx.Err() != nil || !s.retryWait(ctx, "sweep", err) {
					return nil
				}
				continue
			}
			if done {
				break
			}
		}
	}
}

func (s *Service) runTimer(ctx context.Context) error {
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	for {
		for {
			n, err := s.DueStep(ctx)
			if err != nil {
				if ctx.Err() != nil || !s.retryWait(ctx, "deadlines", err) {
					return nil
				}
				continue
			}
			if n < s.batch {
				break
			}
		}
		next, ok, err := s.st.NextEvaluation(ctx)
		if err != nil {
			if ctx.Err() != nil || !s.retryWait(ctx, "deadlines", err) {
				return nil
			}
			continue
		}
		t.Stop()
		if ok {
			t.Reset(max(time.Until(next), 0) + time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.timerWake:
		case <-t.C:
		}
	}
}

// Watch delivers every event after start, then live events, with progress when idle.
func (s *Service) Watch(ctx context.Context, start int64, onEvent func(StoredEvent) error, onProgress func(rev int64) error) error {
	return s.st.Watch(ctx, start, onEvent, onProgress)
}

// Revision is the last committed event revision.
func (s *Service) Revision() int64 { return s.st.Revision() }
