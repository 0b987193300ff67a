package remediation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/condaccess/condaccess/internal/audit"
)

// Who acts when no person does.
const (
	// Automation is the requested_by / started_by / resolved_by of automatic work.
	Automation = "automation"
	// System decides expired approvals.
	System = "system"
)

// Defaults of Config.
const (
	DefaultApprovalExpiry    = 7 * 24 * time.Hour
	DefaultActionTimeout     = 10 * time.Minute
	DefaultHeartbeatInterval = 10 * time.Second
)

// RiskClient is what the service needs of the risk service.
type RiskClient interface {
	// GetAlert returns an alert; ErrNotFound when unknown.
	GetAlert(ctx context.Context, alertID string) (*Alert, error)
	// ResolveAlert resolves an alert as a true positive remediated by investigationID,
	// with resolved_by "automation". It returns nil when the alert is resolved, also
	// when it already was; ErrNotFound when the alert is unknown; any other error is
	// transient.
	ResolveAlert(ctx context.Context, alertID, investigationID string) error
}

// DeviceDirectory is what the service needs of the compliance service's inventory.
type DeviceDirectory interface {
	// DeviceGroups returns the device's groups; ErrNotFound when the device is unknown.
	DeviceGroups(ctx context.Context, deviceID string) ([]string, error)
}

// Tracing starts the service's spans. Start returns a context with a new span that
// is a child of parent's trace context (when valid) and linked to links; end ends it.
type Tracing interface {
	Start(ctx context.Context, name string, parent TraceContext, links ...TraceContext) (context.Context, func(err error))
	// Current returns the trace context of the span in ctx.
	Current(ctx context.Context) TraceContext
}

type noTracing struct{}

func (noTracing) Start(ctx context.Context, _ string, _ TraceContext, _ ...TraceContext) (context.Context, func(error)) {
	return ctx, func(error) {}
}
func (noTracing) Current(context.Context) TraceContext { return TraceContext{} }

// Config configures New.
type Config struct {
	Store   Store
	Risk    RiskClient
	Devices DeviceDirectory // nil: every device gets the default level
	Tracing Tracing         // nil: no spans
	// MinSeverity opens an investigation (default HIGH); evidence of alerts at or
	// above it is MALICIOUS, below it SUSPICIOUS.
	MinSeverity       Severity
	ApprovalExpiry    time.Duration // default 7 days
	ActionTimeout     time.Duration // result deadline after an action is sent; default 10m
	HeartbeatInterval time.Duration // default 10s; an agent is stale after 3 missed heartbeats
	// ResolveRetryMin and ResolveRetryMax bound the backoff of alert resolution
	// retries (default 500ms and 1m).
	ResolveRetryMin, ResolveRetryMax time.Duration
	// Replicated: several replicas share the store (PostgreSQL). Agents' connection
	// state and heartbeats (at most one write per agent per HeartbeatInterval) are
	// then recorded in it, so that every replica lists an agent connected to another
	// one with its health.
	Replicated bool
	Now        func() time.Time
	Logger     *slog.Logger
}

// Service is the remediation domain service.
type Service struct {
	cfg   Config
	store Store
	log   *slog.Logger
	tr    Tracing

	timerKick   chan struct{}
	resolveKick chan struct{}

	mu    sync.Mutex
	conns map[string]*AgentConn // by device id
	seq   uint64
}

// New returns a Service; Run does its background work.
func New(cfg Config) *Service {
	if cfg.MinSeverity == SeverityUnspecified {
		cfg.MinSeverity = SeverityHigh
	}
	if cfg.ApprovalExpiry <= 0 {
		cfg.ApprovalExpiry = DefaultApprovalExpiry
	}
	if cfg.ActionTimeout <= 0 {
		cfg.ActionTimeout = DefaultActionTimeout
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.ResolveRetryMin <= 0 {
		cfg.ResolveRetryMin = 500 * time.Millisecond
	}
	if cfg.ResolveRetryMax < cfg.ResolveRetryMin {
		cfg.ResolveRetryMax = max(time.Minute, cfg.ResolveRetryMin)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	tr := cfg.Tracing
	if tr == nil {
		tr = noTracing{}
	}
	return &Service{
		cfg: cfg, store: cfg.Store, log: cfg.Logger, tr: tr,
		timerKick:   make(chan struct{}, 1),
		resolveKick: make(chan struct{}, 1),
		conns:       map[string]*AgentConn{},
	}
}

// Config returns the effective configuration.
func (s *Service) Config() Config { return s.cfg }

func (s *Service) now() time.Time { return s.cfg.Now().UTC() }

func newID(prefix string) string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// committed is the work to do once a transaction has committed.
type committed struct {
	queued  []*Action
	timers  bool
	resolve bool
}

func (c *committed) action(a *Action) {
	if a.State == ActionStateQueued {
		c.queued = append(c.queued, a)
	}
	if !a.Due().IsZero() {
		c.timers = true
	}
}

func (s *Service) update(ctx context.Context, fn func(tx Tx, c *committed) error) error {
	var c committed
	err := s.store.Update(ctx, func(tx Tx) error {
		c = committed{}
		return fn(tx, &c)
	})
	if err != nil {
		return err
	}
	for _, a := range c.queued {
		s.push(a)
	}
	if c.timers {
		kick(s.timerKick)
	}
	if c.resolve {
		kick(s.resolveKick)
	}
	return nil
}

func (s *Service) putAction(ctx context.Context, tx Tx, c *committed, a *Action) error {
	if err := tx.PutAction(a); err != nil {
		return err
	}
	c.action(a)
	cp := *a
	return tx.Emit(Event{Action: &cp, Trace: s.tr.Current(ctx), Time: a.UpdateTime})
}

func (s *Service) putInvestigation(ctx context.Context, tx Tx, inv *Investigation) error {
	if err := tx.PutInvestigation(inv); err != nil {
		return err
	}
	cp := *inv
	cp.Actions = nil
	return tx.Emit(Event{Investigation: &cp, Trace: s.tr.Current(ctx), Time: inv.UpdateTime})
}

// --- Automation levels -------------------------------------------------------------

// SetAutomationLevel sets a device group's level ("*" sets the default).
func (s *Service) SetAutomationLevel(ctx context.Context, group string, level Level, by string) (AutomationSetting, error) {
	if level < LevelFull || level > LevelNone {
		return AutomationSetting{}, invalid("setting.level", "must be FULL, SEMI or NONE")
	}
	set := AutomationSetting{Group: group, Level: level, UpdateTime: s.now(), UpdatedBy: by}
	// The previous setting, for the audit log (read before the write: the store's
	// transaction has no getter for it; a concurrent change is audited on its own).
	var before *AutomationSetting
	all, err := s.store.AutomationLevels(ctx)
	if err != nil {
		return AutomationSetting{}, err
	}
	for i := range all {
		if all[i].Group == group {
			before = &all[i]
		}
	}
	err = s.store.Update(ctx, func(tx Tx) error {
		if err := tx.PutAutomationLevel(set); err != nil {
			return err
		}
		return tx.Audit(ctx, audit.Change{ResourceType: AuditAutomationLevel, ResourceID: group, Before: before, After: &set})
	})
	return set, err
}

// ListAutomationLevels returns the group settings (without "*") and the default level.
func (s *Service) ListAutomationLevels(ctx context.Context) ([]AutomationSetting, Level, error) {
	all, err := s.store.AutomationLevels(ctx)
	if err != nil {
		return nil, 0, err
	}
	def := DefaultLevel
	var out []AutomationSetting
	for _, a := range all {
		if a.Group == DefaultGroup {
			def = a.Level
			continue
		}
		out = append(out, a)
	}
	return out, def, nil
}

// levelFor returns the device's automation level and, when its groups could not be
// read, why another level applied: the default for a device unknown to the inventory
// (it has no groups), and the most restrictive level of any setting when the inventory
// could not be asked (compliance unreachable or failing), so that a device whose group
// requires approval is never remediated without one because of a failed lookup.
func (s *Service) levelFor(ctx context.Context, deviceID string) (Level, string, error) {
	settings, def, err := s.ListAutomationLevels(ctx)
	if err != nil {
		return 0, "", err
	}
	var groups []string
	note := ""
	if s.cfg.Devices == nil {
		note = "no device inventory configured: default automation level " + def.String() + " applied"
	} else if groups, err = s.cfg.Devices.DeviceGroups(ctx, deviceID); errors.Is(err, ErrNotFound) {
		note = "device unknown to the compliance inventory: default automation level " + def.String() + " applied"
	} else if err != nil {
		if ctx.Err() != nil {
			return 0, "", ctx.Err()
		}
		strictest := def
		for _, st := range settings {
			if st.Level.restrictiveness() > strictest.restrictiveness() {
				strictest = st.Level
			}
		}
		s.log.WarnContext(ctx, "device groups unavailable, the most restrictive automation level applies", "device_id", deviceID, "level", strictest.String(), "err", err)
		note = "compliance service unreachable (" + err.Error() + "): the most restrictive automation level in use, " + strictest.String() + ", applied"
		return strictest, note, nil
	}
	byGroup := map[string]Level{}
	for _, st := range settings {
		byGroup[st.Group] = st.Level
	}
	level := def
	if len(groups) > 0 {
		level = LevelFull
		for _, g := range groups {
			l, ok := byGroup[g]
			if !ok {
				l = def
			}
			if l.restrictiveness() > level.restrictiveness() {
				level = l
			}
		}
	}
	return level, note, nil
}

// --- Investigations ----------------------------------------------------------------

// OnAlert handles an alert reported to the risk service (from the event stream or a
// resync): an alert at or above the minimum severity opens an investigation on its
// device or joins the open one; an alert below it joins an open investigation only.
// An alert already linked to an investigation changes nothing. setCursor, when > 0,
// is stored as the risk event cursor in the same transaction.
func (s *Service) OnAlert(ctx context.Context, a *Alert, trace TraceContext, setCursor int64) error {
	if a.Resolved || a.Severity <= SeverityInformational {
		return s.storeCursor(ctx, setCursor)
	}
	if _, linked, err := s.store.AlertLinked(ctx, a.ID); err != nil {
		return err
	} else if linked {
		return s.storeCursor(ctx, setCursor)
	}
	open, err := s.store.OpenInvestigation(ctx, a.DeviceID)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	if open == nil && a.Severity < s.cfg.MinSeverity {
		return s.storeCursor(ctx, setCursor)
	}
	ctx, end := s.tr.Start(ctx, "remediation.Investigate", trace)
	var level Level
	var note string
	if open == nil {
		if level, note, err = s.levelFor(ctx, a.DeviceID); err != nil {
			end(err)
			return err
		}
	}
	roots, err := s.agentRoots(ctx, a.DeviceID)
	if err != nil {
		end(err)
		return err
	}
	reason := fmt.Sprintf("alert %s (%s) reached severity %s", a.ID, a.Title, severityName(a.Severity))
	if note != "" {
		reason += "; " + note
	}
	err = s.update(ctx, func(tx Tx, c *committed) error {
		if _, err := s.openOrJoin(ctx, tx, c, a.DeviceID, []*Alert{a}, trace, Automation, true, reason, level, a.Severity >= s.cfg.MinSeverity, roots); err != nil {
			return err
		}
		if setCursor > 0 {
			return tx.SetCursor(setCursor)
		}
		return nil
	})
	if err == nil && roots == nil {
		// The agent may have said hello (with its roots) while this alert was being
		// handled: decide what waits for them now.
		err = s.decideOnRoots(ctx, a.DeviceID)
	}
	end(err)
	return err
}

func (s *Service) storeCursor(ctx context.Context, rev int64) error {
	if rev <= 0 {
		return nil
	}
	return s.store.Update(ctx, func(tx Tx) error { return tx.SetCursor(rev) })
}

// StoreCursor stores the risk event cursor alone (events that change nothing here).
func (s *Service) StoreCursor(ctx context.Context, rev int64) error {
	return s.store.Update(ctx, func(tx Tx) error { return tx.SetCursor(rev) })
}

func severityName(sv Severity) string {
	switch sv {
	case SeverityInformational:
		return "INFORMATIONAL"
	case SeverityLow:
		return "LOW"
	case SeverityMedium:
		return "MEDIUM"
	case SeverityHigh:
		return "HIGH"
	}
	return "UNSPECIFIED"
}

// openOrJoin links alerts to the device's open investigation, opening one when there
// is none and mayOpen. Alerts already linked are skipped. It proposes actions for new
// evidence. auto is true for the automation (an alert's arrival), false for a person
// (StartInvestigation): only a person takes over an alert whose investigation ended
// without remediating it. It is a flag, never read from by, which names the caller.
//
// An action runs without approval only under FULL automation, on a malicious verdict,
// and when its target is the device's own evidence: a file it reported itself, named
// by SHA-256, under its agent's detection roots (roots; nil when the agent has not
// reported them yet). Everything else waits for approval, with the reason.
func (s *Service) openOrJoin(ctx context.Context, tx Tx, c *committed, deviceID string, alerts []*Alert, trace TraceContext, by string, auto bool, reason string, level Level, mayOpen bool, roots *[]string) (*Investigation, error) {
	now := s.now()
	inv, err := tx.OpenInvestigation(deviceID)
	var actions []*Action
	isNew := false
	switch {
	case errors.Is(err, ErrNotFound):
		isNew = true
		if !mayOpen {
			return nil, nil
		}
		if level == LevelUnspecified {
			level = DefaultLevel
		}
		inv = &Investigation{
			ID: newID("inv-"), DeviceID: deviceID, State: StateRunning, Level: level,
			StartedBy: by, Reason: reason, CreateTime: now, UpdateTime: now, Trace: trace,
		}
		if inv.Trace.TraceParent == "" {
			inv.Trace = s.tr.Current(ctx)
		}
		if level == LevelNone {
			inv.Reason += "; automation level NONE: investigate only, no action is taken"
		}
	case err != nil:
		return nil, err
	default:
		if actions, err = tx.Actions(inv.ID); err != nil {
			return nil, err
		}
	}
	seen := map[string]int{} // evidence key -> index in inv.Evidence
	for i, ev := range inv.Evidence {
		seen[ev.Evidence.Key()] = i
	}
	changed := false
	for _, a := range alerts {
		linked, err := tx.LinkAlert(a.ID, inv.ID)
		if err != nil {
			return nil, err
		}
		if !linked && !auto {
			// A manual start takes over an alert whose investigation ended without
			// remediating it (failed, partial, cancelled, no action): a retry.
			if linked, err = s.takeOver(tx, a.ID, inv.ID); err != nil {
				return nil, err
			}
		}
		if !linked {
			continue
		}
		changed = true
		inv.AlertIDs = append(inv.AlertIDs, a.ID)
		verdict, why := VerdictMalicious, fmt.Sprintf("alert severity %s is at or above %s", severityName(a.Severity), severityName(s.cfg.MinSeverity))
		if a.Severity < s.cfg.MinSeverity {
			verdict, why = VerdictSuspicious, fmt.Sprintf("alert severity %s is below %s", severityName(a.Severity), severityName(s.cfg.MinSeverity))
		}
		for _, e := range a.Evidence {
			k := e.Key()
			if k == "" {
				continue
			}
			if i, ok := seen[k]; ok {
				// Known evidence: a malicious verdict upgrades a suspicious one, and
				// under FULL automation its pending action runs without approval
				// when it is the device's own evidence and this alert is too.
				if verdict == VerdictMalicious && inv.Evidence[i].Verdict == VerdictSuspicious {
					inv.Evidence[i].Verdict, inv.Evidence[i].Reason = verdict, why+" (alert "+a.ID+")"
					if err := s.upgrade(ctx, tx, c, inv, actions, k, now, a.ownEvidence()); err != nil {
						return nil, err
					}
				}
				continue
			}
			seen[k] = len(inv.Evidence)
			inv.Evidence = append(inv.Evidence, EvidenceVerdict{Evidence: e, Verdict: verdict, AlertID: a.ID, Reason: why})
			if inv.Level == LevelNone {
				continue
			}
			act := &Action{
				ID: newID("act-"), InvestigationID: inv.ID, DeviceID: deviceID, Target: e,
				CreateTime: now, UpdateTime: now, RequestedBy: Automation, Trace: inv.Trace,
			}
			if e.File != nil {
				act.Type = ActionQuarantineFile
			} else {
				act.Type = ActionKillProcess
			}
			var rs []string
			if roots != nil {
				rs = *roots
			}
			p := provenanceOf(a, e, rs, roots != nil)
			act.AutoEligible, act.WaitsForRoots = p.eligible, p.waitsForRoots
			if inv.Level == LevelFull && verdict == VerdictMalicious && p.eligible {
				act.State = ActionStateQueued
			} else {
				act.State = ActionStatePendingApproval
				act.ApprovalExpireTime = now.Add(s.cfg.ApprovalExpiry)
				act.ApprovalReason = approvalReason(p, inv.Level, verdict)
			}
			if err := s.putAction(ctx, tx, c, act); err != nil {
				return nil, err
			}
			actions = append(actions, act)
		}
	}
	if !changed && !isNew {
		return inv, nil
	}
	if !changed && auto {
		// Every alert was already linked (a concurrent open): nothing to open.
		return nil, nil
	}
	inv.UpdateTime = now
	if err := s.settle(ctx, tx, c, inv, actions); err != nil {
		return nil, err
	}
	inv.Actions = actions
	return inv, nil
}

// takeOver relinks an alert to investigationID when the investigation it is linked
// to has ended without remediating it.
func (s *Service) takeOver(tx Tx, alertID, investigationID string) (bool, error) {
	prev, ok, err := tx.AlertLinked(alertID)
	if err != nil || !ok || prev == investigationID {
		return false, err
	}
	old, err := tx.Investigation(prev)
	if errors.Is(err, ErrNotFound) {
		return true, tx.RelinkAlert(alertID, investigationID)
	}
	if err != nil {
		return false, err
	}
	if old.State.Open() || old.State == StateRemediated {
		return false, nil
	}
	return true, tx.RelinkAlert(alertID, investigationID)
}

// upgrade queues the automation's pending action on evidence that became malicious,
// when the investigation runs with FULL automation, the action's target is the
// device's own evidence (AutoEligible) and the upgrading alert is the device's own
// (own); otherwise the action keeps waiting, now for the provenance's reason only.
func (s *Service) upgrade(ctx context.Context, tx Tx, c *committed, inv *Investigation, actions []*Action, key string, now time.Time, own bool) error {
	if inv.Level != LevelFull {
		return nil
	}
	for _, act := range actions {
		if act.Target.Key() == key && act.State == ActionStatePendingApproval && act.RequestedBy == Automation {
			if !own {
				// Another reporter's verdict never makes the action automatic, not
				// even later, when the agent's roots become known.
				if act.AutoEligible || act.WaitsForRoots {
					act.AutoEligible, act.WaitsForRoots = false, false
					act.ApprovalReason = "the alert that made the evidence malicious was not reported by the device's own identity"
					act.UpdateTime = now
					if err := s.putAction(ctx, tx, c, act); err != nil {
						return err
					}
				}
				continue
			}
			if !act.AutoEligible {
				continue // not the device's own, or waiting for its roots: decided at its hello
			}
			act.State = ActionStateQueued
			act.ApprovalExpireTime = time.Time{}
			act.ApprovalReason = ""
			act.UpdateTime = now
			if err := s.putAction(ctx, tx, c, act); err != nil {
				return err
			}
		}
	}
	return nil
}

// settle recomputes an open investigation's state from its actions, closes it when
// every action is final (queueing the alerts for resolution when all succeeded),
// and stores it.
func (s *Service) settle(ctx context.Context, tx Tx, c *committed, inv *Investigation, actions []*Action) error {
	if inv.State.Open() {
		inv.State = stateOf(actions)
		if !inv.State.Open() {
			inv.EndTime = inv.UpdateTime
			if inv.State == StateRemediated {
				for _, id := range inv.AlertIDs {
					if err := tx.AddResolution(Resolution{AlertID: id, InvestigationID: inv.ID, Trace: inv.Trace, CreateTime: inv.UpdateTime}); err != nil {
						return err
					}
				}
				c.resolve = len(inv.AlertIDs) > 0
			}
		}
	}
	return s.putInvestigation(ctx, tx, inv)
}

// stateOf derives an open investigation's state from its actions (RESTORE_FILE
// actions, undos, do not count).
func stateOf(actions []*Action) InvestigationState {
	var n, running, pending, ok int
	for _, a := range actions {
		if a.Type == ActionRestoreFile {
			continue
		}
		n++
		switch {
		case a.State == ActionStateQueued || a.State == ActionStateSent:
			running++
		case a.State == ActionStatePendingApproval:
			pending++
		case a.State.succeeded():
			ok++
		}
	}
	switch {
	case n == 0:
		return StateNoThreatsFound
	case running > 0:
		return StateRunning
	case pending > 0:
		return StatePendingApproval
	case ok == n:
		return StateRemediated
	case ok > 0:
		return StatePartiallyRemediated
	}
	return StateFailed
}

// StartInvestigation opens an investigation by hand, or joins the device's open one.
// Alerts are fetched from the risk service; unknown ones fail with INVALID_ARGUMENT.
func (s *Service) StartInvestigation(ctx context.Context, deviceID string, alertIDs []string, reason, by string) (*Investigation, error) {
	var alerts []*Alert
	var vs []Violation
	for i, id := range alertIDs {
		a, err := s.cfg.Risk.GetAlert(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound):
			vs = append(vs, Violation{fmt.Sprintf("alert_ids[%d]", i), "no alert " + id})
			continue
		case err != nil:
			return nil, fmt.Errorf("get alert %s: %w", id, err)
		}
		if a.DeviceID != deviceID {
			vs = append(vs, Violation{fmt.Sprintf("alert_ids[%d]", i), fmt.Sprintf("alert %s is on device %s, not %s", id, a.DeviceID, deviceID)})
			continue
		}
		alerts = append(alerts, a)
	}
	if len(vs) > 0 {
		return nil, &InvalidError{Violations: vs}
	}
	ctx, end := s.tr.Start(ctx, "remediation.StartInvestigation", TraceContext{})
	level, note, err := s.levelFor(ctx, deviceID)
	if err != nil {
		end(err)
		return nil, err
	}
	if reason == "" {
		reason = "started by " + by
	}
	if note != "" {
		reason += "; " + note
	}
	roots, err := s.agentRoots(ctx, deviceID)
	if err != nil {
		end(err)
		return nil, err
	}
	var inv *Investigation
	err = s.update(ctx, func(tx Tx, c *committed) error {
		before, err := tx.OpenInvestigation(deviceID)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if before != nil {
			cp := *before
			before = &cp
		}
		inv, err = s.openOrJoin(ctx, tx, c, deviceID, alerts, s.tr.Current(ctx), by, false, reason, level, true, roots)
		if err != nil || inv == nil {
			return err
		}
		return tx.Audit(ctx, audit.Change{ResourceType: AuditInvestigation, ResourceID: inv.ID, Before: before, After: inv})
	})
	if err == nil && roots == nil {
		err = s.decideOnRoots(ctx, deviceID)
	}
	end(err)
	if err != nil {
		return nil, err
	}
	if inv == nil {
		return nil, fmt.Errorf("remediation: no investigation opened or joined for device %s", deviceID)
	}
	return s.store.GetInvestigation(ctx, inv.ID)
}

// GetInvestigation returns one investigation with its actions.
func (s *Service) GetInvestigation(ctx context.Context, id string) (*Investigation, error) {
	return s.store.GetInvestigation(ctx, id)
}

// ListInvestigations lists investigations newest first.
func (s *Service) ListInvestigations(ctx context.Context, f InvestigationFilter, pageSize int, token string) ([]*Investigation, string, error) {
	return s.store.ListInvestigations(ctx, f, pageSize, token)
}

// GetAction returns one action.
func (s *Service) GetAction(ctx context.Context, id string) (*Action, error) {
	return s.store.GetAction(ctx, id)
}

// ListActions lists actions newest first.
func (s *Service) ListActions(ctx context.Context, f ActionFilter, pageSize int, token string) ([]*Action, string, error) {
	return s.store.ListActions(ctx, f, pageSize, token)
}

// CancelInvestigation cancels an open investigation and its pending and queued actions.
func (s *Service) CancelInvestigation(ctx context.Context, id, comment, by string) (*Investigation, error) {
	err := s.update(ctx, func(tx Tx, c *committed) error {
		inv, err := tx.Investigation(id)
		if err != nil {
			return err
		}
		if !inv.State.Open() {
			return precondition("investigation %s is already closed (%d)", id, inv.State)
		}
		before := *inv
		actions, err := tx.Actions(id)
		if err != nil {
			return err
		}
		now := s.now()
		for _, a := range actions {
			if a.State == ActionStatePendingApproval || a.State == ActionStateQueued {
				a.State = ActionStateCancelled
				a.UpdateTime = now
				a.Result = "investigation cancelled by " + by
				if comment != "" {
					a.Result += ": " + comment
				}
				if err := s.putAction(ctx, tx, c, a); err != nil {
					return err
				}
			}
		}
		inv.State = StateCancelled
		inv.UpdateTime, inv.EndTime = now, now
		inv.Reason += "; cancelled by " + by
		if comment != "" {
			inv.Reason += ": " + comment
		}
		if err := s.putInvestigation(ctx, tx, inv); err != nil {
			return err
		}
		return tx.Audit(ctx, audit.Change{ResourceType: AuditInvestigation, ResourceID: inv.ID, Before: &before, After: inv})
	})
	if err != nil {
		return nil, err
	}
	return s.store.GetInvestigation(ctx, id)
}

// SubmitAction queues a manual action (RUN_SCAN, QUARANTINE_FILE or KILL_PROCESS).
func (s *Service) SubmitAction(ctx context.Context, deviceID string, typ ActionType, target Evidence, investigationID, comment, by string) (*Action, error) {
	switch typ {
	case ActionRunScan:
		if !target.IsZero() {
			return nil, invalid("target", "RUN_SCAN takes no target")
		}
	case ActionQuarantineFile:
		if target.File == nil || target.File.Path == "" || !isSHA256(target.File.SHA256) {
			return nil, invalid("target.file", "QUARANTINE_FILE needs a file with a path and a 64-hex-digit sha256")
		}
	case ActionKillProcess:
		if target.Process == nil || target.Process.PID <= 0 || target.Process.Name == "" {
			return nil, invalid("target.process", "KILL_PROCESS needs a process with a pid and a name")
		}
	default:
		return nil, invalid("type", "must be RUN_SCAN, QUARANTINE_FILE or KILL_PROCESS")
	}
	now := s.now()
	a := &Action{
		ID: newID("act-"), InvestigationID: investigationID, DeviceID: deviceID, Type: typ, State: ActionStateQueued,
		Target: target, CreateTime: now, UpdateTime: now, RequestedBy: by, Result: comment, Trace: s.tr.Current(ctx),
	}
	err := s.update(ctx, func(tx Tx, c *committed) error {
		var inv *Investigation
		if investigationID != "" {
			var err error
			if inv, err = tx.Investigation(investigationID); err != nil {
				return err
			}
			if !inv.State.Open() {
				return precondition("investigation %s is closed", investigationID)
			}
			if inv.DeviceID != deviceID {
				return invalid("investigation_id", fmt.Sprintf("investigation %s is on device %s, not %s", investigationID, inv.DeviceID, deviceID))
			}
			a.Trace = inv.Trace
		}
		if err := s.putAction(ctx, tx, c, a); err != nil {
			return err
		}
		if err := tx.Audit(ctx, audit.Change{ResourceType: AuditAction, ResourceID: a.ID, After: a}); err != nil {
			return err
		}
		if inv == nil {
			return nil
		}
		actions, err := tx.Actions(inv.ID)
		if err != nil {
			return err
		}
		inv.UpdateTime = now
		return s.settle(ctx, tx, c, inv, actions)
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

func isSHA256(h string) bool {
	if len(h) != 64 {
		return false
	}
	_, err := hex.DecodeString(h)
	return err == nil
}

// decide approves or rejects a pending action.
func (s *Service) decide(ctx context.Context, id string, approved bool, comment, by string) (*Action, error) {
	var out *Action
	err := s.update(ctx, func(tx Tx, c *committed) error {
		a, err := tx.Action(id)
		if err != nil {
			return err
		}
		if a.State != ActionStatePendingApproval {
			return precondition("action %s is not pending approval", id)
		}
		before := *a
		now := s.now()
		a.Approval = &Approval{DecidedBy: by, Time: now, Comment: comment, Approved: approved}
		a.UpdateTime = now
		if approved {
			a.State = ActionStateQueued
		} else {
			a.State = ActionStateRejected
		}
		if err := s.putAction(ctx, tx, c, a); err != nil {
			return err
		}
		if err := tx.Audit(ctx, audit.Change{ResourceType: AuditAction, ResourceID: a.ID, Before: &before, After: a}); err != nil {
			return err
		}
		out = a
		return s.settleOf(ctx, tx, c, a.InvestigationID)
	})
	return out, err
}

// settleOf settles an action's investigation, if it has an open one.
func (s *Service) settleOf(ctx context.Context, tx Tx, c *committed, investigationID string) error {
	if investigationID == "" {
		return nil
	}
	inv, err := tx.Investigation(investigationID)
	if err != nil {
		return err
	}
	if !inv.State.Open() {
		return nil
	}
	actions, err := tx.Actions(inv.ID)
	if err != nil {
		return err
	}
	inv.UpdateTime = s.now()
	return s.settle(ctx, tx, c, inv, actions)
}

// ApproveAction approves a pending action; it is queued for the agent.
func (s *Service) ApproveAction(ctx context.Context, id, comment, by string) (*Action, error) {
	return s.decide(ctx, id, true, comment, by)
}

// RejectAction rejects a pending action.
func (s *Service) RejectAction(ctx context.Context, id, comment, by string) (*Action, error) {
	return s.decide(ctx, id, false, comment, by)
}

// UndoAction queues a RESTORE_FILE for a succeeded quarantine.
func (s *Service) UndoAction(ctx context.Context, id, comment, by string) (orig, restore *Action, err error) {
	err = s.update(ctx, func(tx Tx, c *committed) error {
		a, err := tx.Action(id)
		if err != nil {
			return err
		}
		if a.Type != ActionQuarantineFile || a.State != ActionStateSucceeded {
			return precondition("action %s is not a succeeded quarantine", id)
		}
		if a.UndoActionID != "" {
			prev, err := tx.Action(a.UndoActionID)
			if err != nil {
				return err
			}
			if !prev.State.Final() {
				return precondition("action %s is already being undone by %s", id, prev.ID)
			}
		}
		now := s.now()
		r := &Action{
			ID: newID("act-"), InvestigationID: a.InvestigationID, DeviceID: a.DeviceID, Type: ActionRestoreFile,
			State: ActionStateQueued, Target: a.Target, UndoOf: a.ID, QuarantineID: a.QuarantineID,
			CreateTime: now, UpdateTime: now, RequestedBy: by, Trace: a.Trace,
			Approval: &Approval{DecidedBy: by, Time: now, Comment: comment, Approved: true},
		}
		if err := s.putAction(ctx, tx, c, r); err != nil {
			return err
		}
		if err := tx.Audit(ctx, audit.Change{ResourceType: AuditAction, ResourceID: r.ID, After: r}); err != nil {
			return err
		}
		before := *a
		a.UndoActionID = r.ID
		a.UpdateTime = now
		if err := s.putAction(ctx, tx, c, a); err != nil {
			return err
		}
		if err := tx.Audit(ctx, audit.Change{ResourceType: AuditAction, ResourceID: a.ID, Before: &before, After: a}); err != nil {
			return err
		}
		orig, restore = a, r
		return nil
	})
	return orig, restore, err
}

// --- Timers ------------------------------------------------------------------------

// ExpireDue rejects pending approvals whose expiry has passed and times out sent
// actions whose result deadline has passed; it returns how many actions changed.
func (s *Service) ExpireDue(ctx context.Context) (int, error) {
	n := 0
	err := s.update(ctx, func(tx Tx, c *committed) error {
		n = 0
		now := s.now()
		due, err := tx.DueActions(now)
		if err != nil {
			return err
		}
		invs := map[string]bool{}
		for _, a := range due {
			switch a.State {
			case ActionStatePendingApproval:
				a.State = ActionStateRejected
				a.Approval = &Approval{DecidedBy: System, Time: now, Comment: fmt.Sprintf("approval expired after %s", s.cfg.ApprovalExpiry)}
			case ActionStateSent:
				a.State = ActionStateTimedOut
				a.Result = fmt.Sprintf("no result from the agent within %s", s.cfg.ActionTimeout)
			default:
				continue
			}
			a.UpdateTime = now
			if err := s.putAction(ctx, tx, c, a); err != nil {
				return err
			}
			n++
			if a.InvestigationID != "" {
				invs[a.InvestigationID] = true
			}
		}
		for id := range invs {
			if err := s.settleOf(ctx, tx, c, id); err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}

// Run does the background work until ctx ends: approval expiry and action timeouts
// (one timer on the earliest deadline) and the durable retry of alert resolutions.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.runTimers(ctx) }()
	go func() { defer wg.Done(); s.runResolver(ctx) }()
	wg.Wait()
	return nil
}

func (s *Service) runTimers(ctx context.Context) {
	for {
		if _, err := s.ExpireDue(ctx); err != nil && ctx.Err() == nil {
			s.log.ErrorContext(ctx, "expiring due actions", "err", err)
		}
		wait := time.Hour
		if next, ok, err := s.store.NextDue(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.ErrorContext(ctx, "reading next deadline", "err", err)
			wait = time.Second
		} else if ok {
			wait = max(0, next.Sub(s.cfg.Now())) + time.Millisecond
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.timerKick:
		case <-t.C:
		}
		t.Stop()
	}
}

// ResolvePending resolves every pending alert resolution once; it returns how many
// are still pending.
func (s *Service) ResolvePending(ctx context.Context) (int, error) {
	rs, err := s.store.PendingResolutions(ctx)
	if err != nil {
		return 0, err
	}
	left := 0
	for _, r := range rs {
		rctx, end := s.tr.Start(ctx, "remediation.ResolveAlert", r.Trace)
		err := s.cfg.Risk.ResolveAlert(rctx, r.AlertID, r.InvestigationID)
		switch {
		case err == nil:
		case errors.Is(err, ErrNotFound):
			s.log.WarnContext(rctx, "alert of a remediated investigation is unknown to the risk service; not retrying", "alert_id", r.AlertID, "investigation_id", r.InvestigationID)
		default:
			end(err)
			if ctx.Err() != nil {
				return left, ctx.Err()
			}
			s.log.WarnContext(rctx, "resolving alert failed, will retry", "alert_id", r.AlertID, "investigation_id", r.InvestigationID, "err", err)
			left++
			continue
		}
		err = s.store.Update(rctx, func(tx Tx) error { return tx.DeleteResolution(r.AlertID) })
		end(err)
		if err != nil {
			return left, err
		}
	}
	return left, nil
}

func (s *Service) runResolver(ctx context.Context) {
	backoff := s.cfg.ResolveRetryMin
	for {
		left, err := s.ResolvePending(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.log.ErrorContext(ctx, "alert resolution pass failed", "err", err)
		}
		var retry <-chan time.Time
		if left > 0 || err != nil {
			t := time.NewTimer(backoff)
			defer t.Stop()
			retry = t.C
			backoff = min(backoff*2, s.cfg.ResolveRetryMax)
		} else {
			backoff = s.cfg.ResolveRetryMin
		}
		select {
		case <-ctx.Done():
			return
		case <-s.resolveKick:
		case <-retry:
		}
	}
}

// --- Agents ------------------------------------------------------------------------

// AgentHello is the first message of an agent connection.
type AgentHello struct {
	DeviceID, Version, Hostname string
	// DetectionRoots are the folders the agent watches.
	DetectionRoots []string
}

// AgentConn is one connected agent. Commands are taken with Next.
type AgentConn struct {
	DeviceID string
	id       uint64
	connID   string // unique across replicas (Agent.ConnectionID)

	mu        sync.Mutex
	queue     []*Action
	seen      map[string]bool // every action queued on this connection: sent once per connection
	notify    chan struct{}
	replaced  chan struct{}
	heartbeat time.Time
	recorded  time.Time // the heartbeat last recorded in the store (Config.Replicated)
	connected time.Time
	hello     AgentHello
}

func (c *AgentConn) push(a *Action) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen[a.ID] {
		return
	}
	c.seen[a.ID] = true
	c.queue = append(c.queue, a)
	kick(c.notify)
}

// Next returns the next action to send; ErrAborted once a newer connection of the
// same device replaced this one; ctx.Err() when ctx ends.
func (c *AgentConn) Next(ctx context.Context) (*Action, error) {
	for {
		c.mu.Lock()
		if len(c.queue) > 0 {
			a := c.queue[0]
			c.queue = c.queue[1:]
			c.mu.Unlock()
			return a, nil
		}
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.replaced:
			return nil, ErrAborted
		case <-c.notify:
		}
	}
}

// Replaced is closed when a newer connection of the same device replaced this one.
func (c *AgentConn) Replaced() <-chan struct{} { return c.replaced }

func (s *Service) push(a *Action) {
	s.mu.Lock()
	c := s.conns[a.DeviceID]
	s.mu.Unlock()
	if c != nil {
		c.push(a)
	}
}

// HeartbeatInterval is the interval agents are told to heartbeat at.
func (s *Service) HeartbeatInterval() time.Duration { return s.cfg.HeartbeatInterval }

// AgentConnect registers an agent connection (replacing an older one of the same
// device) and queues every QUEUED action and every SENT action still without a
// result for it: agents deduplicate by action id.
func (s *Service) AgentConnect(ctx context.Context, h AgentHello) (*AgentConn, error) {
	now := s.now()
	s.mu.Lock()
	s.seq++
	c := &AgentConn{
		DeviceID: h.DeviceID, id: s.seq, connID: newID("conn-"), seen: map[string]bool{}, notify: make(chan struct{}, 1),
		replaced: make(chan struct{}), heartbeat: now, recorded: now, connected: now, hello: h,
	}
	if old := s.conns[h.DeviceID]; old != nil {
		close(old.replaced)
	}
	s.conns[h.DeviceID] = c
	s.mu.Unlock()
	err := s.store.Update(ctx, func(tx Tx) error {
		return tx.PutAgent(&Agent{DeviceID: h.DeviceID, Version: h.Version, Hostname: h.Hostname, ConnectTime: now, LastHeartbeat: now, DetectionRoots: h.DetectionRoots,
			Connected: true, ConnectionID: c.connID})
	})
	if err != nil {
		s.AgentDisconnect(context.WithoutCancel(ctx), c)
		return nil, err
	}
	if err := s.decideOnRoots(ctx, h.DeviceID); err != nil {
		s.AgentDisconnect(context.WithoutCancel(ctx), c)
		return nil, err
	}
	pending, err := s.store.DeviceActions(ctx, h.DeviceID, ActionStateQueued, ActionStateSent)
	if err != nil {
		s.AgentDisconnect(context.WithoutCancel(ctx), c)
		return nil, err
	}
	for _, a := range pending {
		c.push(a)
	}
	return c, nil
}

// AgentDisconnect unregisters a connection (if it is still the device's current one)
// and records its last heartbeat.
func (s *Service) AgentDisconnect(ctx context.Context, c *AgentConn) {
	s.mu.Lock()
	current := s.conns[c.DeviceID] == c
	if current {
		delete(s.conns, c.DeviceID)
	}
	s.mu.Unlock()
	if !current {
		return
	}
	if err := s.recordAgent(ctx, c, false); err != nil {
		s.log.WarnContext(ctx, "recording agent disconnect", "device_id", c.DeviceID, "err", err)
	}
}

// AgentHeartbeat records a heartbeat (in the store too, at most once per
// HeartbeatInterval, when Config.Replicated).
func (s *Service) AgentHeartbeat(ctx context.Context, c *AgentConn) {
	now := s.now()
	c.mu.Lock()
	c.heartbeat = now
	due := s.cfg.Replicated && now.Sub(c.recorded) >= s.cfg.HeartbeatInterval
	if due {
		c.recorded = now
	}
	c.mu.Unlock()
	if !due {
		return
	}
	if err := s.recordAgent(ctx, c, true); err != nil && ctx.Err() == nil {
		s.log.WarnContext(ctx, "recording agent heartbeat", "device_id", c.DeviceID, "err", err)
	}
}

// ActionSent records that an action was sent to its agent: QUEUED becomes SENT, and
// the result deadline starts (again, for a re-sent action).
func (s *Service) ActionSent(ctx context.Context, id string) error {
	return s.update(ctx, func(tx Tx, c *committed) error {
		a, err := tx.Action(id)
		if err != nil {
			return err
		}
		if a.State != ActionStateQueued && a.State != ActionStateSent {
			return nil
		}
		now := s.now()
		a.State = ActionStateSent
		a.Deadline = now.Add(s.cfg.ActionTimeout)
		a.UpdateTime = now
		// QUEUED and SENT both keep an investigation RUNNING: nothing to settle.
		return s.putAction(ctx, tx, c, a)
	})
}

// ActionResult is an agent's result for one action.
type ActionResult struct {
	ActionID     string
	Succeeded    bool
	Message      string
	QuarantineID string
	Findings     []Evidence
}

// ReportResult records an agent's result. It is idempotent on the action id: a result
// for an action that already has one changes nothing. An action of another device
// fails with ErrPermissionDenied; an unknown one with ErrNotFound. A late result for
// a TIMED_OUT action is recorded (the agent did act).
func (s *Service) ReportResult(ctx context.Context, deviceID string, r ActionResult) (*Action, error) {
	var out *Action
	err := s.update(ctx, func(tx Tx, c *committed) error {
		a, err := tx.Action(r.ActionID)
		if err != nil {
			return err
		}
		if a.DeviceID != deviceID {
			return fmt.Errorf("%w: action %s is not an action of device %s", ErrPermissionDenied, r.ActionID, deviceID)
		}
		out = a
		if a.State != ActionStateQueued && a.State != ActionStateSent && a.State != ActionStateTimedOut {
			return nil
		}
		tctx, end := s.tr.Start(ctx, "remediation.ActionResult", TraceContext{}, a.Trace)
		defer end(nil)
		now := s.now()
		a.UpdateTime = now
		a.Result = r.Message
		a.Findings = r.Findings
		if r.Succeeded {
			a.State = ActionStateSucceeded
			if a.Type == ActionQuarantineFile {
				a.QuarantineID = r.QuarantineID
			}
		} else {
			a.State = ActionStateFailed
		}
		if err := s.putAction(tctx, tx, c, a); err != nil {
			return err
		}
		if a.Type == ActionRestoreFile && r.Succeeded && a.UndoOf != "" {
			orig, err := tx.Action(a.UndoOf)
			if err != nil {
				return err
			}
			if orig.State == ActionStateSucceeded {
				orig.State = ActionStateUndone
				orig.UpdateTime = now
				if err := s.putAction(tctx, tx, c, orig); err != nil {
					return err
				}
			}
		}
		return s.settleOf(tctx, tx, c, a.InvestigationID)
	})
	return out, err
}

// ListAgents lists agents with their health.
func (s *Service) ListAgents(ctx context.Context, pageSize int, token string) ([]*Agent, string, error) {
	agents, next, err := s.store.ListAgents(ctx, pageSize, token)
	if err != nil {
		return nil, "", err
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range agents {
		c := s.conns[a.DeviceID]
		if c == nil {
			// Connected to another replica: its recorded heartbeat tells.
			a.Health = AgentHealthDisconnected
			if s.cfg.Replicated && a.Connected {
				a.Health = AgentHealthHealthy
				if now.Sub(a.LastHeartbeat) > 3*s.cfg.HeartbeatInterval {
					a.Health = AgentHealthStale
				}
			}
			continue
		}
		c.mu.Lock()
		a.LastHeartbeat, a.ConnectTime = c.heartbeat, c.connected
		a.Version, a.Hostname = c.hello.Version, c.hello.Hostname
		c.mu.Unlock()
		a.Health = AgentHealthHealthy
		if now.Sub(a.LastHeartbeat) > 3*s.cfg.HeartbeatInterval {
			a.Health = AgentHealthStale
		}
	}
	return agents, next, nil
}

// ConnectedAgents returns the device ids with a live connection, sorted.
func (s *Service) ConnectedAgents() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.conns))
	for id := range s.conns {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}
