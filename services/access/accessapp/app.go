// Package accessapp plugs the access service into the condaccess binary.
package accessapp

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/consumer"
	"github.com/condaccess/condaccess/internal/lease"
	"github.com/condaccess/condaccess/internal/suite"
	"github.com/condaccess/condaccess/services/access/accesscore"
	"github.com/condaccess/condaccess/services/access/accessgrpc"
	"github.com/condaccess/condaccess/services/access/accessstore"
	"github.com/condaccess/condaccess/services/access/edgeid"
	pe "github.com/condaccess/condaccess/services/access/policyengine"
)

// Flag defaults.
const (
	DefaultStalenessBound   = 30 * time.Second
	DefaultSignInRetention  = 30 * 24 * time.Hour
	DefaultRetention        = 1_000_000
	DefaultProgressInterval = time.Second
)

// Factory builds the access service from its flags.
type Factory struct {
	importBatch      int
	stalenessBound   time.Duration
	emergency        string
	signInRetention  time.Duration
	retention        int64
	progressInterval time.Duration
	signInBuffer     int
	sessionIdle      time.Duration
	synchronous      string
	headers          accessgrpc.Headers
	set              bool

	oidcIssuers     []string
	oidcAudience    string
	oidcUserClaim   string
	oidcGroupsClaim string
	tokenGroups     bool
	oidcMFAMethods  string
	pomeriumJWKS    string
	pomeriumAud     string
	trustHeaders    bool
	trustedHops     int
	certHeader      string
	helpURL         string
	blockedDetail   string
}

// OIDC returns the OIDC issuers (--oidc-issuer) and the groups claim
// (--oidc-groups-claim), which the console's sign-in reuses.
func (f *Factory) OIDC() (issuers []string, groupsClaim string) {
	return f.oidcIssuers, f.oidcGroupsClaim
}

// Name implements suite.Factory.
func (*Factory) Name() string { return "access" }

// SupportsPostgres implements suite.PostgresReady.
func (*Factory) SupportsPostgres() {}

// RegisterFlags implements suite.Factory.
func (f *Factory) RegisterFlags(fs *flag.FlagSet) {
	f.set = true
	fs.IntVar(&f.importBatch, "access-import-batch", accessgrpc.DefaultImportBatch, "directory items (users, groups, applications, group members) ImportDirectory holds before applying them; bounds its memory per stream")
	fs.DurationVar(&f.stalenessBound, "access-staleness-bound", DefaultStalenessBound, "once the compliance feed has been broken, or the whole chain risk -> compliance -> access is older, for longer, apps that require a compliant device are blocked with COMPLIANCE_STATE_STALE (fail closed)")
	fs.StringVar(&f.emergency, "access-emergency-accounts", "", "comma-separated user ids of emergency-access (break-glass) accounts, guarded like users marked emergency_access: enabling a policy that could block one fails")
	fs.DurationVar(&f.signInRetention, "access-signin-retention", DefaultSignInRetention, "sign-ins older than this are deleted (checked hourly)")
	fs.Int64Var(&f.retention, "access-retention", DefaultRetention, "session events kept for WatchSessionEvents replay (0 keeps all); older start revisions get OUT_OF_RANGE")
	fs.DurationVar(&f.progressInterval, "access-progress-interval", DefaultProgressInterval, "idle interval between progress messages on WatchSessionEvents streams")
	fs.IntVar(&f.signInBuffer, "access-signin-buffer", 65536, "sign-ins queued for the batched writer; when full, sign-ins are dropped and counted (condaccess.access.signins.dropped) rather than slowing decisions")
	fs.DurationVar(&f.sessionIdle, "access-session-idle-timeout", 8*time.Hour, "a session not used for this long is forgotten; the next allowed access opens a new one")
	fs.StringVar(&f.synchronous, "access-sqlite-synchronous", "FULL", "SQLite synchronous setting of the access store: FULL or NORMAL")
	fs.StringVar(&f.headers.User, "access-authz-user-header", accessgrpc.DefaultHeaders.User, "request header with the user id (Envoy ext_authz and GET /authz)")
	fs.StringVar(&f.headers.Device, "access-authz-device-header", accessgrpc.DefaultHeaders.Device, "request header with the device id (Envoy ext_authz and GET /authz)")
	fs.StringVar(&f.headers.Application, "access-authz-application-header", accessgrpc.DefaultHeaders.Application, "request header with the application id (Envoy ext_authz and GET /authz)")
	fs.StringVar(&f.headers.MFA, "access-authz-mfa-header", accessgrpc.DefaultHeaders.MFA, "request header whose value true/1 says MFA was done, read only where user headers are trusted (empty: never)")
	fs.Func("oidc-issuer", "OIDC issuer URL whose tokens the enforcement points accept (repeatable, or comma-separated); discovery and JWKS are fetched and cached, keys rotate without a restart", func(v string) error {
		f.oidcIssuers = append(f.oidcIssuers, splitList(v)...)
		return nil
	})
	fs.StringVar(&f.oidcAudience, "oidc-audience", "", "required aud of OIDC tokens (required with --oidc-issuer)")
	fs.StringVar(&f.oidcUserClaim, "oidc-user-claim", edgeid.DefaultUserClaim, "token claim naming the user: a directory user's external_id, or the user id of a user that has no external_id (an external_id wins; a user with one is never matched by its user id)")
	fs.StringVar(&f.oidcGroupsClaim, "oidc-groups-claim", "", "token claim with the user's groups (console sign-in roles; with --access-token-groups also decisions)")
	fs.BoolVar(&f.tokenGroups, "access-token-groups", false, "count the groups of a verified token's --oidc-groups-claim (directory group ids, with the groups enclosing them) for policies' include_groups at the enforcement points; never for exclude_groups. Off: policies see directory groups only")
	fs.StringVar(&f.oidcMFAMethods, "oidc-mfa-methods", strings.Join(edgeid.DefaultMFAMethods, ","), "amr values that satisfy GRANT_CONTROL_MFA")
	fs.StringVar(&f.pomeriumJWKS, "pomerium-jwks-url", "", "JWKS URL that verifies Pomerium's X-Pomerium-Jwt-Assertion (empty: not accepted)")
	fs.StringVar(&f.pomeriumAud, "pomerium-audience", "", "comma-separated accepted aud values of Pomerium assertions: the hosts of the routes this enforcement point protects (required with --pomerium-jwks-url)")
	fs.BoolVar(&f.trustHeaders, "access-trust-headers", false, "let authenticated enforcement points assert x-user-id / x-device-id / x-mfa-done when they forward no token or certificate (recorded as PROOF_ASSERTED_BY_CALLER); development mode always does")
	fs.IntVar(&f.trustedHops, "access-trusted-proxy-hops", 0, "X-Forwarded-For entries, counted from the right, appended by trusted proxies: the client IP is the entry that many places from the right of XFF+peer (0: the connection's peer); at Envoy Check, >0 reads x-envoy-external-address")
	fs.StringVar(&f.certHeader, "access-cert-header", accessgrpc.DefaultCertHeader, "/authz header with the device certificate the proxy verified (URL-encoded PEM, nginx $ssl_client_escaped_cert)")
	fs.StringVar(&f.blockedDetail, "blocked-page-detail", "category", "what the end user's /blocked page shows: minimal (blocked or restored), category (also the device id and the kind of problem), full (also the application's name); never policy names or reasons")
	fs.StringVar(&f.helpURL, "access-help-url", "", "help page linked from the end user's 403 page as URL?ref=<sign-in id>; empty: the console's end-user page on the HTTP address (<scheme>://<--http-addr>/blocked), if one is served")
}

// edge builds the enforcement points' configuration.
func (f *Factory) edge(env suite.Env, blockedKey func() ([]byte, error)) (accessgrpc.Edge, error) {
	e := accessgrpc.Edge{Dev: env.DevMode, TrustHeaders: f.trustHeaders, TrustedHops: f.trustedHops, CertHeader: f.certHeader, HelpURL: f.helpURL, ConsoleURL: env.ConsoleURL}
	if f.trustedHops < 0 {
		return e, fmt.Errorf("--access-trusted-proxy-hops must not be negative")
	}
	if f.tokenGroups && f.oidcGroupsClaim == "" {
		return e, fmt.Errorf("--access-token-groups needs --oidc-groups-claim")
	}
	if len(f.oidcIssuers) > 0 || f.pomeriumJWKS != "" {
		methods := splitList(f.oidcMFAMethods)
		groups := ""
		if f.tokenGroups {
			groups = f.oidcGroupsClaim
		}
		tv, err := edgeid.NewTokenVerifier(edgeid.TokenConfig{Issuers: f.oidcIssuers, Audience: f.oidcAudience, UserClaim: f.oidcUserClaim,
			GroupsClaim: groups, MFAMethods: methods, PomeriumJWKSURL: f.pomeriumJWKS, PomeriumAudiences: splitList(f.pomeriumAud)})
		if err != nil {
			return e, fmt.Errorf("--oidc-issuer/--pomerium-jwks-url: %w", err)
		}
		e.Tokens = tv
	}
	if env.DeviceCAFile != "" {
		// Forwarded device certificates are checked like the suite's own callers:
		// against the device CA and the process's revocation set.
		var revocations auth.RevocationChecker
		if env.Revocations != nil {
			revocations = env.Revocations
		}
		v, err := edgeid.NewX509DeviceVerifier(env.DeviceCAFile, revocations, nil)
		if err != nil {
			return e, fmt.Errorf("--device-ca-cert: %w", err)
		}
		e.Devices = edgeid.NewDeviceCerts(v)
	}
	switch f.blockedDetail {
	case "minimal":
		e.BlockedDetail = accessv1.BlockedDetail_BLOCKED_DETAIL_MINIMAL
	case "category", "":
		e.BlockedDetail = accessv1.BlockedDetail_BLOCKED_DETAIL_CATEGORY
	case "full":
		e.BlockedDetail = accessv1.BlockedDetail_BLOCKED_DETAIL_FULL
	default:
		return e, fmt.Errorf("--blocked-page-detail %q: want minimal, category or full", f.blockedDetail)
	}
	// The end-user page's references are sealed with a stored key, so links
	// survive a restart; they expire with the sign-in log.
	key, err := blockedKey()
	if err != nil {
		return e, fmt.Errorf("blocked-page key: %w", err)
	}
	ttl := f.signInRetention
	if ttl <= 0 {
		ttl = DefaultSignInRetention
	}
	if e.BlockedRefs, err = accesscore.NewBlockedRefs(key, ttl); err != nil {
		return e, err
	}
	return e, nil
}

// New implements suite.Factory: it opens <DataDir>/access.db (or the schema
// access of env.DatabaseURL when set), loads the
// directory, policies, device compliance and sessions, and dials the
// compliance service for its event feed.
func (f *Factory) New(ctx context.Context, env suite.Env) (suite.Service, error) {
	if !f.set {
		f.RegisterFlags(flag.NewFlagSet("access", flag.ContinueOnError))
	}
	if f.stalenessBound <= 0 {
		return nil, fmt.Errorf("--access-staleness-bound must be positive")
	}
	if f.retention < 0 {
		return nil, fmt.Errorf("--access-retention must not be negative")
	}
	var st *accessstore.Store
	var err error
	// The end-user page's references are sealed with a key every replica shares:
	// kept in the data directory, or in the database on PostgreSQL.
	blockedKey := func() ([]byte, error) {
		return accesscore.LoadOrCreateBlockedRefKey(filepath.Join(env.DataDir, "blocked-ref.key"))
	}
	if env.DatabaseURL != "" {
		blockedKey = func() ([]byte, error) { return st.SharedKey(ctx, "blocked-ref") }
		st, err = accessstore.OpenPG(ctx, accessstore.PGOptions{
			URL: env.DatabaseURL, EventRetention: f.retention, ProgressInterval: f.progressInterval,
			RequireFence: true, Logger: env.Logger,
		})
	} else {
		st, err = accessstore.Open(ctx, accessstore.Options{
			Path: filepath.Join(env.DataDir, "access.db"), EventRetention: f.retention,
			ProgressInterval: f.progressInterval, Synchronous: f.synchronous, Logger: env.Logger,
		})
	}
	if err != nil {
		return nil, err
	}
	edge, err := f.edge(env, blockedKey)
	if err != nil {
		st.Close()
		return nil, err
	}
	emergency := splitList(f.emergency)
	m := &metrics{}
	svc, err := accesscore.New(ctx, accesscore.Config{
		Store: st, Logger: env.Logger, EmergencyAccounts: emergency, StalenessBound: f.stalenessBound,
		SignInRetention: f.signInRetention, SignInBuffer: f.signInBuffer, SessionIdleTimeout: f.sessionIdle, EncodeSignIn: accessgrpc.EncodeSignIn, Metrics: m,
		FeedHealth: healthOf(env), FeedHealthName: accessv1.AccessService_ServiceDesc.ServiceName,
		Revocations: env.Revocations, LeaderCleanup: env.DatabaseURL != "",
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	s := &service{store: st, svc: svc, srv: accessgrpc.New(svc, f.headers), log: env.Logger}
	if env.DatabaseURL != "" {
		s.lease = st.Lease(lease.PGOptions{Name: ConsumerLease, Duration: env.LeaseDuration, Logger: env.Logger})
	}
	s.srv.SetImportBatch(f.importBatch)
	s.srv.SetEdge(edge)
	if !edge.Dev && edge.Tokens == nil && !edge.TrustHeaders {
		env.Logger.Warn("no --oidc-issuer, --pomerium-jwks-url or --access-trust-headers: every /authz and Check request is blocked with USER_TOKEN_MISSING")
	}
	if env.AuthzMux != nil {
		env.AuthzMux.Handle("/authz", s.srv.AuthzHandler())
	}
	if err := m.register(svc); err != nil {
		env.Logger.Warn("access metrics not registered", "err", err)
	}
	if env.HTTPMux != nil {
		env.HTTPMux.Handle("/authz", s.srv.AuthzHandler())
		env.HTTPMux.Handle("/access/status", auth.RequireHTTPRoles(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fs := svc.FeedStatus()
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{
				"compliance_feed": map[string]any{
					"running": fs.Running, "stale": fs.Stale, "lag_seconds": fs.Lag.Seconds(),
					"staleness_bound_seconds": fs.Bound.Seconds(), "revision": fs.Revision,
					"risk_as_of": fs.RiskAsOf, "stuck": fs.Consumer.Stuck, "stuck_revision": fs.Consumer.StuckRevision,
					"stuck_cause": fs.Consumer.StuckCause,
				},
				"policy_snapshot_version": svc.Snapshot().Version(),
				"sign_ins":                map[string]any{"written": svc.Recorder().Written(), "dropped": svc.Recorder().Dropped()},
			})
		}), commonv1.Role_ROLE_READER))
	}
	if env.Peers.Compliance != "" && env.Dial != nil {
		conn, err := env.Dial(env.Peers.Compliance)
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("dial compliance service %s: %w", env.Peers.Compliance, err)
		}
		s.conn = conn
	} else {
		env.Logger.Warn("no compliance service address: device compliance is never confirmed, so apps that require a compliant device are blocked (COMPLIANCE_STATE_STALE)")
	}
	if env.Peers.Remediation != "" && env.Dial != nil {
		// The end user's page says whether a threat is being removed, from the
		// remediation service's per-device state.
		conn, err := env.Dial(env.Peers.Remediation)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("dial remediation service %s: %w", env.Peers.Remediation, err)
		}
		s.remediationConn = conn
	}
	return s, nil
}

// ConsumerLease is the lease whose holder, among access replicas on PostgreSQL,
// consumes the compliance feed and deletes sign-ins past retention.
const ConsumerLease = "access-consumer"

type service struct {
	store *accessstore.Store
	svc   *accesscore.Service
	srv   *accessgrpc.Server
	conn  *grpc.ClientConn
	// lease is set on PostgreSQL: the compliance feed and the sign-in retention
	// run on its holder only, every cursor write fenced by its token.
	lease lease.Lease
	log   *slog.Logger
	// remediationConn feeds the end user's page whether remediation runs (nil: unknown).
	remediationConn *grpc.ClientConn
}

// ReconcileInterval is how often the compliance feed's leader revokes stored
// sessions of noncompliant devices that are still ACTIVE (accesscore.ReconcileSessions).
const ReconcileInterval = 2 * time.Second

func (s *service) Register(r grpc.ServiceRegistrar) { accessgrpc.Register(r, s.srv) }

// Run follows the compliance feed and writes sign-ins until ctx ends. On
// PostgreSQL every replica also follows the other replicas' changes, and the
// feed runs on the lease holder only.
func (s *service) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if s.lease == nil {
			if s.conn != nil {
				s.svc.RunFeed(ctx, compliancev1.NewComplianceServiceClient(s.conn), s.conn.ResetConnectBackoff)
			}
			return
		}
		followed := make(chan struct{})
		go func() { defer close(followed); s.svc.Follow(ctx) }()
		defer func() { <-followed }()
		_ = s.lease.Run(ctx, func(ctx context.Context, token int64) error {
			s.log.Info("access: leading the compliance feed", "lease", ConsumerLease, "token", token)
			ctx = accessstore.Fenced(ctx, s.lease, token)
			cleaned := make(chan struct{})
			go func() { defer close(cleaned); s.svc.RunCleanup(ctx) }()
			reconciled := make(chan struct{})
			go func() { defer close(reconciled); s.svc.RunReconcile(ctx, ReconcileInterval) }()
			defer func() { <-reconciled }()
			if s.conn != nil {
				s.svc.RunFeed(ctx, compliancev1.NewComplianceServiceClient(s.conn), s.conn.ResetConnectBackoff)
			}
			<-ctx.Done()
			<-cleaned
			return nil
		})
	}()
	remDone := make(chan struct{})
	go func() {
		defer close(remDone)
		if s.remediationConn != nil {
			s.svc.RunRemediationFeed(ctx, remediationv1.NewRemediationServiceClient(s.remediationConn), s.remediationConn.ResetConnectBackoff)
		}
	}()
	err := s.svc.Run(ctx)
	<-done
	<-remDone
	return err
}

func (s *service) Close() error {
	if s.conn != nil {
		s.conn.Close()
	}
	if s.remediationConn != nil {
		s.remediationConn.Close()
	}
	return s.store.Close()
}

// metrics counts decisions on the hot path with atomics only; the OTel
// instruments observe them.
type metrics struct {
	allow, block, dropped atomic.Int64
}

func (m *metrics) Decision(d pe.Decision) {
	if d == pe.DecisionAllow {
		m.allow.Add(1)
	} else {
		m.block.Add(1)
	}
}

func (m *metrics) DroppedSignIn() { m.dropped.Add(1) }

func (m *metrics) register(svc *accesscore.Service) error {
	meter := otel.Meter("condaccess/access")
	decisions, err := meter.Int64ObservableCounter("condaccess.access.decisions", metric.WithDescription("access decisions, by decision"))
	if err != nil {
		return err
	}
	dropped, err := meter.Int64ObservableCounter("condaccess.access.signins.dropped", metric.WithDescription("sign-ins dropped because the sign-in writer's queue was full"))
	if err != nil {
		return err
	}
	lag, err := meter.Float64ObservableGauge("condaccess.access.compliance_feed.lag", metric.WithUnit("s"), metric.WithDescription("time since the compliance feed last confirmed device states"))
	if err != nil {
		return err
	}
	bound, err := meter.Float64ObservableGauge("condaccess.access.compliance_feed.staleness_bound", metric.WithUnit("s"), metric.WithDescription("feed lag beyond which compliant-device decisions fail closed"))
	if err != nil {
		return err
	}
	stale, err := meter.Int64ObservableGauge("condaccess.access.compliance_feed.stale", metric.WithDescription("1 when the compliance feed is stale (decisions needing a compliant device fail closed)"))
	if err != nil {
		return err
	}
	allowAttr := metric.WithAttributes(attribute.String("decision", "allow"))
	blockAttr := metric.WithAttributes(attribute.String("decision", "block"))
	_, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(decisions, m.allow.Load(), allowAttr)
		o.ObserveInt64(decisions, m.block.Load(), blockAttr)
		o.ObserveInt64(dropped, m.dropped.Load())
		fs := svc.FeedStatus()
		o.ObserveFloat64(lag, fs.Lag.Seconds())
		o.ObserveFloat64(bound, fs.Bound.Seconds())
		v := int64(0)
		if fs.Stale {
			v = 1
		}
		o.ObserveInt64(stale, v)
		return nil
	}, decisions, dropped, lag, bound, stale)
	return err
}

// Audit implements suite.Audited (on SQLite or PostgreSQL).
func (s *service) Audit() *audit.Log { return s.store.Audit() }

// healthOf is env.Health as a consumer.HealthSetter (nil when there is none).
func healthOf(env suite.Env) consumer.HealthSetter {
	if env.Health == nil {
		return nil
	}
	return env.Health
}

// splitList splits a comma-separated flag value, dropping empty entries.
func splitList(v string) []string {
	var out []string
	for _, x := range strings.Split(v, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}
