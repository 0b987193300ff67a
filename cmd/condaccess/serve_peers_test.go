package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
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

// watchReplica serves WatchRiskEvents from a history shared by the replicas, and
// says on opened which replica each stream went to.
type watchReplica struct {
	riskv1.UnimplementedRiskServiceServer
	id      int
	opened  chan int
	history func(after int64) []*riskv1.RiskEvent
}

func (w *watchReplica) WatchRiskEvents(r *riskv1.WatchRiskEventsRequest, s grpc.ServerStreamingServer[riskv1.WatchRiskEventsResponse]) error {
	w.opened <- w.id
	for _, e := range w.history(r.GetStartRevision()) {
		if err := s.Send(&riskv1.WatchRiskEventsResponse{Kind: &riskv1.WatchRiskEventsResponse_Event{Event: e}}); err != nil {
			return err
		}
	}
	<-s.Context().Done()
	return nil
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader in two goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestCLIWatchFailsOverAndResumes: `condaccess watch risk` on a list of two replicas;
// the replica its stream is on dies after three events; the command opens the stream
// on the other one after the last revision it printed, and prints 4..6: every
// revision once, in order.
func TestCLIWatchFailsOverAndResumes(t *testing.T) {
	var mu sync.Mutex
	head := int64(3)
	history := func(after int64) []*riskv1.RiskEvent {
		mu.Lock()
		defer mu.Unlock()
		var evs []*riskv1.RiskEvent
		for r := after + 1; r <= head; r++ {
			evs = append(evs, &riskv1.RiskEvent{Revision: r, Payload: &riskv1.RiskEvent_AlertChanged{AlertChanged: &riskv1.AlertChanged{
				Type: riskv1.AlertChangeType_ALERT_CHANGE_TYPE_REPORTED, Alert: &riskv1.Alert{AlertId: fmt.Sprint("a-", r)}}}})
		}
		return evs
	}
	opened := make(chan int, 10)
	var srvs []*grpc.Server
	var addrs []string
	for i := range 2 {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := grpc.NewServer()
		riskv1.RegisterRiskServiceServer(s, &watchReplica{id: i, opened: opened, history: history})
		go s.Serve(lis)
		t.Cleanup(s.Stop)
		srvs = append(srvs, s)
		addrs = append(addrs, lis.Addr().String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"watch", "risk", "-n", "6", "-o", "json", "--server", strings.Join(addrs, ",")}, &out, &errOut)
	}()
	first := <-opened
	for strings.Count(out.String(), "\n") < 3 {
		if ctx.Err() != nil {
			t.Fatalf("3 events not printed: %q", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	head = 6
	mu.Unlock()
	srvs[first].Stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("watch: %v (stderr %q)", err, errOut.String())
		}
	case <-ctx.Done():
		t.Fatalf("watch did not finish: %q", out.String())
	}
	if second := <-opened; second == first {
		t.Fatalf("the stream was opened again on the dead replica %d", first)
	}
	var revs []int64
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		ev := &riskv1.RiskEvent{}
		if err := protojson.Unmarshal([]byte(l), ev); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		revs = append(revs, ev.GetRevision())
	}
	if want := []int64{1, 2, 3, 4, 5, 6}; !slices.Equal(revs, want) {
		t.Fatalf("printed revisions %v, want %v", revs, want)
	}
	if !strings.Contains(errOut.String(), "resuming after revision 3") {
		t.Errorf("stderr does not say where it resumed: %q", errOut.String())
	}
}

func TestSelfAddr(t *testing.T) {
	for _, tt := range []struct{ listen, want string }{
		{"127.0.0.1:7400", "127.0.0.1:7400"},
		{"0.0.0.0:7400", "127.0.0.1:7400"},
		{"[::]:7400", "[::1]:7400"},
		{"[::1]:7400", "[::1]:7400"},
		{"10.0.0.5:7400", "10.0.0.5:7400"},
		{"localhost:7400", "localhost:7400"},
	} {
		if got := selfAddr(tt.listen); got != tt.want {
			t.Errorf("selfAddr(%q) = %q, want %q", tt.listen, got, tt.want)
		}
	}
}
