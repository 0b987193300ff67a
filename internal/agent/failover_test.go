package agent_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/agent"
	"github.com/condaccess/condaccess/internal/peers"
)

// TestConnectFailsOverToAnotherReplica: the agent's remediation address is a list of
// two replicas; the one its Connect stream is on dies; the agent connects to the other
// with its hello, and a command sent there is executed and answered.
func TestConnectFailsOverToAnotherReplica(t *testing.T) {
	var rems []*fakeRemediation
	var srvs []*grpc.Server
	var addrs []string
	for range 2 {
		rem := &fakeRemediation{conns: make(chan *fakeConn, 4)}
		srv := grpc.NewServer()
		remediationv1.RegisterAgentServiceServer(srv, rem)
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = srv.Serve(lis) }()
		t.Cleanup(srv.Stop)
		rems, srvs, addrs = append(rems, rem), append(srvs, srv), append(addrs, lis.Addr().String())
	}
	conn, err := peers.Dial(strings.Join(addrs, ","), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	a, err := agent.New(agent.Config{
		DeviceID: "dev-1", Hostname: "host-1", WatchDirs: []string{t.TempDir()}, QuarantineDir: t.TempDir(),
		RescanInterval: time.Hour, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Risk: riskv1.NewRiskServiceClient(conn), Remediation: remediationv1.NewAgentServiceClient(conn),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	next := func() (int, *fakeConn) {
		t.Helper()
		select {
		case c := <-rems[0].conns:
			return 0, c
		case c := <-rems[1].conns:
			return 1, c
		case <-time.After(10 * time.Second):
			t.Fatal("the agent did not connect")
			return 0, nil
		}
	}
	first, c := next()
	if c.hello.GetDeviceId() != "dev-1" {
		t.Fatalf("hello %v", c.hello)
	}
	srvs[first].Stop()
	second, c := next()
	if second == first {
		t.Fatalf("reconnected to the stopped replica %d", first)
	}
	if c.hello.GetDeviceId() != "dev-1" {
		t.Fatalf("hello after failover %v", c.hello)
	}
	// The new channel carries commands: a scan is run and answered on this replica's
	// stream.
	c.send(t, &remediationv1.ActionCommand{ActionId: "act-1", Type: remediationv1.ActionType_ACTION_TYPE_RUN_SCAN})
	if r := c.result(t); r.GetActionId() != "act-1" {
		t.Fatalf("result %v, want one for act-1", r)
	}
}
