// Package server builds the gRPC server every condaccess service runs: telemetry, logging, authorization, validation, panic recovery, health and reflection.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"buf.build/go/protovalidate"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	grpcauth "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	grpcprotovalidate "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/protovalidate"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/retry"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/timeout"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/tap"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/audit/auditgrpc"
	"github.com/condaccess/condaccess/internal/auth"
)

// Defaults applied by New.
const (
	DefaultGracefulStopTimeout = 10 * time.Second
	// DefaultMaxRecvMsgSize is the largest request a server decodes. The largest
	// request the protos' caps allow is far smaller (see TestLimitChain).
	DefaultMaxRecvMsgSize = 4 << 20
	// DefaultMaxConcurrentStreams caps the streams (RPCs in flight) per connection.
	DefaultMaxConcurrentStreams = 1000
	// DefaultKeepaliveMinTime is the shortest ping interval a client may use; a client
	// pinging more often is disconnected (GOAWAY too_many_pings).
	DefaultKeepaliveMinTime = 10 * time.Second
	// DefaultClientMaxRecvMsgSize is the largest message a condaccess client accepts.
	// It must be at least the largest response or event any service can emit given
	// the request caps; TestLimitChain derives that bound from the descriptors.
	DefaultClientMaxRecvMsgSize = 64 << 20
	// DefaultClientUnaryTimeout bounds a unary call whose caller set no shorter deadline.
	DefaultClientUnaryTimeout = 30 * time.Second
)

// Config configures New.
type Config struct {
	// Name names the server in logs, e.g. "condaccess".
	Name string
	// Logger receives one line per RPC; nil discards.
	Logger *slog.Logger
	// Auth selects mutual TLS or loopback development mode.
	Auth auth.Config
	// ExtraMethodRoles is merged into Auth.ExtraMethodRoles (see auth.Config).
	ExtraMethodRoles map[string][]commonv1.Role
	// TracerProvider and MeterProvider default to the otel globals.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// GracefulStopTimeout bounds Stop's graceful phase; default 10s.
	GracefulStopTimeout time.Duration
	// MaxRecvMsgSize is the largest request message accepted; default 4 MiB. A larger
	// one is refused with RESOURCE_EXHAUSTED before it is decoded.
	MaxRecvMsgSize int
	// MaxConcurrentStreams caps the RPCs in flight on one connection; default 1000.
	MaxConcurrentStreams uint32
	// KeepaliveMinTime is the shortest client ping interval tolerated; default 10s.
	KeepaliveMinTime time.Duration
	// MaxWatchesPerIdentity caps the Watch… streams one identity holds open; default 64.
	MaxWatchesPerIdentity int
	// RateLimits are per-identity token buckets (e.g. ReportAlert per sensor).
	RateLimits []RateLimit
	// MaxCallsPerIdentity caps one identity's unary calls in flight; default 256, and
	// never more than half of MaxCallsInFlight.
	MaxCallsPerIdentity int
	// MaxCallsInFlight caps the unary calls in flight in the whole server (the
	// services' own calls count but are never refused); default 128 per GOMAXPROCS.
	MaxCallsInFlight int
	// MaxRequestBytesPerIdentity caps the bytes of one identity's unary requests in
	// flight; default 64 MiB.
	MaxRequestBytesPerIdentity int64
}

// Server is a grpc.Server with the condaccess interceptor chain, health and reflection.
type Server struct {
	cfg    Config
	logger *slog.Logger
	grpc   *grpc.Server
	health *health.Server
	stop   sync.Once
	drain  chan struct{} // closed when Stop begins: streams end with UNAVAILABLE
	// watches counts open watch streams per identity.
	watches *watchLimiter
	// httpStrangers counts the HTTP face's calls in flight of callers without an
	// identity (HoldCall).
	httpStrangers *strangers
	// calls counts unary calls and request bytes in flight per identity.
	calls *inflight
}

// OpenWatches returns how many watch streams the identity with subject holds open.
func (s *Server) OpenWatches(subject string) int { return s.watches.Open(subject) }

// New builds a Server. Register services on Registrar(), then call Serve.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.GracefulStopTimeout <= 0 {
		cfg.GracefulStopTimeout = DefaultGracefulStopTimeout
	}
	if cfg.MaxRecvMsgSize <= 0 {
		cfg.MaxRecvMsgSize = DefaultMaxRecvMsgSize
	}
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if cfg.KeepaliveMinTime <= 0 {
		cfg.KeepaliveMinTime = DefaultKeepaliveMinTime
	}
	if cfg.MaxWatchesPerIdentity <= 0 {
		cfg.MaxWatchesPerIdentity = DefaultMaxWatchesPerIdentity
	}
	if cfg.MaxCallsPerIdentity <= 0 {
		cfg.MaxCallsPerIdentity = DefaultMaxCallsPerIdentity
	}
	if cfg.MaxCallsInFlight <= 0 {
		cfg.MaxCallsInFlight = DefaultMaxCallsInFlightPerCPU * runtime.GOMAXPROCS(0)
	}
	if cfg.MaxRequestBytesPerIdentity <= 0 {
		cfg.MaxRequestBytesPerIdentity = DefaultMaxRequestBytesPerIdentity
	}
	authCfg := cfg.Auth
	if len(cfg.ExtraMethodRoles) > 0 {
		merged := maps.Clone(authCfg.ExtraMethodRoles)
		if merged == nil {
			merged = map[string][]commonv1.Role{}
		}
		for m, roles := range cfg.ExtraMethodRoles {
			merged[m] = append(append([]commonv1.Role(nil), merged[m]...), roles...)
		}
		authCfg.ExtraMethodRoles = merged
	}
	creds, err := auth.ServerCredentials(authCfg)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	validator, err := protovalidate.New()
	if err != nil {
		return nil, fmt.Errorf("server: protovalidate: %w", err)
	}
	otelOpts := []otelgrpc.Option{
		// Probes and reflection would drown the traces.
		otelgrpc.WithFilter(filters.None(filters.ServicePrefix("grpc.health."), filters.ServicePrefix("grpc.reflection."))),
	}
	if cfg.TracerProvider != nil {
		otelOpts = append(otelOpts, otelgrpc.WithTracerProvider(cfg.TracerProvider))
	}
	if cfg.MeterProvider != nil {
		otelOpts = append(otelOpts, otelgrpc.WithMeterProvider(cfg.MeterProvider))
	}
	logger := cfg.Logger.With("server", cfg.Name)
	authz := auth.NewAuthorizer(authCfg)

	s := &Server{cfg: cfg, logger: logger, health: health.NewServer(), drain: make(chan struct{}),
		watches: newWatchLimiter(cfg.MaxWatchesPerIdentity), httpStrangers: &strangers{byHost: map[string]int{}, perHostOnly: true}}
	limiter := newRateLimiter(cfg.RateLimits)
	methods := sync.OnceValue(s.methodKinds)
	calls := newInflight(cfg.MaxCallsPerIdentity, cfg.MaxCallsInFlight, cfg.MaxRequestBytesPerIdentity, authz, func(m string) bool { return methods()[m] == kindUnary })
	s.calls = calls
	strangers := refuseStrangers(authCfg.Insecure)
	watchTap := s.watches.tap(authz, func(m string) bool { return methods()[m] == kindWatch })
	rateTap := limiter.tap(authz)
	slogger := slogLogger(logger)
	quiet, loud := selector.MatchFunc(isQuiet), not(isQuiet)
	authenticated := not(isOpen)
	recoverOpt := recovery.WithRecoveryHandlerContext(recoveryHandler(logger))
	// The chain, outermost first: one log line per RPC (with the caller once known),
	// the AIP-193 error shape for validation failures, authentication and the role
	// check (health and reflection selected out), the per-identity limits (calls and
	// bytes in flight, rates), request validation, and panic recovery closest to the
	// handler. Before it, the tap refuses strangers and takes each unary call's
	// in-flight slot before the request is read.
	s.grpc = grpc.NewServer(
		grpc.Creds(creds),
		// The taps in order. Only the last may take a slot that a later refusal would
		// strand (the library cancels no stream context when a tap refuses): strangers
		// takes one only for callers without a certificate, whom the next three pass.
		// Every refusal is logged, sampled (tapLog).
		grpc.InTapHandle(newTapLog(logger).wrap(func(ctx context.Context, info *tap.Info) (context.Context, error) {
			ctx, err := strangers(ctx, info)
			if err != nil {
				return ctx, err
			}
			if ctx, err = watchTap(ctx, info); err != nil {
				return ctx, err
			}
			if ctx, err = rateTap(ctx, info); err != nil {
				return ctx, err
			}
			return calls.tap(ctx, info)
		})),
		grpc.StatsHandler(otelgrpc.NewServerHandler(otelOpts...)),
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: cfg.KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(
			selector.UnaryServerInterceptor(logging.UnaryServerInterceptor(slogger, loggingOptions(quietLevelFor)...), quiet),
			selector.UnaryServerInterceptor(logging.UnaryServerInterceptor(slogger, loggingOptions(levelFor)...), loud),
			badRequestUnary(),
			selector.UnaryServerInterceptor(grpcauth.UnaryServerInterceptor(authFunc(authz)), authenticated),
			auditgrpc.UnaryServerInterceptor(), // the audit actor, from the identity just established
			calls.unaryInterceptor(),
			limiter.unary(),
			grpcprotovalidate.UnaryServerInterceptor(validator),
			recovery.UnaryServerInterceptor(recoverOpt),
		),
		grpc.ChainStreamInterceptor(
			selector.StreamServerInterceptor(logging.StreamServerInterceptor(slogger, loggingOptions(quietLevelFor)...), quiet),
			selector.StreamServerInterceptor(logging.StreamServerInterceptor(slogger, loggingOptions(levelFor)...), loud),
			drainStream(s.drain),
			badRequestStream(),
			selector.StreamServerInterceptor(grpcauth.StreamServerInterceptor(authFunc(authz)), authenticated),
			authz.DeviceStreamInterceptor(), // ends a device's stream when its identity is revoked
			auditgrpc.StreamServerInterceptor(),
			s.watches.stream(),
			limiter.stream(),
			grpcprotovalidate.StreamServerInterceptor(validator),
			recovery.StreamServerInterceptor(recoverOpt),
		),
	)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc) // v1 and v1alpha
	return s, nil
}

// Kinds of methods the tap tells apart.
const (
	kindOther = iota
	kindUnary
	kindWatch
)

// methodKinds returns the kind of each of the server's methods by full name; call it
// only once serving (registration is over).
func (s *Server) methodKinds() map[string]int {
	out := map[string]int{}
	for name, info := range s.grpc.GetServiceInfo() {
		for _, m := range info.Methods {
			full := "/" + name + "/" + m.Name
			switch {
			case !m.IsClientStream && !m.IsServerStream:
				out[full] = kindUnary
			case isWatch(full, &grpc.StreamServerInfo{FullMethod: full, IsClientStream: m.IsClientStream, IsServerStream: m.IsServerStream}):
				out[full] = kindWatch
			}
		}
	}
	return out
}

// Registrar is where services register themselves.
func (s *Server) Registrar() grpc.ServiceRegistrar { return s.grpc }

// GRPC returns the underlying grpc.Server.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// Health returns the health server, for a service to report its own status.
func (s *Server) Health() *health.Server { return s.health }

// Serve marks "" and every registered service SERVING, then serves lis until Stop.
// It refuses insecure mode on a TCP listener that is not loopback.
func (s *Server) Serve(lis net.Listener) error {
	if tcp, ok := lis.Addr().(*net.TCPAddr); ok && s.cfg.Auth.Insecure && !tcp.IP.IsLoopback() {
		return auth.CheckListenAddr(tcp.String(), s.cfg.Auth)
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	for name := range s.grpc.GetServiceInfo() {
		s.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	s.logger.Info("serving gRPC", "addr", lis.Addr().String())
	if err := s.grpc.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("server: %w", err)
	}
	return nil
}

// Stop sets every health status NOT_SERVING, then stops gracefully; it stops hard
// after GracefulStopTimeout or when ctx is done. It returns once the server stopped.
func (s *Server) Stop(ctx context.Context) {
	s.stop.Do(func() {
		s.health.Shutdown()
		close(s.drain)
		done := make(chan struct{})
		go func() {
			s.grpc.GracefulStop()
			close(done)
		}()
		timer := time.NewTimer(s.cfg.GracefulStopTimeout)
		defer timer.Stop()
		select {
		case <-done:
			return
		case <-timer.C:
			s.logger.Warn("graceful stop timed out; stopping hard", "timeout", s.cfg.GracefulStopTimeout)
		case <-ctx.Done():
			s.logger.Warn("graceful stop cancelled; stopping hard", "err", ctx.Err())
		}
		s.grpc.Stop()
		<-done
	})
}

// DialOptions returns the options a condaccess client needs: transport credentials
// from cfg, the otelgrpc client stats handler (which propagates the trace context),
// a receive limit of DefaultClientMaxRecvMsgSize (so a reader accepts whatever a
// service may emit), a timeout on unary calls and retries of idempotent ones.
func DialOptions(cfg auth.ClientConfig) ([]grpc.DialOption, error) {
	creds, err := auth.DialOption(cfg)
	if err != nil {
		return nil, err
	}
	return []grpc.DialOption{
		creds,
		grpc.WithStatsHandler(otelgrpc.NewClientHandler()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(DefaultClientMaxRecvMsgSize)),
		grpc.WithChainUnaryInterceptor(
			timeout.UnaryClientInterceptor(DefaultClientUnaryTimeout),
			selector.UnaryClientInterceptor(retry.UnaryClientInterceptor(
				retry.WithMax(3),
				retry.WithBackoff(retry.BackoffExponentialWithJitter(100*time.Millisecond, 0.2)),
				retry.WithCodes(codes.Unavailable),
			), selector.MatchFunc(isIdempotent)),
		),
	}, nil
}

// idempotentPrefixes are the method names a client may repeat without changing the
// outcome: reads, evaluations, and ReportAlert(s), which are idempotent on the
// sensor's alert id.
var idempotentPrefixes = []string{"Get", "List", "Evaluate", "WhatIf", "Check", "ReportAlert"}

func isIdempotent(_ context.Context, c interceptors.CallMeta) bool {
	for _, p := range idempotentPrefixes {
		if strings.HasPrefix(c.Method, p) {
			return true
		}
	}
	return false
}

// NewHTTPServer returns an http.Server for metrics and other plain HTTP endpoints,
// with header timeouts and errors logged to logger.
func NewHTTPServer(addr string, handler http.Handler, logger *slog.Logger) *http.Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &http.Server{
		Addr:              addr,
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}
