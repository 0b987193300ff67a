package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/server"
)

// TestOversizedAlertRefusedBeforeStorage is the audit's first attack: alerts with
// 15 MiB evidence paths. Over --max-recv-msg-size the request is RESOURCE_EXHAUSTED
// before it is decoded; under it but over the path cap it is INVALID_ARGUMENT; either
// way nothing is stored and the next ordinary alert goes through.
func TestOversizedAlertRefusedBeforeStorage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	o := serveOptions{grpcAddr: "127.0.0.1:0", dataDir: t.TempDir(), services: "risk", stopTimeout: 5 * time.Second}
	s, err := startSuite(ctx, o, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	opts, err := server.DialOptions(auth.ClientConfig{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(s.GRPCAddr(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := riskv1.NewRiskServiceClient(conn)
	alert := func(id, path string) *riskv1.ReportAlertRequest {
		return &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
			AlertId: id, DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "t",
			Evidence: []*commonv1.Evidence{{Kind: &commonv1.Evidence_File{File: &commonv1.FileEvidence{Path: path}}}},
		}}
	}
	tests := []struct {
		name string
		path string
		want codes.Code
	}{
		{"15 MiB path: over the receive limit", strings.Repeat("p", 15<<20), codes.ResourceExhausted},
		{"1 MiB path: over the 4 KiB path cap", strings.Repeat("p", 1<<20), codes.InvalidArgument},
		{"4 KiB path: at the cap", "/" + strings.Repeat("p", 4095), codes.OK},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := "a-" + string(rune('a'+i))
			_, err := client.ReportAlert(ctx, alert(id, tt.path))
			if got := status.Code(err); got != tt.want {
				t.Fatalf("code = %v, want %v (%.200v)", got, tt.want, err)
			}
			_, err = client.GetAlert(ctx, &riskv1.GetAlertRequest{AlertId: id})
			if stored := err == nil; stored != (tt.want == codes.OK) {
				t.Errorf("alert stored = %v after %v", stored, tt.want)
			}
		})
	}
}

// TestCallsPerIdentityFlags: the in-flight caps reach the server configuration, and a
// byte cap under the largest request (which no call could then pass) or a call cap of
// zero is a usage error, not a silent default.
func TestCallsPerIdentityFlags(t *testing.T) {
	for _, tt := range []struct {
		name      string
		args      []string
		wantErr   bool
		wantCalls int
		wantBytes int64
	}{
		{name: "defaults", wantCalls: server.DefaultMaxCallsPerIdentity, wantBytes: server.DefaultMaxRequestBytesPerIdentity},
		{name: "set", args: []string{"--max-calls-per-identity", "8", "--max-request-bytes-per-identity", "8388608"}, wantCalls: 8, wantBytes: 8 << 20},
		{name: "no calls", args: []string{"--max-calls-per-identity", "0"}, wantErr: true},
		{name: "bytes under the largest request", args: []string{"--max-request-bytes-per-identity", "1048576"}, wantErr: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var l limitOptions
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			l.register(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			var cfg server.Config
			err := l.apply(&cfg)
			if tt.wantErr {
				if !errors.Is(err, errUsage) {
					t.Fatalf("apply = %v, want a usage error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.MaxCallsPerIdentity != tt.wantCalls || cfg.MaxRequestBytesPerIdentity != tt.wantBytes {
				t.Errorf("config calls %d bytes %d, want %d and %d", cfg.MaxCallsPerIdentity, cfg.MaxRequestBytesPerIdentity, tt.wantCalls, tt.wantBytes)
			}
		})
	}
}
