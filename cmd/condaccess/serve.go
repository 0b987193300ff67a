package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/audit/auditgrpc"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/httpface"
	"github.com/condaccess/condaccess/internal/lease"
	"github.com/condaccess/condaccess/internal/peers"
	"github.com/condaccess/condaccess/internal/server"
	"github.com/condaccess/condaccess/internal/ssf"
	"github.com/condaccess/condaccess/internal/suite"
	"github.com/condaccess/condaccess/internal/telemetry"
	"github.com/condaccess/condaccess/services/access/accessapp"
	"github.com/condaccess/condaccess/services/compliance/complianceapp"
	"github.com/condaccess/condaccess/services/remediation/remediationapp"
	"github.com/condaccess/condaccess/services/risk/riskapp"
)

func init() {
	register("serve", "run the condaccess services (all four by default)", runServe)
}

// factories lists every service the binary can run, in start order.
func factories() []suite.Factory {
	return []suite.Factory{&riskapp.Factory{}, &complianceapp.Factory{}, &accessapp.Factory{}, &remediationapp.Factory{}}
}

// peerNeeds says which peers a service cannot work without when they run apart.
var peerNeeds = map[string][]string{
	"compliance":  {"risk"},
	"access":      {"compliance"},
	"remediation": {"risk"},
}

// DefaultAuditRetention is --audit-retention's default: 365 days.
const DefaultAuditRetention = 365 * 24 * time.Hour

// serveOptions are the flags of serve.
type serveOptions struct {
	grpcAddr, httpAddr, dataDir, services string
	ssf                                   ssf.Options
	ssfMode                               string // --ssf: auto, on, off (serve_ssf.go)
	databaseURL                           string
	leaseDuration                         time.Duration
	peers                                 suite.Peers
	tlsCert, tlsKey, tlsClientCA          string
	deviceCACert, deviceCAKey             string
	authzAddr                             string
	logFormat, logLevel                   string
	stopTimeout                           time.Duration
	auditRetention                        time.Duration
	factories                             []suite.Factory
	limits                                *limitOptions // nil: the defaults
	// consoleClientID, consoleClientSecret, consoleRoleMap: the console's OIDC sign-in.
	consoleClientID, consoleClientSecret, consoleRoleMap string
	// consoleSessionKeyFile is the key that seals console sessions into their cookie.
	consoleSessionKeyFile string
}

func (o *serveOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.grpcAddr, "grpc-addr", "127.0.0.1:7400", "gRPC listen address")
	fs.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:7480", "HTTP listen address (console, Connect/gRPC-Web/REST, /metrics, /authz, /access/status); TLS with optional client certificates when --tls-cert is set; empty disables")
	fs.StringVar(&o.dataDir, "data-dir", "./data", "data directory (each service keeps its embedded store in a subfolder)")
	fs.StringVar(&o.databaseURL, "database-url", "", "PostgreSQL URL (postgres://...) of the production store: every service keeps its store in its own schema (risk, compliance, access, remediation); empty keeps every store embedded in --data-dir")
	fs.DurationVar(&o.leaseDuration, "lease-duration", lease.DefaultDuration, "with --database-url: how long a replica leads once-only background work (risk: event compaction; compliance: its risk consumer, sweeps, deadlines, compaction; access: the compliance feed and sign-in retention; remediation: its risk event consumer, timers, retries and compaction; ssf: the feeds and push delivery) without renewing; another replica takes over within it")
	fs.StringVar(&o.services, "services", "risk,compliance,access,remediation", "comma-separated services to run in this process")
	fs.StringVar(&o.peers.Risk, "risk-addr", "", "gRPC address of the risk service when it runs apart: "+peers.Syntax+" (replicas, balanced round robin over those whose health is SERVING)")
	fs.StringVar(&o.peers.Compliance, "compliance-addr", "", "gRPC address of the compliance service when it runs apart: "+peers.Syntax+" (replicas, balanced round robin over those whose health is SERVING)")
	fs.StringVar(&o.peers.Access, "access-addr", "", "gRPC address of the access service when it runs apart: "+peers.Syntax+" (replicas, balanced round robin over those whose health is SERVING)")
	fs.StringVar(&o.peers.Remediation, "remediation-addr", "", "gRPC address of the remediation service when it runs apart: "+peers.Syntax+" (replicas, balanced round robin over those whose health is SERVING)")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate (server, and client for peers); enables mutual TLS")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&o.tlsClientCA, "tls-client-ca", "", "PEM CA bundle that client and peer certificates chain to")
	fs.StringVar(&o.deviceCACert, "device-ca-cert", "", "PEM device CA certificate: client certificates chaining to it are device identities only (default: generated into the data dir)")
	fs.StringVar(&o.deviceCAKey, "device-ca-key", "", "PEM private key of --device-ca-cert (the compliance service signs device certificates with it)")
	fs.StringVar(&o.authzAddr, "authz-addr", "", "extra listener for /authz only, unix:/path (its callers count as enforcement points: guard it with the socket's file permissions)")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&o.consoleClientID, "console-oidc-client-id", "", "OIDC client id of the console at --oidc-issuer (its first issuer): enables console sign-in (authorization code with PKCE) outside development mode; register https://<--http-addr>/auth/callback as its redirect URL")
	fs.StringVar(&o.consoleClientSecret, "console-oidc-client-secret", "", "OIDC client secret of the console (or CONDACCESS_CONSOLE_OIDC_CLIENT_SECRET); empty for a public client")
	fs.StringVar(&o.consoleSessionKeyFile, "console-session-key-file", "", "32-byte key file that seals console sessions into their cookie (AES-256-GCM), created when missing; give every replica the same file so a session works on any of them and survives restarts (default <--data-dir>/console-session.key)")
	fs.StringVar(&o.consoleRoleMap, "console-role-map", "", "GROUP=ROLE,... : the roles a console session gets from the --oidc-groups-claim groups (reader, policy-admin, secops-admin); no group, no role")
	fs.DurationVar(&o.stopTimeout, "stop-timeout", 10*time.Second, "graceful stop deadline before a hard stop")
	fs.DurationVar(&o.auditRetention, "audit-retention", DefaultAuditRetention, "how long audit events are kept (checked hourly; what is removed is logged and counted); 0 keeps them forever")
	o.limits = &limitOptions{}
	o.limits.register(fs)
	o.factories = factories()
	for _, f := range o.factories {
		f.RegisterFlags(fs)
	}
	o.ssf.RegisterFlags(fs)
	fs.StringVar(&o.ssfMode, "ssf", "auto", "run the Shared Signals transmitter and receiver on the HTTP address: on, off, or auto (on); with --database-url every replica serves it from schema ssf and the holder of the ssf lease follows the feeds and pushes")
}

// applyEnv sets every flag not given on the command line from CONDACCESS_<NAME>, where
// NAME is the flag name in upper snake case (--risk-addr: CONDACCESS_RISK_ADDR).
func applyEnv(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		env := "CONDACCESS_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", env, err))
			}
		}
	})
	return errors.Join(errs...)
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("%w: --log-level: %v", errUsage, err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler
	switch format {
	case "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, fmt.Errorf("%w: --log-format must be text or json, not %q", errUsage, format)
	}
	return slog.New(telemetry.NewLogHandler(h)), nil
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o serveOptions
	o.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if err := applyEnv(fs); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	logger, err := newLogger(stderr, o.logFormat, o.logLevel)
	if err != nil {
		return err
	}
	s, err := startSuite(ctx, o, logger)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
		return s.Stop()
	case err := <-s.Err():
		logger.Error("shutting down after a failure", "err", err)
		return errors.Join(err, s.Stop())
	}
}

// runningSuite is a started set of services behind one gRPC server.
type runningSuite struct {
	logger   *slog.Logger
	tel      *telemetry.Telemetry
	srv      *server.Server
	httpSrv  *http.Server
	authzSrv *http.Server
	grpcAddr string
	httpAddr string
	// consoleURL is the console's base URL on the HTTP address, set once it listens.
	consoleURL atomic.Pointer[string]
	services   []suite.Service
	names      []string
	// auditLogs are the audit logs of services, served by AuditService.
	auditLogs []*audit.Log
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	errs      chan error
	conns     []*grpc.ClientConn
	connMu    sync.Mutex
	timeout   time.Duration
	stopOnce  sync.Once
	stopErr   error
	// closeConsole closes the console sessions' database pool (--database-url).
	closeConsole func() error
}

// GRPCAddr is the address the suite's gRPC server listens on.
func (s *runningSuite) GRPCAddr() string { return s.grpcAddr }

// HTTPAddr is the address of the HTTP server (metrics, forward-auth), if any.
func (s *runningSuite) HTTPAddr() string { return s.httpAddr }

// Err reports the first background failure of a service, if any.
func (s *runningSuite) Err() <-chan error { return s.errs }

func parseServices(list string, all []suite.Factory) ([]suite.Factory, error) {
	var picked []suite.Factory
	seen := map[string]bool{}
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" || seen[name] {
			continue
		}
		seen[name] = true
		i := slices.IndexFunc(all, func(f suite.Factory) bool { return f.Name() == name })
		if i < 0 {
			return nil, fmt.Errorf("%w: --services: unknown service %q (want risk, compliance, access, remediation)", errUsage, name)
		}
		picked = append(picked, all[i])
	}
	if len(picked) == 0 {
		return nil, fmt.Errorf("%w: --services names no service", errUsage)
	}
	// Keep the canonical start order.
	slices.SortStableFunc(picked, func(a, b suite.Factory) int {
		return slices.IndexFunc(all, func(f suite.Factory) bool { return f == a }) -
			slices.IndexFunc(all, func(f suite.Factory) bool { return f == b })
	})
	return picked, nil
}

// startSuite starts the services named in o behind one gRPC server (and the HTTP
// server), and returns once they serve.
func startSuite(ctx context.Context, o serveOptions, logger *slog.Logger) (_ *runningSuite, err error) {
	if o.factories == nil {
		// Not built by register: give every service its flag defaults.
		o.factories = factories()
		fs := flag.NewFlagSet("defaults", flag.ContinueOnError)
		for _, f := range o.factories {
			f.RegisterFlags(fs)
		}
	}
	picked, err := parseServices(o.services, o.factories)
	if err != nil {
		return nil, err
	}
	if o.auditRetention < 0 {
		return nil, fmt.Errorf("%w: --audit-retention must not be negative (0 keeps audit events forever)", errUsage)
	}
	tlsOn := o.tlsCert != "" || o.tlsKey != "" || o.tlsClientCA != ""
	if tlsOn && (o.tlsCert == "" || o.tlsKey == "" || o.tlsClientCA == "") {
		return nil, fmt.Errorf("%w: mutual TLS needs --tls-cert, --tls-key and --tls-client-ca together", errUsage)
	}
	// Before the device CA: with --database-url it is read from the database.
	if o.leaseDuration < 0 {
		return nil, fmt.Errorf("%w: --lease-duration must not be negative (0 means the default, %v)", errUsage, lease.DefaultDuration)
	}
	names := make([]string, len(picked))
	for i, f := range picked {
		names[i] = f.Name()
		if _, ok := f.(suite.PostgresReady); o.databaseURL != "" && !ok {
			return nil, fmt.Errorf("%w: --database-url: the %s service is not yet supported on PostgreSQL; run it in another process without --database-url", errUsage, f.Name())
		}
	}
	deviceCA, deviceKey, err := deviceCAFiles(ctx, o, slices.ContainsFunc(picked, func(f suite.Factory) bool { return f.Name() == "compliance" }), logger)
	if err != nil {
		return nil, err
	}
	revocations := auth.NewRevocations()
	// Device certificates are accepted only where revocations are followed (the
	// compliance service runs here or --compliance-addr names it): fail closed.
	trustedDeviceCA := deviceCA
	if o.peers.Compliance == "" && !slices.ContainsFunc(picked, func(f suite.Factory) bool { return f.Name() == "compliance" }) {
		trustedDeviceCA = ""
		logger.Warn("no compliance service address: this process cannot follow device revocations, so it accepts no device certificate (set --compliance-addr)")
	}
	// No device is accepted before the revocation feed has listed the identities.
	revocations.SetCurrent(false)
	authCfg := auth.Config{Insecure: !tlsOn, CertFile: o.tlsCert, KeyFile: o.tlsKey, ClientCAFile: o.tlsClientCA,
		DeviceCAFile: trustedDeviceCA, Revocations: revocations}
	if err := auth.CheckListenAddr(o.grpcAddr, authCfg); err != nil {
		return nil, fmt.Errorf("%w: --grpc-addr: %v", errUsage, err)
	}
	if o.authzAddr != "" && !strings.HasPrefix(o.authzAddr, "unix:") {
		return nil, fmt.Errorf("%w: --authz-addr must be unix:/path", errUsage)
	}
	if o.httpAddr != "" && !tlsOn && !auth.IsLoopback(o.httpAddr) {
		return nil, fmt.Errorf("%w: --http-addr %s is not loopback; without TLS configured the HTTP endpoints (forward-auth, metrics) stay on loopback", errUsage, o.httpAddr)
	}
	if !tlsOn {
		logger.Warn(auth.InsecureWarning)
	}
	ssfOn, err := ssfEnabled(o)
	if err != nil {
		return nil, err
	}
	if err := checkPeerFlags(o.peers, tlsOn); err != nil {
		return nil, err
	}
	for _, n := range names {
		for _, need := range peerNeeds[n] {
			if !slices.Contains(names, need) && peerAddr(o.peers, need) == "" {
				return nil, fmt.Errorf("%w: %s needs --%s-addr when %s does not run in this process", errUsage, n, need, need)
			}
		}
	}

	s := &runningSuite{logger: logger, names: names, errs: make(chan error, len(picked)), timeout: o.stopTimeout}
	defer func() {
		if err != nil {
			_ = s.Stop()
		}
	}()

	if s.tel, err = telemetry.Setup(ctx, "condaccess-"+strings.Join(names, "-"), logger); err != nil {
		return nil, err
	}
	srvCfg := server.Config{
		Name:                "condaccess",
		Logger:              logger,
		Auth:                authCfg,
		ExtraMethodRoles:    map[string][]commonv1.Role{"/envoy.service.auth.v3.Authorization/Check": {commonv1.Role_ROLE_ENFORCEMENT_POINT}},
		GracefulStopTimeout: o.stopTimeout,
	}
	limits := defaultLimits()
	if o.limits != nil {
		limits = *o.limits
	}
	if err := limits.apply(&srvCfg); err != nil {
		return nil, err
	}
	s.srv, err = server.New(srvCfg)
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", o.grpcAddr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", o.grpcAddr, err)
	}
	s.grpcAddr = lis.Addr().String()

	// Local services are peers at our own address: they still talk over gRPC.
	addrs := o.peers
	for _, n := range names {
		setPeerAddr(&addrs, n, selfAddr(s.grpcAddr))
	}
	dialOpts, err := server.DialOptions(auth.ClientConfig{
		Insecure: !tlsOn, CAFile: o.tlsClientCA, CertFile: o.tlsCert, KeyFile: o.tlsKey,
	})
	if err != nil {
		lis.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", auth.RequireHTTPRoles(s.tel.MetricsHandler(), commonv1.Role_ROLE_READER))
	var authzMux *http.ServeMux
	if o.authzAddr != "" {
		authzMux = http.NewServeMux()
	}
	env := suite.Env{
		Peers: addrs,
		Dial: func(addr string) (*grpc.ClientConn, error) {
			conn, err := peers.Dial(addr, dialOpts...)
			if err != nil {
				return nil, err
			}
			s.connMu.Lock()
			s.conns = append(s.conns, conn)
			s.connMu.Unlock()
			return conn, nil
		},
		HTTPMux:            mux,
		Health:             s.srv.Health(),
		DeviceCAFile:       deviceCA,
		DeviceCAKeyFile:    deviceKey,
		ServerCABundleFile: o.tlsClientCA,
		Revocations:        revocations,
		DevMode:            !tlsOn,
		AuthzMux:           authzMux,
		ConsoleURL: func() string {
			if a := s.consoleURL.Load(); a != nil {
				return *a
			}
			return ""
		},
	}
	for _, f := range picked {
		e := env
		e.Logger = logger.With("service", f.Name())
		e.DataDir = filepath.Join(o.dataDir, f.Name())
		e.DatabaseURL = o.databaseURL
		e.LeaseDuration = o.leaseDuration
		if err := os.MkdirAll(e.DataDir, 0o700); err != nil {
			lis.Close()
			return nil, fmt.Errorf("%s: data dir: %w", f.Name(), err)
		}
		svc, err := f.New(ctx, e)
		if err != nil {
			lis.Close()
			return nil, fmt.Errorf("%s: %w", f.Name(), err)
		}
		s.services = append(s.services, svc)
		svc.Register(s.srv.Registrar())
		if a, ok := svc.(suite.Audited); ok {
			s.auditLogs = append(s.auditLogs, a.Audit())
		}
	}
	// One AuditService over the audit logs of the services in this process.
	auditSrv := auditgrpc.New(s.auditLogs...)
	auditgrpc.Register(s.srv.Registrar(), auditSrv)
	// The console and the Connect/gRPC-Web/REST face of every RPC, over the same server.
	if err := httpface.Mount(mux, httpface.Config{GRPC: s.srv.GRPC(), Insecure: authCfg.Insecure, HoldCall: s.srv.HoldCall}); err != nil {
		lis.Close()
		return nil, err
	}

	serveHTTP, closeHTTP := func() {}, func() {}
	if o.httpAddr != "" {
		hl, err := net.Listen("tcp", o.httpAddr)
		if err != nil {
			lis.Close()
			return nil, fmt.Errorf("listen %s: %w", o.httpAddr, err)
		}
		s.httpAddr = hl.Addr().String()
		base := "http://" + s.httpAddr
		if tlsOn {
			base = "https://" + s.httpAddr
		}
		s.consoleURL.Store(&base)
		handler, closeConsole, err := consoleLogin(ctx, o, tlsOn, base, mux, logger)
		if err != nil {
			hl.Close()
			lis.Close()
			return nil, err
		}
		s.closeConsole = closeConsole
		s.httpSrv = server.NewHTTPServer(s.httpAddr, auth.HTTPIdentity(!tlsOn, handler), logger)
		if tlsOn {
			if s.httpSrv.TLSConfig, err = auth.HTTPServerTLS(authCfg); err != nil {
				hl.Close()
				lis.Close()
				return nil, err
			}
			hl = tls.NewListener(hl, s.httpSrv.TLSConfig)
		}
		// Served only once everything is mounted on mux (the Shared Signals endpoints
		// below), so that no request meets a half-built mux (404/405 on /ssf/*).
		serveHTTP = func() {
			go func() {
				if err := s.httpSrv.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
					logger.Error("http server failed", "err", err)
				}
			}()
		}
		closeHTTP = func() { hl.Close() }
	}
	if authzMux != nil {
		path := strings.TrimPrefix(o.authzAddr, "unix:")
		_ = os.Remove(path)
		ul, err := net.Listen("unix", path)
		if err != nil {
			closeHTTP()
			lis.Close()
			return nil, fmt.Errorf("listen %s: %w", o.authzAddr, err)
		}
		if err := os.Chmod(path, 0o660); err != nil {
			ul.Close()
			closeHTTP()
			lis.Close()
			return nil, err
		}
		ep := auth.Identity{Subject: "unix", Roles: []commonv1.Role{commonv1.Role_ROLE_ENFORCEMENT_POINT}}
		s.authzSrv = server.NewHTTPServer(o.authzAddr, auth.WithIdentity(ep, authzMux), logger)
		go func() {
			if err := s.authzSrv.Serve(ul); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error("authz server failed", "err", err)
			}
		}()
	}
	go func() {
		if err := s.srv.Serve(lis); err != nil {
			s.errs <- err
		}
	}()
	if ssfOn && s.httpAddr != "" { // the Shared Signals transmitter and receiver, on the HTTP mux
		ssfSvc, err := startSSF(ctx, o, env, logger, s.httpAddr)
		if err != nil {
			closeHTTP()
			return nil, err
		}
		s.services, names = append(s.services, ssfSvc), append(names, "ssf")
		if a, ok := ssfSvc.(suite.Audited); ok { // admin certificates' stream changes
			s.auditLogs = append(s.auditLogs, a.Audit())
			auditSrv.Add(a.Audit())
		}
	}
	serveHTTP()

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	if err := s.startRevocationFeed(runCtx, env); err != nil {
		return nil, err
	}
	if o.auditRetention > 0 {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			audit.RunRetention(runCtx, s.auditLogs, o.auditRetention, time.Hour)
		}()
	}
	for i, svc := range s.services {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := svc.Run(runCtx); err != nil && runCtx.Err() == nil {
				logger.Error("service stopped", "service", names[i], "err", err)
				s.errs <- fmt.Errorf("%s: %w", names[i], err)
			}
		}()
	}
	logger.Info("condaccess serving", "services", strings.Join(names, ","), "grpc_addr", s.grpcAddr, "http_addr", s.httpAddr, "data_dir", o.dataDir)
	return s, nil
}

// Stop drains the gRPC server (health NOT_SERVING, graceful stop, hard stop after the
// deadline), stops background work, and closes the stores.
func (s *runningSuite) Stop() error {
	s.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout+5*time.Second)
		defer cancel()
		// Background work (the event consumers, which are clients of this very server
		// when the services share a process) stops first, so that no stream of ours
		// holds the graceful stop; the server then drains its own streams.
		if s.cancel != nil {
			s.cancel()
		}
		if s.srv != nil {
			s.srv.Stop(ctx)
		}
		if s.httpSrv != nil {
			_ = s.httpSrv.Shutdown(ctx)
		}
		if s.authzSrv != nil {
			_ = s.authzSrv.Shutdown(ctx)
		}
		s.wg.Wait()
		s.connMu.Lock()
		for _, c := range s.conns {
			_ = c.Close()
		}
		s.connMu.Unlock()
		var errs []error
		for i := len(s.services) - 1; i >= 0; i-- {
			if err := s.services[i].Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if s.closeConsole != nil {
			errs = append(errs, s.closeConsole())
		}
		if s.tel != nil {
			if err := s.tel.Shutdown(ctx); err != nil {
				s.logger.Warn("telemetry shutdown", "err", err)
			}
		}
		s.stopErr = errors.Join(errs...)
	})
	return s.stopErr
}

// selfAddr is the address this process dials its own services at: the listener's,
// or loopback with its port when it listens on every interface (0.0.0.0, [::]), so
// that the server certificate is verified for 127.0.0.1 or ::1 (which dev-certs names)
// rather than for an address no certificate names.
func selfAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	ip := net.ParseIP(host)
	switch {
	case ip == nil || !ip.IsUnspecified():
		return listen
	case ip.To4() != nil:
		return net.JoinHostPort("127.0.0.1", port)
	}
	return net.JoinHostPort("::1", port)
}

// checkPeerFlags parses every --<service>-addr given: a bad value is a usage error
// naming the flag, and without TLS every replica it names must be on loopback.
func checkPeerFlags(p suite.Peers, tlsOn bool) error {
	for _, name := range auth.ServiceNames {
		v := peerAddr(p, name)
		if v == "" {
			continue
		}
		t, err := peers.Parse(v)
		if err != nil {
			return fmt.Errorf("%w: --%s-addr: %v", errUsage, name, err)
		}
		if !tlsOn && !t.IsLoopback() {
			return fmt.Errorf("%w: --%s-addr %s is not loopback; without TLS configured peers are called only on loopback (set --tls-cert, --tls-key, --tls-client-ca)", errUsage, name, t)
		}
	}
	return nil
}

func peerAddr(p suite.Peers, name string) string {
	switch name {
	case "risk":
		return p.Risk
	case "compliance":
		return p.Compliance
	case "access":
		return p.Access
	case "remediation":
		return p.Remediation
	}
	return ""
}

func setPeerAddr(p *suite.Peers, name, addr string) {
	switch name {
	case "risk":
		p.Risk = addr
	case "compliance":
		p.Compliance = addr
	case "access":
		p.Access = addr
	case "remediation":
		p.Remediation = addr
	}
}
