package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/testing/protocmp"

	"log/slog"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/auth/authtest"
	"github.com/condaccess/condaccess/internal/server"
	"github.com/condaccess/condaccess/internal/server/servertest"
)

// logSink collects JSON log lines and signals each write.
type logSink struct {
	mu    sync.Mutex
	lines []map[string]any
	wrote chan struct{}
}

func newLogSink() *logSink { return &logSink{wrote: make(chan struct{}, 1)} }

func (l *logSink) Write(p []byte) (int, error) {
	var m map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(p), &m); err != nil {
		return 0, err
	}
	l.mu.Lock()
	l.lines = append(l.lines, m)
	l.mu.Unlock()
	select {
	case l.wrote <- struct{}{}:
	default:
	}
	return len(p), nil
}

// wait returns the first line matching match, waiting up to 5s for it.
func (l *logSink) wait(t *testing.T, match func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		l.mu.Lock()
		i := slices.IndexFunc(l.lines, match)
		var line map[string]any
		if i >= 0 {
			line = l.lines[i]
		}
		l.mu.Unlock()
		if line != nil {
			return line
		}
		select {
		case <-l.wrote:
		case <-deadline:
			t.Fatal("log line not written")
			return nil
		}
	}
}

// rpcLine matches the logging interceptor's line for fullMethod.
func rpcLine(fullMethod string) func(map[string]any) bool {
	return func(m map[string]any) bool {
		return m["msg"] == "finished call" && "/"+fmt.Sprint(m["grpc.service"])+"/"+fmt.Sprint(m["grpc.method"]) == fullMethod
	}
}

type env struct {
	srv  *server.Server
	conn *grpc.ClientConn
	logs *logSink
	tp   *sdktrace.TracerProvider
	lis  *bufconn.Listener
}

// start runs a server over bufconn with the production chain.
func start(t *testing.T, authCfg auth.Config, clientCfg auth.ClientConfig) *env {
	t.Helper()
	return startWith(t, server.Config{Auth: authCfg}, clientCfg)
}

// startWith runs a server with cfg (Name, Logger, TracerProvider and the stop timeout
// are set here) over bufconn and dials it with clientCfg.
func startWith(t *testing.T, cfg server.Config, clientCfg auth.ClientConfig) *env {
	t.Helper()
	logs := newLogSink()
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	cfg.Name = "test"
	cfg.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.TracerProvider = tp
	cfg.GracefulStopTimeout = 2 * time.Second
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	servertest.Register(srv.Registrar())
	lis := bufconn.Listen(1 << 20)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop(context.Background())
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	e := &env{srv: srv, logs: logs, tp: tp, lis: lis}
	e.conn = e.dial(t, clientCfg)
	return e
}

// dial opens another client connection to e's server.
func (e *env) dial(t *testing.T, clientCfg auth.ClientConfig) *grpc.ClientConn {
	t.Helper()
	opts, err := server.DialOptions(clientCfg)
	if err != nil {
		t.Fatal(err)
	}
	opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		return e.lis.DialContext(ctx)
	}))
	conn, err := grpc.NewClient("passthrough:///bufnet", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func startInsecure(t *testing.T) *env {
	return start(t, auth.Config{Insecure: true}, auth.ClientConfig{Insecure: true})
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestValidationUnary(t *testing.T) {
	e := startInsecure(t)
	ctx := testCtx(t)
	tests := []struct {
		name       string
		deviceID   string
		alertID    string
		wantFields []string
	}{
		{"valid", "d1", "8f0e4c1a-3b5d-4e6f-9a7b-1c2d3e4f5a6b", nil},
		{"empty device_id", "", "", []string{"device_id"}},
		{"nested alert.alert_id", "d1", "not-a-uuid", []string{"alert.alert_id"}},
		{"both", "", "not-a-uuid", []string{"device_id", "alert.alert_id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := servertest.Call(ctx, e.conn, servertest.MethodEcho, servertest.NewRequest(tt.deviceID, tt.alertID))
			if tt.wantFields == nil {
				if err != nil || servertest.DeviceID(resp) != tt.deviceID {
					t.Fatalf("Echo = %v, %v", resp, err)
				}
				return
			}
			if got := status.Code(err); got != codes.InvalidArgument {
				t.Fatalf("code = %v, want InvalidArgument (%v)", got, err)
			}
			if got := apierr.Reason(err); got != "INVALID_ARGUMENT" {
				t.Errorf("reason = %q", got)
			}
			var fields []string
			for _, v := range apierr.Violations(err) {
				fields = append(fields, v.GetField())
				if v.GetDescription() == "" {
					t.Errorf("violation %q has no description", v.GetField())
				}
			}
			slices.Sort(fields)
			want := slices.Sorted(slices.Values(tt.wantFields))
			if diff := cmp.Diff(want, fields); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
		})
	}
	line := e.logs.wait(t, func(m map[string]any) bool {
		return m["msg"] == "finished call" && m["grpc.code"] == "InvalidArgument"
	})
	if line["level"] != "WARN" {
		t.Errorf("InvalidArgument logged at %v, want WARN", line["level"])
	}
}

func TestValidationStream(t *testing.T) {
	e := startInsecure(t)
	ctx := testCtx(t)
	stream, err := e.conn.NewStream(ctx, servertest.StreamDesc, servertest.MethodStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg(servertest.NewRequest("d1", "")); err != nil {
		t.Fatal(err)
	}
	resp := servertest.NewResponse()
	if err := stream.RecvMsg(resp); err != nil || servertest.DeviceID(resp) != "d1" {
		t.Fatalf("first message: %v %v", resp, err)
	}
	if err := stream.SendMsg(servertest.NewRequest("d2", "bad")); err != nil {
		t.Fatal(err)
	}
	err = stream.RecvMsg(servertest.NewResponse())
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("second message: %v, want InvalidArgument", err)
	}
	want := []*errdetails.BadRequest_FieldViolation{apierr.FieldViolation("alert.alert_id", "")}
	if diff := cmp.Diff(want, apierr.Violations(err), protocmp.Transform(),
		protocmp.IgnoreFields(&errdetails.BadRequest_FieldViolation{}, "description")); diff != "" {
		t.Errorf("violations (-want +got):\n%s", diff)
	}
}

func TestPanicRecovery(t *testing.T) {
	e := startInsecure(t)
	ctx := testCtx(t)
	_, err := servertest.Call(ctx, e.conn, servertest.MethodPanic, servertest.NewRequest("d1", ""))
	if st := status.Convert(err); st.Code() != codes.Internal || strings.Contains(st.Message(), "boom") {
		t.Fatalf("panic: %v, want Internal with a generic message", err)
	}
	if _, err := servertest.Call(ctx, e.conn, servertest.MethodEcho, servertest.NewRequest("d1", "")); err != nil {
		t.Fatalf("call after panic: %v", err)
	}
	p := e.logs.wait(t, func(m map[string]any) bool { return m["msg"] == "panic in handler" })
	if !strings.Contains(p["stack"].(string), "servertest") || p["panic"] != "servertest: boom" {
		t.Errorf("panic log = %v", p)
	}
	if line := e.logs.wait(t, rpcLine(servertest.MethodPanic)); line["level"] != "ERROR" || line["grpc.code"] != "Internal" {
		t.Errorf("panic rpc line = %v", line)
	}
}

func TestLogLineAndTracePropagation(t *testing.T) {
	otel.SetTextMapPropagator(propagation.TraceContext{})
	e := startInsecure(t)
	ctx, span := e.tp.Tracer("client").Start(testCtx(t), "client-op")
	defer span.End()
	if _, err := servertest.Call(ctx, e.conn, servertest.MethodEcho, servertest.NewRequest("d1", "")); err != nil {
		t.Fatal(err)
	}
	line := e.logs.wait(t, rpcLine(servertest.MethodEcho))
	if line["level"] != "INFO" || line["grpc.code"] != "OK" || line["peer.address"] == nil || line["grpc.duration"] == nil || line["server"] != "test" || line["caller"] != auth.DevSubject {
		t.Errorf("rpc line = %v", line)
	}
	// The client's otelgrpc handler propagated the client's trace to the server span.
	if line["trace_id"] != span.SpanContext().TraceID().String() {
		t.Errorf("trace_id = %v, want %v", line["trace_id"], span.SpanContext().TraceID())
	}
}

func TestHealthAndStop(t *testing.T) {
	e := startInsecure(t)
	ctx := testCtx(t)
	hc := healthpb.NewHealthClient(e.conn)
	for _, svc := range []string{"", servertest.ServiceName, "grpc.health.v1.Health"} {
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("Check(%q) = %v, %v", svc, resp, err)
		}
	}
	watch, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: servertest.ServiceName})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch first = %v, %v", resp, err)
	}
	stopped := make(chan struct{})
	go func() {
		e.srv.Stop(context.Background())
		close(stopped)
	}()
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch after Stop = %v, %v", resp, err)
	}
	// The open Watch stream holds GracefulStop; Stop must still return (hard stop after 2s).
	select {
	case <-stopped:
	case <-time.After(8 * time.Second):
		t.Fatal("Stop did not return")
	}
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err == nil {
		t.Error("Check after Stop succeeded")
	}
}

func TestReflection(t *testing.T) {
	e := startInsecure(t)
	ctx := testCtx(t)
	want := []string{"condaccess.servertest.v1.TestService", "grpc.health.v1.Health",
		"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}

	s1, err := reflectionv1.NewServerReflectionClient(e.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s1.Send(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	r1, err := s1.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range r1.GetListServicesResponse().GetService() {
		got = append(got, s.GetName())
	}
	slices.Sort(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("v1 services (-want +got):\n%s", diff)
	}

	s2, err := reflectionv1alpha.NewServerReflectionClient(e.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Send(&reflectionv1alpha.ServerReflectionRequest{MessageRequest: &reflectionv1alpha.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	r2, err := s2.Recv()
	if err != nil || len(r2.GetListServicesResponse().GetService()) != len(want) {
		t.Errorf("v1alpha list = %v, %v", r2, err)
	}
}

func TestMutualTLSChain(t *testing.T) {
	ca := authtest.NewCA(t)
	cc := ca.ClientConfig(t, "reader-1", commonv1.Role_ROLE_READER)
	cc.ServerName = "localhost"
	e := start(t, ca.ServerConfig(t), cc)
	ctx := testCtx(t)
	if _, err := servertest.Call(ctx, e.conn, servertest.MethodEcho, servertest.NewRequest("d1", "")); err != nil {
		t.Fatalf("reader Echo: %v", err)
	}
	_, err := servertest.Call(ctx, e.conn, servertest.MethodAdmin, servertest.NewRequest("d1", ""))
	if status.Code(err) != codes.PermissionDenied || apierr.Reason(err) != auth.ReasonRoleNotAllowed {
		t.Errorf("reader Admin: %v", err)
	}
	// Authorization runs before validation: a denied caller learns nothing about its input.
	_, err = servertest.Call(ctx, e.conn, servertest.MethodAdmin, servertest.NewRequest("", ""))
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("reader Admin with invalid input: %v, want PermissionDenied", err)
	}
	if line := e.logs.wait(t, rpcLine(servertest.MethodAdmin)); line["level"] != "WARN" || line["reason"] != auth.ReasonRoleNotAllowed {
		t.Errorf("denied rpc line = %v", line)
	}
}

func TestExtraMethodRoles(t *testing.T) {
	ca := authtest.NewCA(t)
	cc := ca.ClientConfig(t, "envoy", commonv1.Role_ROLE_ENFORCEMENT_POINT)
	cc.ServerName = "localhost"
	srvCfg := ca.ServerConfig(t)
	logs := newLogSink()
	srv, err := server.New(server.Config{
		Auth:             srvCfg,
		Logger:           slog.New(slog.NewJSONHandler(logs, nil)),
		ExtraMethodRoles: map[string][]commonv1.Role{servertest.MethodInternal: {commonv1.Role_ROLE_ENFORCEMENT_POINT}},
	})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Register(srv.Registrar())
	lis := bufconn.Listen(1 << 20)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(context.Background()) })
	opts, err := server.DialOptions(cc)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("passthrough:///bufnet", append(opts, grpc.WithContextDialer(
		func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := testCtx(t)
	if _, err := servertest.Call(ctx, conn, servertest.MethodInternal, servertest.NewRequest("d1", "")); err != nil {
		t.Errorf("enforcement point Internal: %v", err)
	}
	if _, err := servertest.Call(ctx, conn, servertest.MethodEcho, servertest.NewRequest("d1", "")); status.Code(err) != codes.PermissionDenied {
		t.Errorf("enforcement point Echo: %v, want PermissionDenied", err)
	}
}

func TestServeRefusesInsecureNonLoopback(t *testing.T) {
	srv, err := server.New(server.Config{Auth: auth.Config{Insecure: true}})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	if err := srv.Serve(lis); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("Serve on %v = %v, want loopback refusal", lis.Addr(), err)
	}
}

func TestNewRequiresTLSOrInsecure(t *testing.T) {
	if _, err := server.New(server.Config{}); err == nil {
		t.Error("New without TLS or insecure mode succeeded")
	}
}
