package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
)

func listServices(t *testing.T, ctx context.Context, conn *grpc.ClientConn) []string {
	t.Helper()
	stream, err := reflectionv1.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	slices.Sort(names)
	return names
}

func TestServeListsEveryServiceAndStops(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	o := serveOptions{grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", dataDir: t.TempDir(),
		services: "risk,compliance,access,remediation", stopTimeout: 5 * time.Second}
	s, err := startSuite(ctx, o, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	want := []string{
		"condaccess.access.v1.AccessService",
		"condaccess.access.v1.ConditionalAccessPolicyService",
		"condaccess.access.v1.DirectoryService",
		"condaccess.audit.v1.AuditService",
		"condaccess.compliance.v1.CompliancePolicyService",
		"condaccess.compliance.v1.ComplianceService",
		"condaccess.compliance.v1.DeviceIdentityService",
		"condaccess.compliance.v1.DeviceService",
		"condaccess.remediation.v1.AgentService",
		"condaccess.remediation.v1.RemediationService",
		"condaccess.risk.v1.RiskService",
		"grpc.health.v1.Health",
		"grpc.reflection.v1.ServerReflection",
		"grpc.reflection.v1alpha.ServerReflection",
	}
	got := listServices(t, ctx, conn)
	// Enforcement-point APIs of foreign packages (Envoy ext_authz) may be registered too.
	got = slices.DeleteFunc(got, func(n string) bool { return strings.HasPrefix(n, "envoy.") })
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}
	hc := healthpb.NewHealthClient(conn)
	for _, svc := range []string{"", "condaccess.risk.v1.RiskService", "condaccess.access.v1.AccessService"} {
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatalf("health %q: %v", svc, err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q = %v, want SERVING", svc, resp.GetStatus())
		}
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
}

func TestServeRefusesUnsafeConfigurations(t *testing.T) {
	tests := []struct {
		name    string
		o       serveOptions
		wantErr string
	}{
		{name: "non-loopback without TLS", o: serveOptions{grpcAddr: "0.0.0.0:0", services: "risk"}, wantErr: "grpc-addr"},
		{name: "unknown service", o: serveOptions{grpcAddr: "127.0.0.1:0", services: "risk,billing"}, wantErr: `unknown service "billing"`},
		{name: "compliance apart without risk", o: serveOptions{grpcAddr: "127.0.0.1:0", services: "compliance"}, wantErr: "--risk-addr"},
		{name: "half TLS", o: serveOptions{grpcAddr: "127.0.0.1:0", services: "risk", tlsCert: "c.pem"}, wantErr: "--tls-key"},
		{name: "negative audit retention", o: serveOptions{grpcAddr: "127.0.0.1:0", services: "risk", auditRetention: -time.Hour}, wantErr: "--audit-retention"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.o.dataDir = t.TempDir()
			s, err := startSuite(context.Background(), tt.o, slog.New(slog.DiscardHandler))
			if err == nil {
				s.Stop()
				t.Fatal("started, want an error")
			}
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want a usage error mentioning %q", err, tt.wantErr)
			}
		})
	}
}

// TestServeProcessDrainsOnSIGTERM runs the real binary: it must serve, then exit 0 on
// SIGTERM.
func TestServeProcessDrainsOnSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := filepath.Join(t.TempDir(), "condaccess")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "", "--data-dir", t.TempDir())
	var logs lockedBuffer
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait for the "serving gRPC" line, which carries the bound address.
	addr := make(chan string, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := pr.Read(buf)
			logs.Write(buf[:n])
			if i := strings.Index(logs.String(), "grpc_addr="); i >= 0 {
				rest := logs.String()[i+len("grpc_addr="):]
				if j := strings.IndexAny(rest, " \n"); j > 0 {
					select {
					case addr <- rest[:j]:
					default:
					}
				}
			}
			if err != nil {
				return
			}
		}
	}()
	var a string
	select {
	case a = <-addr:
	case <-ctx.Done():
		t.Fatalf("no serving line; logs:\n%s", logs.String())
	}
	conn, err := grpc.NewClient(a, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v; want SERVING", resp, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	pw.Close()
	if err != nil {
		t.Fatalf("exit after SIGTERM: %v; logs:\n%s", err, logs.String())
	}
	if !strings.Contains(logs.String(), "shutting down") {
		t.Errorf("no shutdown line in logs:\n%s", logs.String())
	}
}

// lockedBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
