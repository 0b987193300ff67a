// Package risktest starts a real risk service (production interceptor chain, temporary SQLite store) on bufconn for other packages' tests.
package risktest

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/test/bufconn"

	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/server"
	"github.com/condaccess/condaccess/services/risk"
	"github.com/condaccess/condaccess/services/risk/riskgrpc"
	"github.com/condaccess/condaccess/services/risk/riskstore"
)

// Options tunes StartWith; the zero value is what Start uses.
type Options struct {
	// Retention, ProgressInterval and SubscriberBuffer are riskstore.Options'.
	Retention        int64
	ProgressInterval time.Duration
	SubscriberBuffer int
	// Now is the service clock (default time.Now).
	Now func() time.Time
	// Auth, when set, replaces insecure development mode (e.g. authtest's mTLS
	// ServerConfig); the harness's own Client then needs ClientAuth.
	Auth       *auth.Config
	ClientAuth auth.ClientConfig
	// DevelopmentReporterIsDevice is riskgrpc.Config's.
	DevelopmentReporterIsDevice bool
	// Listener, when set, is served instead of a bufconn listener (e.g. 127.0.0.1:0).
	Listener net.Listener
	// Register, when set, registers more services on the same server before it
	// serves (e.g. servertest's, as a same-chain baseline for benchmarks).
	Register func(grpc.ServiceRegistrar)
}

// Harness is a running risk service.
type Harness struct {
	Client riskv1.RiskServiceClient
	Conn   *grpc.ClientConn
	Store  *riskstore.Store
	Server *server.Server
	// Handlers is the RiskService implementation.
	Handlers *riskgrpc.Server
	// Addr is the listener's address (bufconn's is "bufconn").
	Addr string

	lis   net.Listener
	bl    *bufconn.Listener
	conns []*grpc.ClientConn
}

// Start runs the risk service (insecure development mode: every caller is "dev" with
// every role) on bufconn with a temporary store, stopped at the end of the test, and
// returns a client and its connection.
func Start(t testing.TB) (riskv1.RiskServiceClient, *grpc.ClientConn) {
	h := StartWith(t, Options{})
	return h.Client, h.Conn
}

// StartWith is Start with options.
func StartWith(t testing.TB, o Options) *Harness {
	t.Helper()
	ctx := context.Background()
	st, err := riskstore.Open(ctx, riskstore.Options{
		Path:      filepath.Join(t.TempDir(), "risk.db"),
		Retention: o.Retention, ProgressInterval: o.ProgressInterval, SubscriberBuffer: o.SubscriberBuffer,
	})
	if err != nil {
		t.Fatal(err)
	}
	authCfg := auth.Config{Insecure: true}
	if o.Auth != nil {
		authCfg = *o.Auth
	} else {
		o.ClientAuth = auth.ClientConfig{Insecure: true}
	}
	// Its own tracer provider, so that requests have real trace ids (and events carry
	// them) without touching the otel globals.
	srv, err := server.New(server.Config{Name: "risktest", Auth: authCfg, GracefulStopTimeout: time.Second, TracerProvider: sdktrace.NewTracerProvider()})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	svc := risk.New(risk.Config{Store: st, Encode: riskgrpc.EncodeEvent, Now: o.Now})
	handlers := riskgrpc.New(riskgrpc.Config{Service: svc, DevelopmentReporterIsDevice: o.DevelopmentReporterIsDevice})
	riskgrpc.Register(srv.Registrar(), handlers)
	if o.Register != nil {
		o.Register(srv.Registrar())
	}

	h := &Harness{Store: st, Server: srv, Handlers: handlers, lis: o.Listener}
	if h.lis == nil {
		h.bl = bufconn.Listen(1 << 20)
		h.lis = h.bl
	}
	h.Addr = h.lis.Addr().String()
	go func() { _ = srv.Serve(h.lis) }()
	t.Cleanup(func() {
		for _, c := range h.conns {
			c.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Stop(ctx)
		st.Close()
	})
	h.Client, h.Conn = h.Dial(t, o.ClientAuth)
	return h
}

// Dial returns another client of the harness's server with the client credentials of
// cfg (for example an authtest client certificate with other roles); closed at cleanup.
func (h *Harness) Dial(t testing.TB, cfg auth.ClientConfig) (riskv1.RiskServiceClient, *grpc.ClientConn) {
	t.Helper()
	if cfg.ServerName == "" && !cfg.Insecure {
		cfg.ServerName = "localhost"
	}
	creds, err := auth.DialOption(cfg)
	if err != nil {
		t.Fatal(err)
	}
	opts := []grpc.DialOption{creds}
	target := h.Addr
	if h.bl != nil {
		bl := h.bl
		target = "passthrough:///bufconn"
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return bl.DialContext(ctx) }))
	}
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	h.conns = append(h.conns, conn)
	return riskv1.NewRiskServiceClient(conn), conn
}
