package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	"github.com/condaccess/condaccess/internal/suite"
)

// TestServePeerFlags: every --<service>-addr takes one address, a list of replicas
// or a dns:/// target; anything else, and (without TLS) a replica off loopback, is a
// usage error naming the flag, before anything starts.
func TestServePeerFlags(t *testing.T) {
	tests := []struct {
		name    string
		peers   suite.Peers
		wantErr string // "" starts
	}{
		{name: "one address", peers: suite.Peers{Risk: "127.0.0.1:7401"}},
		{name: "list", peers: suite.Peers{Risk: "127.0.0.1:7401, 127.0.0.1:7411,[::1]:7421"}},
		{name: "dns target", peers: suite.Peers{Risk: "dns:///localhost:7401"}},
		{name: "empty entry", peers: suite.Peers{Risk: "127.0.0.1:7401,,127.0.0.1:7411"}, wantErr: "--risk-addr: peer address"},
		{name: "no port", peers: suite.Peers{Risk: "127.0.0.1"}, wantErr: "--risk-addr"},
		{name: "unsupported scheme", peers: suite.Peers{Risk: "127.0.0.1:7401", Access: "unix:///run/a.sock"}, wantErr: `--access-addr: peer address "unix:///run/a.sock": scheme "unix"`},
		{name: "dns with server", peers: suite.Peers{Risk: "dns://127.0.0.1/localhost:7401"}, wantErr: "DNS server"},
		{name: "duplicate replica", peers: suite.Peers{Risk: "127.0.0.1:7401", Remediation: "127.0.0.1:7404,127.0.0.1:7404"}, wantErr: "--remediation-addr"},
		// Plaintext only on loopback: a remote replica hidden in a list is refused too.
		{name: "remote without TLS", peers: suite.Peers{Risk: "10.0.0.1:7401"}, wantErr: "--risk-addr 10.0.0.1:7401 is not loopback"},
		{name: "remote in a list without TLS", peers: suite.Peers{Risk: "127.0.0.1:7401,10.0.0.1:7401"}, wantErr: "is not loopback"},
		{name: "remote dns without TLS", peers: suite.Peers{Risk: "dns:///risk.example:7401"}, wantErr: "is not loopback"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			o := serveOptions{grpcAddr: "127.0.0.1:0", services: "compliance", dataDir: t.TempDir(),
				stopTimeout: time.Second, peers: tt.peers}
			s, err := startSuite(ctx, o, slog.New(slog.DiscardHandler))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("startSuite: %v", err)
				}
				if err := s.Stop(); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				s.Stop()
				t.Fatal("started, want a usage error")
			}
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want a usage error containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestCLIAddressList: the admin commands take a list of replicas; a dead one is
// skipped, a malformed list is a usage error, plaintext to a list with a remote
// replica is refused.
func TestCLIAddressList(t *testing.T) {
	f, addr := startFake(t)
	f.devices["dev-1"] = &compliancev1.Device{DeviceId: "dev-1", DisplayName: "Laptop 1"}
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()

	tests := []struct {
		name    string
		args    []string
		wantOut string
		wantErr string
	}{
		{name: "dead replica first", args: []string{"--server", deadAddr + "," + addr}, wantOut: "Laptop 1"},
		{name: "dead replica last", args: []string{"--compliance-addr", addr + "," + deadAddr}, wantOut: "Laptop 1"},
		{name: "malformed list", args: []string{"--server", addr + ",nope"}, wantErr: "address of the compliance service"},
		{name: "remote replica without TLS", args: []string{"--server", addr + ",192.0.2.1:7400"}, wantErr: "not a loopback address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 5 { // each call may go to any replica
				out, _, err := runCLI(t, append([]string{"devices", "get", "dev-1", "--timeout", "10s"}, tt.args...)...)
				if tt.wantErr != "" {
					if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tt.wantErr) {
						t.Fatalf("err = %v, want a usage error containing %q", err, tt.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(out, tt.wantOut) {
					t.Fatalf("output lacks %q:\n%s", tt.wantOut, out)
				}
			}
		})
	}
}
