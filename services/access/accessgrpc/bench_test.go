package accessgrpc_test

import (
	"context"
	"net"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/server"
	"github.com/condaccess/condaccess/internal/server/servertest"
	"github.com/condaccess/condaccess/services/access/accesscore"
	"github.com/condaccess/condaccess/services/access/accessgrpc"
	"github.com/condaccess/condaccess/services/access/accessstore"
)

// tcpSuite is the access service on a real 127.0.0.1 TCP listener with the
// production server chain, seeded with the wire example and a compliant dev-1.
type tcpSuite struct {
	addr   string // the server's 127.0.0.1 address
	conn   *grpc.ClientConn
	acc    accessv1.AccessServiceClient
	health healthpb.HealthClient
	svc    *accesscore.Service
}

func startTCP(b *testing.B) *tcpSuite {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := accessstore.Open(ctx, accessstore.Options{Path: filepath.Join(b.TempDir(), "access.db")})
	if err != nil {
		b.Fatal(err)
	}
	svc, err := accesscore.New(ctx, accesscore.Config{Store: st, EncodeSignIn: accessgrpc.EncodeSignIn})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := server.New(server.Config{Name: "bench", Auth: auth.Config{Insecure: true}, ExtraMethodRoles: accessgrpc.ExtraMethodRoles})
	if err != nil {
		b.Fatal(err)
	}
	h := accessgrpc.New(svc, accessgrpc.Headers{})
	accessgrpc.Register(srv.Registrar(), h)
	registerEmpty(srv.Registrar())
	shape := &accessv1.EvaluateAccessResponse{}
	registerShape(srv.Registrar(), shape)
	servertest.Register(srv.Registrar())
	fc := newFakeCompliance()
	compliancev1.RegisterComplianceServiceServer(srv.Registrar(), fc)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); svc.RunFeed(ctx, compliancev1.NewComplianceServiceClient(conn), nil) }()
	go func() { defer wg.Done(); svc.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		wg.Wait()
		conn.Close()
		srv.Stop(context.Background())
		st.Close()
	})
	s := &tcpSuite{addr: lis.Addr().String(), conn: conn, acc: accessv1.NewAccessServiceClient(conn), health: healthpb.NewHealthClient(conn), svc: svc}
	hh := &harness{dir: accessv1.NewDirectoryServiceClient(conn), pol: accessv1.NewConditionalAccessPolicyServiceClient(conn), acc: s.acc}
	seedB(b, hh)
	fc.set("dev-1", compliant, commonv1.RiskLevel_RISK_LEVEL_NONE, nil, nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := s.acc.EvaluateAccess(ctx, evalReq)
		if err == nil && r.GetDecision() == allow {
			proto.Merge(shape, r) // the shape method answers a copy of a real decision
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("dev-1 never allowed: %v %v", r, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return s
}

func seedB(b *testing.B, h *harness) {
	ctx := context.Background()
	if _, err := h.dir.CreateUser(ctx, &accessv1.CreateUserRequest{User: &accessv1.User{UserId: "u-1"}}); err != nil {
		b.Fatal(err)
	}
	if _, err := h.dir.CreateApplication(ctx, &accessv1.CreateApplicationRequest{Application: &accessv1.Application{ApplicationId: "payroll"}}); err != nil {
		b.Fatal(err)
	}
	if _, err := h.pol.CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: &accessv1.ConditionalAccessPolicy{
		PolicyId: "payroll-compliant", DisplayName: "Payroll requires a compliant device", State: accessv1.PolicyState_POLICY_STATE_ENABLED,
		Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{Include: []string{"payroll"}},
		GrantControls: &accessv1.GrantControls{Require: []accessv1.GrantControl{accessv1.GrantControl_GRANT_CONTROL_COMPLIANT_DEVICE}},
	}}); err != nil {
		b.Fatal(err)
	}
}

// emptyMethod is an empty unary method (google.protobuf.Empty in and out,
// generated messages) registered on the benchmark's server only. Unlike
// grpc.health.v1, it is not filtered out of tracing and not an open service, so
// it goes through exactly the chain EvaluateAccess goes through: otelgrpc
// (span and metrics), logging, auth (insecure dev identity, ROLE_SERVICE),
// protovalidate and recovery. It is the ceiling of the server chain itself.
const emptyMethod = "/condaccess.bench.v1.Empty/Call"

func registerEmpty(r grpc.ServiceRegistrar) {
	r.RegisterService(&grpc.ServiceDesc{
		ServiceName: "condaccess.bench.v1.Empty",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Call", Handler: func(_ any, ctx context.Context, dec func(any) error, in grpc.UnaryServerInterceptor) (any, error) {
			req := new(emptypb.Empty)
			if err := dec(req); err != nil {
				return nil, err
			}
			h := func(context.Context, any) (any, error) { return new(emptypb.Empty), nil }
			if in == nil {
				return h(ctx, req)
			}
			return in(ctx, req, &grpc.UnaryServerInfo{FullMethod: emptyMethod}, h)
		}}},
	}, struct{}{})
}

// shapeMethod takes an EvaluateAccessRequest and answers a fixed
// EvaluateAccessResponse shaped like the benchmark's decision (one reason, one
// policy, device compliance), through the same chain: EvaluateAccess's wire
// and chain cost without the decision, the session or the sign-in log.
const shapeMethod = "/condaccess.bench.v1.Shape/Call"

func registerShape(r grpc.ServiceRegistrar, resp *accessv1.EvaluateAccessResponse) {
	r.RegisterService(&grpc.ServiceDesc{
		ServiceName: "condaccess.bench.v1.Shape",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Call", Handler: func(_ any, ctx context.Context, dec func(any) error, in grpc.UnaryServerInterceptor) (any, error) {
			req := new(accessv1.EvaluateAccessRequest)
			if err := dec(req); err != nil {
				return nil, err
			}
			h := func(context.Context, any) (any, error) { return resp, nil }
			if in == nil {
				return h(ctx, req)
			}
			return in(ctx, req, &grpc.UnaryServerInfo{FullMethod: shapeMethod}, h)
		}}},
	}, struct{}{})
}

var emptyReq = &emptypb.Empty{}

// echoReq is servertest's Echo (dynamic messages, buf.validate rules): also the
// full chain, with reflection-based encoding and validation on top.
var echoReq = servertest.NewRequest("dev-1", "")

var evalReq = &accessv1.EvaluateAccessRequest{UserId: "u-1", DeviceId: "dev-1", ApplicationId: "payroll"}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// inFlight is the concurrency of the throughput benchmarks: GOMAXPROCS x parallelism ≈ 50.
func parallelism() int { return max(1, 50/runtime.GOMAXPROCS(0)) }

// BenchmarkThroughput compares EvaluateAccess (unary and stream) with two
// empty methods on the same server, with ~50 requests in flight over loopback
// TCP; req/s and cpu-µs/op are the figures to compare:
//   - HealthCheck: grpc.health.v1 Check, which skips tracing (filtered) and auth
//     (open service): the ceiling of gRPC itself on this machine;
//   - EmptyTraced: an empty method through the full chain (tracing, logging,
//     auth, validation, recovery): the ceiling of the server chain;
//   - ShapeTraced: EvaluateAccess's request and a fixed copy of its response
//     through the full chain: the ceiling for this message shape;
//   - EchoTraced: servertest's Echo, the full chain with dynamic messages.
func BenchmarkThroughput(b *testing.B) {
	s := startTCP(b)
	ctx := context.Background()
	cases := []struct {
		name string
		op   func(pb *testing.PB) error
	}{
		{"HealthCheck", func(pb *testing.PB) error {
			for pb.Next() {
				if _, err := s.health.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
					return err
				}
			}
			return nil
		}},
		{"EmptyTraced", func(pb *testing.PB) error {
			for pb.Next() {
				if err := s.conn.Invoke(ctx, emptyMethod, emptyReq, new(emptypb.Empty)); err != nil {
					return err
				}
			}
			return nil
		}},
		{"ShapeTraced", func(pb *testing.PB) error {
			for pb.Next() {
				if err := s.conn.Invoke(ctx, shapeMethod, evalReq, new(accessv1.EvaluateAccessResponse)); err != nil {
					return err
				}
			}
			return nil
		}},
		{"EchoTraced", func(pb *testing.PB) error {
			for pb.Next() {
				if _, err := servertest.Call(ctx, s.conn, servertest.MethodEcho, echoReq); err != nil {
					return err
				}
			}
			return nil
		}},
		{"EvaluateAccess", func(pb *testing.PB) error {
			for pb.Next() {
				if _, err := s.acc.EvaluateAccess(ctx, evalReq); err != nil {
					return err
				}
			}
			return nil
		}},
		{"EvaluateAccessStream", func(pb *testing.PB) error {
			st, err := s.acc.EvaluateAccessStream(ctx)
			if err != nil {
				return err
			}
			defer st.CloseSend()
			m := &accessv1.EvaluateAccessStreamRequest{Request: evalReq}
			for pb.Next() {
				if err := st.Send(m); err != nil {
					return err
				}
				if _, err := st.Recv(); err != nil {
					return err
				}
			}
			return nil
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(parallelism())
			start, cpu0 := time.Now(), cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				if err := c.op(pb); err != nil {
					b.Error(err)
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
			// Process CPU (client and server) per request: the figure that does not
			// depend on what else the machine is running.
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
	b.Logf("sign-ins written %d, dropped %d", s.svc.Recorder().Written(), s.svc.Recorder().Dropped())
}

// BenchmarkLatency measures one request in flight; p50/p99 are the figures.
func BenchmarkLatency(b *testing.B) {
	s := startTCP(b)
	ctx := context.Background()
	var st accessv1.AccessService_EvaluateAccessStreamClient
	cases := []struct {
		name string
		op   func() error
	}{
		{"HealthCheck", func() error { _, err := s.health.Check(ctx, &healthpb.HealthCheckRequest{}); return err }},
		{"EmptyTraced", func() error { return s.conn.Invoke(ctx, emptyMethod, emptyReq, new(emptypb.Empty)) }},
		{"ShapeTraced", func() error { return s.conn.Invoke(ctx, shapeMethod, evalReq, new(accessv1.EvaluateAccessResponse)) }},
		{"EchoTraced", func() error { _, err := servertest.Call(ctx, s.conn, servertest.MethodEcho, echoReq); return err }},
		{"EvaluateAccess", func() error { _, err := s.acc.EvaluateAccess(ctx, evalReq); return err }},
		{"EvaluateAccessStream", func() error {
			if err := st.Send(&accessv1.EvaluateAccessStreamRequest{Request: evalReq}); err != nil {
				return err
			}
			_, err := st.Recv()
			return err
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var err error
			if st, err = s.acc.EvaluateAccessStream(ctx); err != nil {
				b.Fatal(err)
			}
			defer st.CloseSend()
			b.ReportAllocs()
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				t0 := time.Now()
				if err := c.op(); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			slices.Sort(lat)
			// In µs with ns resolution: a 10% difference at a ~30 µs p50 is 3 µs.
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
		})
	}
}
