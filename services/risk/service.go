package risk

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"github.com/condaccess/condaccess/internal/audit"
)

// Page size defaults and maxima (documented in risk.proto).
const (
	DefaultAlertPageSize   = 100
	MaxAlertPageSize       = 1000
	DefaultDevicePageSize  = 1000
	MaxDevicePageSize      = 10000
	DefaultHistoryPageSize = 100
	MaxHistoryPageSize     = 1000
)

// Config configures New.
type Config struct {
	Store Store
	// Encode encodes an event into the payload stored in the log (riskgrpc.EncodeEvent:
	// the marshalled condaccess.risk.v1.RiskEvent without its revision).
	Encode func(Event) ([]byte, error)
	// Now defaults to time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Service applies the risk rules over a Store.
type Service struct {
	store  Store
	encode func(Event) ([]byte, error)
	now    func() time.Time
	log    *slog.Logger
}

// New returns a Service.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Encode == nil {
		panic("risk: Config.Encode is required")
	}
	return &Service{store: cfg.Store, encode: cfg.Encode, now: cfg.Now, log: cfg.Logger}
}

var w3c = propagation.TraceContext{}

// traceCarrier receives the two W3C trace context headers (a map carrier cost a map
// per request).
type traceCarrier struct{ parent, state string }

func (c *traceCarrier) Get(key string) string {
	switch key {
	case "traceparent":
		return c.parent
	case "tracestate":
		return c.state
	}
	return ""
}

func (c *traceCarrier) Set(key, value string) {
	switch key {
	case "traceparent":
		c.parent = value
	case "tracestate":
		c.state = value
	}
}

func (c *traceCarrier) Keys() []string { return []string{"traceparent", "tracestate"} }

func traceContext(ctx context.Context) (parent, state string) {
	var c traceCarrier
	w3c.Inject(ctx, &c)
	return c.parent, c.state
}

// ReportResult is the outcome of reporting one alert.
type ReportResult struct {
	Alert   Alert
	Created bool
	Risk    DeviceRisk
}

// BatchResult is the outcome for one alert of ReportAlerts; Err wraps
// ErrAlertConflict when the alert was refused.
type BatchResult struct {
	AlertID string
	Created bool
	Err     error
}

// reported is an alert prepared for insertion outside the transaction.
type reported struct {
	alert   Alert
	content Alert // the reported content, as hashed (sameContent may rehash it)
	hash    string
	payload []byte // the alert_changed REPORTED event
	tp, ts  string
	now     time.Time
}

func (s *Service) prepare(ctx context.Context, in Alert, field string) (*reported, error) {
	if err := validateAlert(&in, field); err != nil {
		return nil, err
	}
	hash := contentHash(&in)
	now := s.now().UTC()
	a := Alert{
		ID: in.ID, DeviceID: in.DeviceID, Severity: in.Severity, Status: StatusNew,
		Category: in.Category, Title: in.Title, Description: in.Description,
		DetectionSource: in.DetectionSource, DetectTime: in.DetectTime.UTC(), Evidence: in.Evidence,
		AssignedTo: in.AssignedTo, CreateTime: now, UpdateTime: now, Version: 1, Reporter: in.Reporter,
	}
	if a.DetectTime.IsZero() {
		a.DetectTime = now
	}
	r := &reported{alert: a, content: in, hash: hash, now: now}
	r.tp, r.ts = traceContext(ctx)
	var err error
	if r.payload, err = s.encode(Event{Time: now, TraceParent: r.tp, TraceState: r.ts, Alert: &AlertChange{Type: ChangeReported, Alert: a}}); err != nil {
		return nil, fmt.Errorf("risk: encode event: %w", err)
	}
	return r, nil
}

// ReportAlert records an alert; idempotent on its id (the same content again returns
// the stored alert with Created false and publishes nothing; different content is
// ErrAlertConflict).
func (s *Service) ReportAlert(ctx context.Context, in Alert) (ReportResult, error) {
	r, err := s.prepare(ctx, in, "alert")
	if err != nil {
		return ReportResult{}, err
	}
	var res ReportResult
	var riskKnown bool
	err = s.store.Update(ctx, func(tx Tx) error {
		var err error
		res, riskKnown, err = s.insert(ctx, tx, r, true)
		return err
	})
	if err != nil {
		return ReportResult{}, err
	}
	if !riskKnown {
		// The level did not change: read the device's risk (with its active alerts)
		// after the commit rather than on the one writer.
		if res.Risk, err = s.store.DeviceRisk(ctx, res.Alert.DeviceID); err != nil {
			return ReportResult{}, err
		}
	}
	return res, nil
}

// ReportAlerts records a burst of alerts in one transaction (one durable commit). An
// invalid alert fails the whole call with a *ValidationError naming its index; a
// conflicting one (ErrAlertConflict) gets its own error result and the others are
// recorded; only a store failure fails the whole call otherwise.
func (s *Service) ReportAlerts(ctx context.Context, in []Alert) ([]BatchResult, error) {
	results := make([]BatchResult, len(in))
	prepared := make([]*reported, len(in))
	var invalid ValidationError
	for i := range in {
		results[i].AlertID = in[i].ID
		var err error
		prepared[i], err = s.prepare(ctx, in[i], fmt.Sprintf("alerts[%d]", i))
		var ve *ValidationError
		switch {
		case errors.As(err, &ve):
			invalid.Violations = append(invalid.Violations, ve.Violations...)
		case err != nil:
			return nil, err
		}
	}
	if len(invalid.Violations) > 0 {
		return nil, &invalid
	}
	err := s.store.Update(ctx, func(tx Tx) error {
		for i, r := range prepared {
			res, _, err := s.insert(ctx, tx, r, false)
			switch {
			case errors.Is(err, ErrAlertConflict):
				results[i].Err = err
			case err != nil:
				return err
			default:
				results[i].Created = res.Created
				results[i].Err = nil
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

// insert records one prepared alert. The common case (a new alert that does not
// change its device's level) costs four statements: hash lookup, event, insert,
// level lookup, plus the active alerts when withRisk. riskKnown reports whether
// res.Risk is set (a level change, or withRisk and a new alert); otherwise the
// caller reads it after the commit. withRisk reads the active alerts on the writer,
// whose page cache is warm, rather than after the commit on a read connection whose
// cache every commit invalidates (about 3x the CPU).
func (s *Service) insert(ctx context.Context, tx Tx, r *reported, withRisk bool) (res ReportResult, riskKnown bool, err error) {
	next, err := tx.NextRevision(ctx)
	if err != nil {
		return ReportResult{}, false, err
	}
	hash, inserted, err := tx.InsertNewAlert(ctx, r.alert, r.hash, next)
	if err != nil {
		return ReportResult{}, false, err
	}
	if !inserted {
		same, err := sameContent(hash, &r.content, r.hash)
		if err != nil {
			return ReportResult{}, false, err
		}
		if !same {
			return ReportResult{}, false, fmt.Errorf("%w: alert %q", ErrAlertConflict, r.alert.ID)
		}
		a, _, _, err := tx.Alert(ctx, r.alert.ID)
		if err != nil {
			return ReportResult{}, false, err
		}
		if a.Reporter.Kind != ReporterUnspecified && a.Reporter != r.alert.Reporter {
			// The same content from another reporter is not a repeat: the alert keeps
			// the reporter that reported it first.
			return ReportResult{}, false, fmt.Errorf("%w: alert %q was reported by another reporter", ErrAlertConflict, r.alert.ID)
		}
		return ReportResult{Alert: a, Created: false}, false, nil
	}
	rev, err := tx.Append(ctx, StoredEvent{Type: EventAlertChanged, Key: r.alert.ID, Payload: r.payload, TraceParent: r.tp, TraceState: r.ts, Time: r.now})
	if err != nil {
		return ReportResult{}, false, err
	}
	if rev != next {
		return ReportResult{}, false, fmt.Errorf("risk: internal error: event revision %d, alert inserted at %d", rev, next)
	}
	cur, known, err := tx.DeviceLevel(ctx, r.alert.DeviceID)
	if err != nil {
		return ReportResult{}, false, err
	}
	level := LevelNone
	if known {
		level = cur.Level
	}
	if r.alert.Active() && Level(r.alert.Severity) > level {
		level = Level(r.alert.Severity)
	}
	if known && level == cur.Level {
		if !withRisk {
			return ReportResult{Alert: r.alert, Created: true}, false, nil
		}
		if cur.Active, err = tx.ActiveAlerts(ctx, r.alert.DeviceID); err != nil {
			return ReportResult{}, false, err
		}
		return ReportResult{Alert: r.alert, Created: true, Risk: cur}, true, nil
	}
	dr, err := s.levelChanged(ctx, tx, r.alert.DeviceID, cur, known, level, r)
	if err != nil {
		return ReportResult{}, false, err
	}
	return ReportResult{Alert: r.alert, Created: true, Risk: dr}, true, nil
}

// levelChanged records a change of the device's level to level, caused by r.alert:
// a device_risk_changed event (with the active alerts) and a history version.
func (s *Service) levelChanged(ctx context.Context, tx Tx, deviceID string, cur DeviceRisk, known bool, level Level, r *reported) (DeviceRisk, error) {
	active, err := tx.ActiveAlerts(ctx, deviceID)
	if err != nil {
		return DeviceRisk{}, err
	}
	prev := LevelUnspecified
	if known {
		prev = cur.Level
	}
	next := DeviceRisk{DeviceID: deviceID, Level: level, Active: active, UpdateTime: r.now, PreviousLevel: prev, CauseAlertID: r.alert.ID}
	payload, err := s.encode(Event{Time: r.now, TraceParent: r.tp, TraceState: r.ts,
		Risk: &RiskChange{Risk: next, PreviousLevel: prev, CauseAlertID: r.alert.ID}})
	if err != nil {
		return DeviceRisk{}, fmt.Errorf("risk: encode event: %w", err)
	}
	if next.Revision, err = tx.Append(ctx, StoredEvent{Type: EventDeviceRiskChanged, Key: deviceID, Payload: payload, TraceParent: r.tp, TraceState: r.ts, Time: r.now}); err != nil {
		return DeviceRisk{}, err
	}
	if err := tx.PutDeviceRisk(ctx, next); err != nil {
		return DeviceRisk{}, err
	}
	return next, nil
}

func activeOrder(a, b ActiveAlert) int {
	if c := cmp.Compare(b.Severity, a.Severity); c != 0 {
		return c
	}
	if c := a.DetectTime.Compare(b.DetectTime); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

// SortActive sorts active alerts into DeviceRisk.Active order.
func SortActive(as []ActiveAlert) { slices.SortFunc(as, activeOrder) }

// InsertActive returns a copy of as (in DeviceRisk.Active order) with a in its place
// and without any other alert of a's id, in one allocation.
func InsertActive(as []ActiveAlert, a ActiveAlert) []ActiveAlert {
	out := make([]ActiveAlert, 0, len(as)+1)
	for _, x := range as {
		if x.ID != a.ID {
			out = append(out, x)
		}
	}
	i, _ := slices.BinarySearchFunc(out, a, activeOrder)
	return slices.Insert(out, i, a)
}

// Resolution is a ResolveAlert request.
type Resolution struct {
	AlertID         string
	Classification  Classification
	Determination   Determination
	Comment         string
	ResolvedBy      string
	InvestigationID string
}

// ResolveAlert resolves an alert and recomputes its device's risk in the same
// transaction. Errors: ErrAlertNotFound, ErrAlertResolved.
func (s *Service) ResolveAlert(ctx context.Context, res Resolution) (Alert, DeviceRisk, error) {
	if res.Classification == 0 {
		return Alert{}, DeviceRisk{}, &ValidationError{[]Violation{{"classification", "required"}}}
	}
	now := s.now().UTC()
	tp, ts := traceContext(ctx)
	var out Alert
	var dr DeviceRisk
	riskKnown := false
	err := s.store.Update(ctx, func(tx Tx) error {
		a, _, ok, err := tx.Alert(ctx, res.AlertID)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: %q", ErrAlertNotFound, res.AlertID)
		}
		before := a
		if a.Status == StatusResolved {
			return fmt.Errorf("%w: alert %q was resolved at %s by %s", ErrAlertResolved, a.ID, a.ResolveTime.Format(time.RFC3339), a.ResolvedBy)
		}
		a.Status = StatusResolved
		a.Classification = res.Classification
		a.Determination = res.Determination
		a.ResolutionNote = res.Comment
		a.ResolvedBy = res.ResolvedBy
		a.ResolveTime = now
		a.InvestigationID = res.InvestigationID
		a.UpdateTime = now
		a.Version++
		r := &reported{alert: a, tp: tp, ts: ts, now: now}
		rev, err := s.appendAlert(ctx, tx, r, ChangeResolved)
		if err != nil {
			return err
		}
		if err := tx.UpdateAlert(ctx, a, rev); err != nil {
			return err
		}
		if err := tx.Audit(ctx, audit.Change{ResourceType: AuditAlert, ResourceID: a.ID, Before: &before, After: &a, Etag: a.Etag()}); err != nil {
			return err
		}
		out = a
		if !a.Active() && a.Severity == SeverityInformational {
			return nil // never counted
		}
		cur, known, err := tx.DeviceLevel(ctx, a.DeviceID)
		if err != nil {
			return err
		}
		active, err := tx.ActiveAlerts(ctx, a.DeviceID)
		if err != nil {
			return err
		}
		level := LevelOf(active)
		if known && level == cur.Level {
			return nil
		}
		dr, err = s.levelChanged(ctx, tx, a.DeviceID, cur, known, level, r)
		riskKnown = true
		return err
	})
	if err != nil {
		return Alert{}, DeviceRisk{}, err
	}
	if !riskKnown {
		if dr, err = s.store.DeviceRisk(ctx, out.DeviceID); err != nil {
			return Alert{}, DeviceRisk{}, err
		}
	}
	return out, dr, nil
}

func (s *Service) appendAlert(ctx context.Context, tx Tx, r *reported, t ChangeType) (int64, error) {
	payload, err := s.encode(Event{Time: r.now, TraceParent: r.tp, TraceState: r.ts, Alert: &AlertChange{Type: t, Alert: r.alert}})
	if err != nil {
		return 0, fmt.Errorf("risk: encode event: %w", err)
	}
	return tx.Append(ctx, StoredEvent{Type: EventAlertChanged, Key: r.alert.ID, Payload: payload, TraceParent: r.tp, TraceState: r.ts, Time: r.now})
}

// AlertUpdate is an UpdateAlert request; nil fields are left unchanged.
type AlertUpdate struct {
	AlertID    string
	Status     *Status // StatusNew or StatusInProgress
	AssignedTo *string
	Etag       string // when set, must match
}

// UpdateAlert changes an alert's status or assignee. Errors: ErrAlertNotFound,
// ErrStaleEtag, ErrAlertResolved, *ValidationError.
func (s *Service) UpdateAlert(ctx context.Context, u AlertUpdate) (Alert, error) {
	if u.Status != nil && *u.Status != StatusNew && *u.Status != StatusInProgress {
		return Alert{}, &ValidationError{[]Violation{{"status", "must be ALERT_STATUS_NEW or ALERT_STATUS_IN_PROGRESS (use ResolveAlert to resolve)"}}}
	}
	return s.modify(ctx, u.AlertID, u.Etag, func(a *Alert) (bool, error) {
		if a.Status == StatusResolved {
			return false, fmt.Errorf("%w: alert %q", ErrAlertResolved, a.ID)
		}
		changed := false
		if u.Status != nil && a.Status != *u.Status {
			a.Status, changed = *u.Status, true
		}
		if u.AssignedTo != nil && a.AssignedTo != *u.AssignedTo {
			a.AssignedTo, changed = *u.AssignedTo, true
		}
		return changed, nil
	})
}

// AddComment appends a comment to an alert (resolved alerts included).
// Errors: ErrAlertNotFound, ErrTooManyComments.
func (s *Service) AddComment(ctx context.Context, alertID, author, text string) (Alert, error) {
	now := s.now().UTC()
	return s.modify(ctx, alertID, "", func(a *Alert) (bool, error) {
		if len(a.Comments) >= MaxCommentsPerAlert {
			return false, fmt.Errorf("%w (%d)", ErrTooManyComments, MaxCommentsPerAlert)
		}
		a.Comments = append(a.Comments, Comment{Author: author, Text: text, CreateTime: now})
		return true, nil
	})
}

// modify applies f to an alert; a change publishes alert_changed UPDATED. The
// device's risk is unaffected (status stays active, severity never changes).
func (s *Service) modify(ctx context.Context, id, etag string, f func(a *Alert) (bool, error)) (Alert, error) {
	now := s.now().UTC()
	tp, ts := traceContext(ctx)
	var out Alert
	err := s.store.Update(ctx, func(tx Tx) error {
		a, _, ok, err := tx.Alert(ctx, id)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: %q", ErrAlertNotFound, id)
		}
		if etag != "" && etag != a.Etag() {
			return fmt.Errorf("%w: alert %q has etag %q", ErrStaleEtag, id, a.Etag())
		}
		before := a
		before.Comments = slices.Clone(a.Comments)
		changed, err := f(&a)
		if err != nil {
			return err
		}
		out = a
		if !changed {
			return nil
		}
		a.UpdateTime = now
		a.Version++
		out = a
		rev, err := s.appendAlert(ctx, tx, &reported{alert: a, tp: tp, ts: ts, now: now}, ChangeUpdated)
		if err != nil {
			return err
		}
		if err := tx.UpdateAlert(ctx, a, rev); err != nil {
			return err
		}
		return tx.Audit(ctx, audit.Change{ResourceType: AuditAlert, ResourceID: a.ID, Before: &before, After: &a, Etag: a.Etag()})
	})
	if err != nil {
		return Alert{}, err
	}
	return out, nil
}

// GetAlert returns one alert. Errors: ErrAlertNotFound.
func (s *Service) GetAlert(ctx context.Context, id string) (Alert, error) {
	return s.store.Alert(ctx, id)
}

// ListAlerts lists alerts, newest detection first.
func (s *Service) ListAlerts(ctx context.Context, q AlertQuery) ([]Alert, string, error) {
	q.PageSize = pageSize(q.PageSize, DefaultAlertPageSize, MaxAlertPageSize)
	if !q.DetectedAfter.IsZero() && !q.DetectedBefore.IsZero() && !q.DetectedAfter.Before(q.DetectedBefore) {
		return nil, "", &ValidationError{[]Violation{{"detected_before", "must be after detected_after"}}}
	}
	return s.store.ListAlerts(ctx, q)
}

// GetDeviceRisk returns a device's current risk. Errors: ErrDeviceNotFound.
func (s *Service) GetDeviceRisk(ctx context.Context, deviceID string) (DeviceRisk, error) {
	return s.store.DeviceRisk(ctx, deviceID)
}

// ListDeviceRisks lists device risks as of one revision (returned).
func (s *Service) ListDeviceRisks(ctx context.Context, q DeviceRiskQuery) ([]DeviceRisk, string, int64, error) {
	q.PageSize = pageSize(q.PageSize, DefaultDevicePageSize, MaxDevicePageSize)
	return s.store.ListDeviceRisks(ctx, q)
}

// RiskHistory lists a device's level changes, newest first. Errors: ErrDeviceNotFound.
func (s *Service) RiskHistory(ctx context.Context, deviceID string, size int, token string) ([]DeviceRisk, string, error) {
	return s.store.RiskHistory(ctx, deviceID, pageSize(size, DefaultHistoryPageSize, MaxHistoryPageSize), token)
}

// Watch replays then tails the event log (see Store.Watch).
func (s *Service) Watch(ctx context.Context, start int64, onEvent func(StoredEvent) error, onProgress func(int64) error) error {
	return s.store.Watch(ctx, start, onEvent, onProgress)
}

func pageSize(n, def, maxN int) int {
	switch {
	case n <= 0:
		return def
	case n > maxN:
		return maxN
	}
	return n
}
