package compliancetest

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"

	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/server"
	"github.com/condaccess/condaccess/internal/suite"
	"github.com/condaccess/condaccess/services/compliance/complianceapp"
)

// Options configures Start.
type Options struct {
	// DataDir holds the store; default t.TempDir(). Reuse it to restart on the same data.
	DataDir string
	// Logger defaults to a discarding logger.
	Logger *slog.Logger
	// DeviceCAFile and DeviceCAKeyFile, when set, let the service issue device
	// certificates (DeviceIdentityService).
	DeviceCAFile, DeviceCAKeyFile string
}

// Harness is a compliance service running in-process on a loopback TCP address, with
// clients over a real gRPC connection through the production server chain
// (insecure development mode: every caller has every role).
type Harness struct {
	// Addr is the gRPC address (for other services' Peers.Compliance).
	Addr       string
	Conn       *grpc.ClientConn
	Devices    compliancev1.DeviceServiceClient
	Policies   compliancev1.CompliancePolicyServiceClient
	Compliance compliancev1.ComplianceServiceClient
	// App is the running service (its risk consumer, its domain service).
	App     *complianceapp.Service
	DataDir string

	srv    *server.Server
	cancel context.CancelFunc
	done   chan struct{}
	conns  []*grpc.ClientConn
	once   sync.Once
}

func dialOpts(tb testing.TB) []grpc.DialOption {
	opts, err := server.DialOptions(auth.ClientConfig{Insecure: true})
	if err != nil {
		tb.Fatal(err)
	}
	return opts
}

// Start runs the compliance service against the risk service at riskAddr. It stops
// at the end of the test (or earlier with Stop).
func Start(tb testing.TB, riskAddr string, o Options) *Harness {
	tb.Helper()
	if o.DataDir == "" {
		o.DataDir = tb.TempDir()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	srv, err := server.New(server.Config{Name: "compliance-test", Logger: o.Logger, Auth: auth.Config{Insecure: true}})
	if err != nil {
		tb.Fatal(err)
	}
	h := &Harness{srv: srv, done: make(chan struct{}), DataDir: o.DataDir}
	env := suite.Env{
		Logger:  o.Logger,
		DataDir: o.DataDir,
		Peers:   suite.Peers{Risk: riskAddr},
		Dial: func(addr string) (*grpc.ClientConn, error) {
			c, err := grpc.NewClient(addr, dialOpts(tb)...)
			if err == nil {
				h.conns = append(h.conns, c)
			}
			return c, err
		},
		Health:          srv.Health(),
		DeviceCAFile:    o.DeviceCAFile,
		DeviceCAKeyFile: o.DeviceCAKeyFile,
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	svc, err := (&complianceapp.Factory{}).New(ctx, env)
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	h.App = svc.(*complianceapp.Service)
	svc.Register(srv.Registrar())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	h.Addr = lis.Addr().String()
	go func() { _ = srv.Serve(lis) }()
	go func() {
		defer close(h.done)
		_ = svc.Run(ctx)
	}()
	h.Conn, err = grpc.NewClient(h.Addr, dialOpts(tb)...)
	if err != nil {
		h.Stop()
		tb.Fatal(err)
	}
	h.Devices = compliancev1.NewDeviceServiceClient(h.Conn)
	h.Policies = compliancev1.NewCompliancePolicyServiceClient(h.Conn)
	h.Compliance = compliancev1.NewComplianceServiceClient(h.Conn)
	tb.Cleanup(h.Stop)
	return h
}

// Stop stops the service and closes its store (idempotent).
func (h *Harness) Stop() {
	h.once.Do(func() {
		if h.Conn != nil {
			h.Conn.Close()
		}
		h.srv.Stop(context.Background())
		h.cancel()
		<-h.done
		for _, c := range h.conns {
			c.Close()
		}
		_ = h.App.Close()
	})
}

// StartRisk serves a FakeRisk on a loopback TCP address until the end of the test.
func StartRisk(tb testing.TB) (*FakeRisk, string) {
	tb.Helper()
	f := NewFakeRisk()
	srv, err := server.New(server.Config{Name: "fake-risk", Auth: auth.Config{Insecure: true}})
	if err != nil {
		tb.Fatal(err)
	}
	riskv1.RegisterRiskServiceServer(srv.Registrar(), f)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	tb.Cleanup(func() { srv.Stop(context.Background()) })
	return f, lis.Addr().String()
}

// RiskClient dials the risk service at addr until the end of the test.
func RiskClient(tb testing.TB, addr string) riskv1.RiskServiceClient {
	tb.Helper()
	c, err := grpc.NewClient(addr, dialOpts(tb)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return riskv1.NewRiskServiceClient(c)
}
