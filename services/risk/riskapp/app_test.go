package riskapp_test

import (
	"context"
	"flag"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/server"
	"github.com/condaccess/condaccess/internal/suite"
	"github.com/condaccess/condaccess/services/risk/riskapp"
)

func TestFactory(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr bool
	}{
		{"defaults", nil, false},
		{"flags", []string{"--risk-retention=5", "--risk-progress-interval=50ms", "--risk-watch-buffer=8", "--risk-sqlite-synchronous=NORMAL"}, false},
		{"negative retention", []string{"--risk-retention=-1"}, true},
		{"bad synchronous", []string{"--risk-sqlite-synchronous=OFF"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &riskapp.Factory{}
			fs := flag.NewFlagSet("serve", flag.ContinueOnError)
			f.RegisterFlags(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			svc, err := f.New(context.Background(), suite.Env{Logger: slog.New(slog.DiscardHandler), DataDir: dir})
			if tt.wantErr {
				if err == nil {
					svc.Close()
					t.Fatal("New succeeded, want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(dir, "risk.db")); err != nil {
				t.Errorf("store file: %v", err)
			}
			if err := svc.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
}

// TestGracefulStopEndsWatchers: with a watcher connected, the server's graceful stop
// (health NOT_SERVING first) ends the watch at once instead of waiting its timeout.
func TestGracefulStopEndsWatchers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := server.New(server.Config{Name: "t", Auth: auth.Config{Insecure: true}, GracefulStopTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	f := &riskapp.Factory{}
	f.RegisterFlags(flag.NewFlagSet("serve", flag.ContinueOnError))
	svc, err := f.New(ctx, suite.Env{Logger: slog.New(slog.DiscardHandler), DataDir: t.TempDir(), Health: srv.Health()})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	svc.Register(srv.Registrar())
	lis := bufconn.Listen(1 << 20)
	go func() { _ = srv.Serve(lis) }()
	go func() { _ = svc.Run(ctx) }()
	conn, err := grpc.NewClient("passthrough:///bufconn", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := riskv1.NewRiskServiceClient(conn).WatchRiskEvents(ctx, &riskv1.WatchRiskEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil { // first progress: the watch is live
		t.Fatal(err)
	}
	start := time.Now()
	srv.Stop(ctx)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("graceful stop took %v with a watcher connected", d)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("watch ended with %v, want UNAVAILABLE", err)
	}
}
