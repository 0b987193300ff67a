// Package accesscore runs the access service: it keeps the directory and policies compiled into an atomically swapped decision snapshot, the device compliance index fed by the compliance feed, sessions and the sign-in log.
package accesscore

import (
	"context"
	"errors"
	"fmt"
	"github.com/condaccess/condaccess/internal/auth"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/condaccess/condaccess/internal/consumer"
	"github.com/condaccess/condaccess/services/access"
	"github.com/condaccess/condaccess/services/access/compliancefeed"
	pe "github.com/condaccess/condaccess/services/access/policyengine"
)

// Config configures New.
type Config struct {
	Store  access.Store
	Logger *slog.Logger
	// EmergencyAccounts are user ids guarded against lockout in addition to the
	// users marked emergency_access.
	EmergencyAccounts []string
	// StalenessBound: once the compliance feed has been broken for longer, or the
	// whole chain (risk -> compliance -> access: the older of this feed's last contact
	// and the compliance service's risk_as_of) is older than this, COMPLIANT_DEVICE
	// fails closed with COMPLIANCE_STATE_STALE (default 30s).
	StalenessBound time.Duration
	// FeedHealth and FeedHealthName, when set, report FeedHealthName NOT_SERVING while
	// the compliance feed consumer is stuck at an event it cannot apply.
	FeedHealth     consumer.HealthSetter
	FeedHealthName string
	// SignInRetention: sign-ins older than this are deleted periodically (default 30 days).
	SignInRetention time.Duration
	// CleanupInterval is the retention cleanup period (default 1h).
	CleanupInterval time.Duration
	// SessionIdleTimeout: a session not used for this long is forgotten (deleted,
	// without an event); the next allowed access opens a new one (default 8h).
	SessionIdleTimeout time.Duration
	// SignInBuffer is the recorder channel capacity (default 65536).
	SignInBuffer int
	// EncodeSignIn appends a sign-in's detail, made from the decision's wire
	// response, to dst (access.RecorderConfig.Encode).
	EncodeSignIn func(dst []byte, si *access.SignIn, src any) []byte
	// Metrics are optional hooks.
	Metrics Metrics
	// Now defaults to time.Now.
	Now func() time.Time
	// Revocations, when set, blocks devices whose identity is revoked
	// (DEVICE_IDENTITY_REVOKED); the process's revocation feed fills it.
	Revocations *auth.Revocations
	// LeaderCleanup leaves the sign-in retention cleanup to RunCleanup (run by
	// the lease holder among replicas) instead of Run.
	LeaderCleanup bool
}

// Metrics are counters and gauges the service reports to.
type Metrics interface {
	Decision(d pe.Decision)
	DroppedSignIn()
}

type noMetrics struct{}

func (noMetrics) Decision(pe.Decision) {}
func (noMetrics) DroppedSignIn()       {}

// Service is the access service's runtime.
type Service struct {
	cfg   Config
	store access.Store
	log   *slog.Logger
	now   func() time.Time

	// wmu serialises the writers of the directory and policies; decisions never take it.
	wmu     sync.Mutex
	model   *access.Model
	version int64

	snap     atomic.Pointer[pe.Snapshot]
	devices  atomic.Pointer[pe.DeviceIndex]
	sessions *access.Sessions
	recorder *access.Recorder

	feedStarted atomic.Int64 // unix nanos; 0 = feed not running
	lastContact atomic.Int64 // unix nanos of the last event, progress or resync
	feedRev     atomic.Int64
	riskAsOf    atomic.Int64 // unix nanos of the compliance service's risk_as_of; 0 = unknown
	feed        atomic.Pointer[consumer.Consumer[compliancefeed.Event]]

	results sync.Pool
	// changes wakes WatchBlockedStatus streams.
	changes changes

	// cf is the store's change feed when other replicas share the store (follow.go).
	cf access.ChangeFeed
	// changeRev is the change-log revision the model reflects (wmu).
	changeRev int64
	// followFrom and followFromDevices are the change logs' heads read before the
	// state was loaded.
	followFrom, followFromDevices int64
	// consuming is true while this replica runs the compliance feed consumer.
	consuming atomic.Bool
	// remediations is the remediation service's per-device state (RunRemediationFeed).
	remediations remediations
}

// New loads the store (directory, policies, device compliance, active sessions)
// and compiles the first snapshot.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.StalenessBound <= 0 {
		cfg.StalenessBound = 30 * time.Second
	}
	if cfg.SignInRetention <= 0 {
		cfg.SignInRetention = 30 * 24 * time.Hour
	}
	if cfg.CleanupInterval <= 0 {
		cfg.CleanupInterval = time.Hour
	}
	if cfg.SessionIdleTimeout <= 0 {
		cfg.SessionIdleTimeout = 8 * time.Hour
	}
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Service{cfg: cfg, store: cfg.Store, log: cfg.Logger, now: func() time.Time { return cfg.Now().UTC() },
		sessions: access.NewSessions()}
	s.devices.Store(pe.NewDeviceIndex())
	s.results.New = func() any { return new(pe.Result) }
	s.recorder = access.NewRecorder(access.RecorderConfig{Store: cfg.Store, Buffer: cfg.SignInBuffer, Encode: cfg.EncodeSignIn,
		OnDrop: cfg.Metrics.DroppedSignIn, Logger: cfg.Logger})

	if s.cf = replicated(cfg.Store); s.cf != nil {
		// Before loading: every change after this head is followed (again).
		head, err := s.cf.ChangeHead(ctx)
		if err != nil {
			return nil, fmt.Errorf("read the change log: %w", err)
		}
		s.changeRev, s.followFrom = head, head
		if s.followFromDevices, err = s.cf.DeviceChangeHead(ctx); err != nil {
			return nil, fmt.Errorf("read the device change log: %w", err)
		}
	}
	d, err := cfg.Store.LoadDirectory(ctx)
	if err != nil {
		return nil, fmt.Errorf("load directory: %w", err)
	}
	ps, err := cfg.Store.LoadPolicies(ctx)
	if err != nil {
		return nil, fmt.Errorf("load policies: %w", err)
	}
	s.model = access.NewModel(d, ps)
	if err := s.compile(); err != nil {
		return nil, fmt.Errorf("compile stored directory and policies: %w", err)
	}
	var entries []pe.DeviceEntry
	if err := cfg.Store.LoadDevices(ctx, func(dc *access.DeviceCompliance) {
		entries = append(entries, pe.DeviceEntry{ID: dc.DeviceID, State: DeviceState(dc)})
	}); err != nil {
		return nil, fmt.Errorf("load device compliance: %w", err)
	}
	s.devices.Load().PutMany(entries)
	n := len(entries)
	entries = nil
	if rev, ok, err := cfg.Store.FeedCursor(ctx); err != nil {
		return nil, fmt.Errorf("load compliance cursor: %w", err)
	} else if ok {
		s.feedRev.Store(rev)
	}
	active, err := cfg.Store.LoadActiveSessions(ctx)
	if err != nil {
		return nil, fmt.Errorf("load sessions: %w", err)
	}
	s.sessions.Load(active)
	s.log.Info("access state loaded", "users", len(d.Users), "groups", len(d.Groups), "applications", len(d.Applications),
		"policies", len(ps), "devices", n, "active_sessions", len(active), "compliance_revision", s.feedRev.Load())
	return s, nil
}

// Run writes sign-ins and sessions and deletes expired sign-ins until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.recorder.Run(ctx) }()
	t := time.NewTicker(s.cfg.CleanupInterval)
	defer t.Stop()
	if s.cfg.LeaderCleanup {
		t.Stop()
	}
	idle := time.NewTicker(min(time.Minute, s.cfg.SessionIdleTimeout/4+time.Millisecond))
	defer idle.Stop()
	if !s.cfg.LeaderCleanup {
		s.cleanup(ctx)
	}
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-t.C:
			s.cleanup(ctx)
		case <-idle.C:
			s.expireSessions(ctx)
		}
	}
}

// RunCleanup deletes sign-ins past retention now and every CleanupInterval until
// ctx ends (Config.LeaderCleanup).
func (s *Service) RunCleanup(ctx context.Context) {
	t := time.NewTicker(s.cfg.CleanupInterval)
	defer t.Stop()
	for {
		s.cleanup(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Service) expireSessions(ctx context.Context) {
	ls := s.sessions.Expire(time.Now().Add(-s.cfg.SessionIdleTimeout))
	if len(ls) == 0 {
		return
	}
	ids := make([]string, len(ls))
	for i, l := range ls {
		ids[i] = l.ID
	}
	if err := s.store.DeleteSessions(ctx, ids); err != nil && ctx.Err() == nil {
		s.log.Warn("deleting idle sessions failed", "count", len(ids), "err", err)
	}
}

func (s *Service) cleanup(ctx context.Context) {
	n, err := s.store.DeleteSignInsBefore(ctx, s.now().Add(-s.cfg.SignInRetention))
	if err != nil && ctx.Err() == nil {
		s.log.Warn("sign-in retention cleanup failed", "err", err)
	} else if n > 0 {
		s.log.Info("sign-ins past retention deleted", "count", n, "retention", s.cfg.SignInRetention)
	}
}

// Recorder returns the sign-in recorder (tests flush it).
func (s *Service) Recorder() *access.Recorder { return s.recorder }

// Snapshot returns the current snapshot.
func (s *Service) Snapshot() *pe.Snapshot { return s.snap.Load() }

// compile builds a snapshot from the model and swaps it in; wmu must be held
// (or the service not yet shared).
func (s *Service) compile() error {
	dir := engineDirectory(s.model)
	snap, err := pe.Compile(&dir, enginePolicies(s.model), pe.WithVersion(s.version+1))
	if err != nil {
		return err
	}
	s.version++
	s.snap.Store(snap)
	s.changes.notify()
	return nil
}

// rebuildPolicies recompiles the policies against the current directory.
func (s *Service) rebuildPolicies() {
	snap, err := s.snap.Load().WithPolicies(enginePolicies(s.model), pe.WithVersion(s.version+1))
	if err != nil {
		s.log.Error("compiling the policy snapshot failed; decisions use the previous snapshot", "err", err)
		return
	}
	s.version++
	s.snap.Store(snap)
	s.changes.notify()
}

// rebuild recompiles after a successful write. The model was validated, so a
// failure here is a bug: keep serving the previous snapshot, loudly.
func (s *Service) rebuild() {
	if err := s.compile(); err != nil {
		s.log.Error("compiling the policy snapshot failed; decisions use the previous snapshot", "err", err)
	}
}

// ---- policies ----

func (s *Service) validatePolicy(p *access.Policy, field string) error {
	if err := access.ValidatePolicy(p, field); err != nil {
		return err
	}
	ep := EnginePolicy(p)
	if err := pe.ValidatePolicy(&ep); err != nil {
		var perr *pe.PolicyError
		if errors.As(err, &perr) {
			return access.Invalid(field+"."+perr.Field, "%s", perr.Msg)
		}
		return access.Invalid(field, "%v", err)
	}
	return nil
}

// emergencyAccounts lists the guarded user ids, sorted.
func (s *Service) emergencyAccounts() []string {
	set := map[string]bool{}
	for _, id := range s.cfg.EmergencyAccounts {
		set[id] = true
	}
	for _, u := range s.model.Users {
		if u.EmergencyAccess {
			set[u.ID] = true
		}
	}
	out := make([]string, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// lockoutGuard refuses an enabled policy that could block an emergency-access account.
func (s *Service) lockoutGuard(p *access.Policy) error {
	if p.State != access.PolicyEnabled {
		return nil
	}
	ep := EnginePolicy(p)
	for _, id := range s.emergencyAccounts() {
		if s.snap.Load().CouldBlock(ep, id) {
			return fmt.Errorf("%w: enabling policy %q could block emergency-access account %q (a break-glass account must always be able to sign in): add %q to users.exclude_users (or exclude a group it is a member of with users.exclude_groups), or save the policy as POLICY_STATE_REPORT_ONLY",
				access.ErrLockout, p.ID, id, id)
		}
	}
	return nil
}

// CreatePolicy validates, applies the lockout guard, stores and recompiles.
func (s *Service) CreatePolicy(ctx context.Context, p *access.Policy) (*access.Policy, error) {
	if err := s.validatePolicy(p, "policy"); err != nil {
		return nil, err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	ctx, done, err := s.guard(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	if s.model.Policies[p.ID] != nil {
		return nil, fmt.Errorf("%w: policy %q", access.ErrAlreadyExists, p.ID)
	}
	if err := s.lockoutGuard(p); err != nil {
		return nil, err
	}
	np := *p
	now := s.now()
	np.CreateTime, np.UpdateTime, np.Etag = now, now, s.etag(now)
	if err := s.store.CreatePolicy(ctx, &np); err != nil {
		return nil, err
	}
	s.model.Policies[np.ID] = &np
	s.rebuildPolicies()
	return &np, nil
}

// GetPolicy returns a policy.
func (s *Service) GetPolicy(ctx context.Context, id string) (*access.Policy, error) {
	return s.store.GetPolicy(ctx, id)
}

// ListPolicies lists policies by id.
func (s *Service) ListPolicies(ctx context.Context, state access.PolicyState, token string, limit int) ([]*access.Policy, string, error) {
	return s.store.ListPolicies(ctx, state, token, limit)
}

var policyFields = []string{"display_name", "description", "state", "users", "applications", "conditions", "grant_controls"}

// UpdatePolicy applies the fields of p named by mask (top-level fields, or
// sub-paths such as "users.exclude_users", which replace their whole parent).
func (s *Service) UpdatePolicy(ctx context.Context, p *access.Policy, mask []string) (*access.Policy, error) {
	top := make([]string, 0, len(mask))
	for _, m := range mask {
		head, _, _ := strings.Cut(m, ".")
		top = append(top, head)
	}
	f, err := maskFields(slices.Compact(top), policyFields...)
	if err != nil {
		return nil, err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	ctx, done, err := s.guard(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	cur := s.model.Policies[p.ID]
	if cur == nil {
		return nil, fmt.Errorf("%w: policy %q", access.ErrNotFound, p.ID)
	}
	if p.Etag != "" && p.Etag != cur.Etag {
		return nil, fmt.Errorf("%w: policy %q was changed (etag %q, current %q): read it again", access.ErrEtagMismatch, p.ID, p.Etag, cur.Etag)
	}
	np := *cur
	if f["display_name"] {
		np.DisplayName = p.DisplayName
	}
	if f["description"] {
		np.Description = p.Description
	}
	if f["state"] {
		np.State = p.State
	}
	if f["users"] {
		np.Users = p.Users
	}
	if f["applications"] {
		np.Applications = p.Applications
	}
	if f["conditions"] {
		np.Conditions = p.Conditions
	}
	if f["grant_controls"] {
		np.Grant = p.Grant
	}
	if err := s.validatePolicy(&np, "policy"); err != nil {
		return nil, err
	}
	if err := s.lockoutGuard(&np); err != nil {
		return nil, err
	}
	now := s.now()
	np.UpdateTime, np.Etag = now, s.etag(now)
	if err := s.store.UpdatePolicy(ctx, &np, p.Etag); err != nil {
		return nil, err
	}
	s.model.Policies[np.ID] = &np
	s.rebuildPolicies()
	return &np, nil
}

// DeletePolicy deletes a policy.
func (s *Service) DeletePolicy(ctx context.Context, id, etag string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	ctx, done, err := s.guard(ctx)
	if err != nil {
		return err
	}
	defer done()
	if err := s.store.DeletePolicy(ctx, id, etag); err != nil {
		return err
	}
	delete(s.model.Policies, id)
	s.rebuildPolicies()
	return nil
}

// ---- sessions and sign-ins ----

// ListSessions lists sessions.
func (s *Service) ListSessions(ctx context.Context, f access.SessionFilter, token string, limit int) ([]*access.Session, string, error) {
	return s.store.ListSessions(ctx, f, token, limit)
}

// LastSignInKey returns the newest stored sign-in's key (a follower's start).
func (s *Service) LastSignInKey(ctx context.Context) (int64, error) {
	return s.store.LastSignInKey(ctx)
}

// SignInsAfter lists the sign-ins stored after key after, oldest first
// (access.Store.SignInsAfter), and the key reached.
func (s *Service) SignInsAfter(ctx context.Context, f access.SignInFilter, after int64, limit int) ([]*access.SignIn, int64, error) {
	return s.store.SignInsAfter(ctx, f, after, limit)
}

// SignInsChanged is closed when another replica may have stored sign-ins (nil
// without replicas); this process's writes are the Recorder's Wrote.
func (s *Service) SignInsChanged() <-chan struct{} { return s.store.SignInsChanged() }

// ListSignIns lists sign-ins, newest first.
func (s *Service) ListSignIns(ctx context.Context, f access.SignInFilter, token string, limit int) ([]*access.SignIn, string, error) {
	return s.store.ListSignIns(ctx, f, token, limit)
}

// WatchSessionEvents streams session events.
func (s *Service) WatchSessionEvents(ctx context.Context, start int64, onEvent func(*access.SessionEvent) error, onProgress func(int64) error) error {
	return s.store.WatchSessionEvents(ctx, start, onEvent, onProgress)
}
