package peers_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/consumer"
	"github.com/condaccess/condaccess/internal/peers"
	"github.com/condaccess/condaccess/internal/server"
	"github.com/condaccess/condaccess/services/risk"
	"github.com/condaccess/condaccess/services/risk/riskgrpc"
	"github.com/condaccess/condaccess/services/risk/riskstore"
)

// replicas are n risk servers on 127.0.0.1 over one store: the shape of n replicas
// on one database.
type replicas struct {
	srvs  []*server.Server
	addrs []string
}

func startReplicas(t *testing.T, n int) *replicas {
	t.Helper()
	st, err := riskstore.Open(context.Background(), riskstore.Options{Path: filepath.Join(t.TempDir(), "risk.db"), ProgressInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	handlers := riskgrpc.New(riskgrpc.Config{Service: risk.New(risk.Config{Store: st, Encode: riskgrpc.EncodeEvent})})
	r := &replicas{}
	for i := range n {
		srv, err := server.New(server.Config{Name: fmt.Sprintf("risk-%d", i), Auth: auth.Config{Insecure: true}, GracefulStopTimeout: time.Second,
			KeepaliveMinTime: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		riskgrpc.Register(srv.Registrar(), handlers)
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = srv.Serve(lis) }()
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			srv.Stop(ctx)
		})
		r.srvs = append(r.srvs, srv)
		r.addrs = append(r.addrs, lis.Addr().String())
	}
	// Serve marks the server SERVING when it starts: wait for that, so that a status
	// the test sets afterwards is not overwritten.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, a := range r.addrs {
		conn, err := grpc.NewClient(a, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: peers.HealthService}, grpc.WaitForReady(true))
		conn.Close()
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("replica %s not serving: %v %v", a, resp, err)
		}
	}
	return r
}

// kill stops replica i abruptly: listener and connections closed, streams broken.
func (r *replicas) kill(i int) { r.srvs[i].GRPC().Stop() }

func (r *replicas) setServing(i int, serving bool) {
	s := healthpb.HealthCheckResponse_SERVING
	if !serving {
		s = healthpb.HealthCheckResponse_NOT_SERVING
	}
	r.srvs[i].Health().SetServingStatus(peers.HealthService, s)
}

func (r *replicas) index(addr string) int { return slices.Index(r.addrs, addr) }

func dialList(t *testing.T, addrs []string) *grpc.ClientConn {
	t.Helper()
	opts, err := server.DialOptions(auth.ClientConfig{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := peers.Dial(strings.Join(addrs, ","), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// call makes one ListDeviceRisks and returns the index of the replica that served it.
func call(ctx context.Context, t *testing.T, r *replicas, c riskv1.RiskServiceClient) int {
	t.Helper()
	var p peer.Peer
	if _, err := c.ListDeviceRisks(ctx, &riskv1.ListDeviceRisksRequest{}, grpc.Peer(&p)); err != nil {
		t.Fatalf("ListDeviceRisks: %v", err)
	}
	return r.index(p.Addr.String())
}

// waitServedOnlyBy calls until 20 calls in a row were served by replicas in want
// (the client has seen the change), failing at the deadline.
func waitServedOnlyBy(ctx context.Context, t *testing.T, r *replicas, c riskv1.RiskServiceClient, want ...int) {
	t.Helper()
	row := 0
	for row < 20 {
		if ctx.Err() != nil {
			t.Fatalf("calls still reach replicas outside %v", want)
		}
		if slices.Contains(want, call(ctx, t, r, c)) {
			row++
		} else {
			row = 0
		}
	}
}

// TestListSkipsDeadAndNotServingReplicas: three replicas behind one list target;
// calls are spread over all three, then one is set NOT_SERVING and one is stopped,
// and every call still succeeds, on the remaining one. The NOT_SERVING one gets
// calls again once it is SERVING.
func TestListSkipsDeadAndNotServingReplicas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := startReplicas(t, 3)
	c := riskv1.NewRiskServiceClient(dialList(t, r.addrs))

	seen := map[int]bool{}
	for len(seen) < 3 {
		if ctx.Err() != nil {
			t.Fatalf("round robin reached only replicas %v", seen)
		}
		seen[call(ctx, t, r, c)] = true
	}

	r.setServing(1, false)
	waitServedOnlyBy(ctx, t, r, c, 0, 2)
	r.kill(0)
	waitServedOnlyBy(ctx, t, r, c, 2)
	for range 50 {
		if got := call(ctx, t, r, c); got != 2 {
			t.Fatalf("a call reached replica %d; only replica 2 is alive and SERVING", got)
		}
	}

	r.setServing(1, true)
	for call(ctx, t, r, c) != 1 {
		if ctx.Err() != nil {
			t.Fatal("replica 1 gets no calls after it is SERVING again")
		}
	}
}

// TestServiceStatusDoesNotRemoveAReplica: clients check the whole server's health
// (""), not a service's name, which a service's stuck event consumer turns
// NOT_SERVING: replicas share one database, so skipping that replica would route
// around nothing and, with one replica, cut every caller. It keeps getting calls.
func TestServiceStatusDoesNotRemoveAReplica(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := startReplicas(t, 2)
	r.srvs[0].Health().SetServingStatus(riskv1.RiskService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	c := riskv1.NewRiskServiceClient(dialList(t, r.addrs))
	for call(ctx, t, r, c) != 0 {
		if ctx.Err() != nil {
			t.Fatal("a replica whose RiskService status is NOT_SERVING (but the server's is SERVING) gets no calls")
		}
	}
}

// TestAllReplicasDownFailsUnavailable: when no replica is SERVING, a call fails
// UNAVAILABLE (it is not sent to a NOT_SERVING replica anyway).
func TestAllReplicasDownFailsUnavailable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := startReplicas(t, 2)
	c := riskv1.NewRiskServiceClient(dialList(t, r.addrs))
	call(ctx, t, r, c)
	r.setServing(0, false)
	r.kill(1)
	for {
		if ctx.Err() != nil {
			t.Fatal("calls still succeed with no replica SERVING")
		}
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := c.ListDeviceRisks(cctx, &riskv1.ListDeviceRisksRequest{})
		ccancel()
		if status.Code(err) == codes.Unavailable {
			return
		}
		if err != nil {
			t.Fatalf("ListDeviceRisks error = %v, want UNAVAILABLE", err)
		}
	}
}

// riskSource opens WatchRiskEvents on the list connection and records which replica
// each stream went to.
type riskSource struct {
	c       riskv1.RiskServiceClient
	mu      sync.Mutex
	streams []string // remote address of each opened stream
}

func (s *riskSource) Watch(ctx context.Context, start int64) (consumer.Stream[*riskv1.RiskEvent], error) {
	st, err := s.c.WatchRiskEvents(ctx, &riskv1.WatchRiskEventsRequest{StartRevision: start})
	if err != nil {
		return nil, err
	}
	// The first message (an event or progress) proves the stream is open; the peer
	// is known from then on.
	if _, err := st.Header(); err != nil {
		return nil, err
	}
	if p, ok := peer.FromContext(st.Context()); ok {
		s.mu.Lock()
		s.streams = append(s.streams, p.Addr.String())
		s.mu.Unlock()
	}
	return riskStream{st}, nil
}

func (s *riskSource) opened() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.streams)
}

type riskStream struct {
	st grpc.ServerStreamingClient[riskv1.WatchRiskEventsResponse]
}

func (s riskStream) Recv() (*riskv1.RiskEvent, int64, bool, error) {
	m, err := s.st.Recv()
	if err != nil {
		return nil, 0, false, err
	}
	if p := m.GetProgress(); p != nil {
		return nil, p.GetRevision(), true, nil
	}
	return m.GetEvent(), m.GetEvent().GetRevision(), false, nil
}

// TestWatchFailsOverAndResumes: a consumer watches risk events through a list of
// three replicas, one of them NOT_SERVING. The replica its stream is on is killed;
// the consumer reconnects to the other SERVING replica and resumes from its cursor:
// every revision applied exactly once, in order, none missing.
func TestWatchFailsOverAndResumes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	r := startReplicas(t, 3)
	r.setServing(1, false)
	c := riskv1.NewRiskServiceClient(dialList(t, r.addrs))
	src := &riskSource{c: c}

	var mu sync.Mutex
	var applied []int64
	var cursor int64
	cons := consumer.New(consumer.Config[*riskv1.RiskEvent]{
		Name:   t.Name(),
		Source: src,
		Cursor: func(context.Context) (int64, bool, error) {
			mu.Lock()
			defer mu.Unlock()
			return cursor, true, nil
		},
		Resync: func(context.Context) (int64, error) { t.Error("unexpected resync"); return 0, nil },
		Apply: func(_ context.Context, ev *riskv1.RiskEvent, rev int64) error {
			mu.Lock()
			defer mu.Unlock()
			applied = append(applied, rev)
			cursor = rev
			return nil
		},
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
	})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = cons.Run(runCtx) }()
	defer func() { stop(); <-done }()

	report := func(from, to int) int64 {
		t.Helper()
		for i := from; i < to; i++ {
			// ReportAlert is idempotent on the alert id, so the client retries it on
			// UNAVAILABLE: it reaches a live replica.
			if _, err := c.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
				AlertId: fmt.Sprintf("a-%d", i), DeviceId: fmt.Sprintf("dev-%d", i%3),
				Severity: commonv1.Severity_SEVERITY_HIGH, Title: "test"}}); err != nil {
				t.Fatalf("ReportAlert %d: %v", i, err)
			}
		}
		resp, err := c.ListDeviceRisks(ctx, &riskv1.ListDeviceRisksRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetRevision()
	}

	head := report(0, 5)
	if err := cons.WaitRevision(ctx, head); err != nil {
		t.Fatalf("consumer did not reach revision %d: %v", head, err)
	}
	first := src.opened()
	if len(first) != 1 {
		t.Fatalf("streams opened before the kill = %q, want one", first)
	}
	victim := r.index(first[0])
	if victim == 1 {
		t.Fatal("the watch went to the NOT_SERVING replica")
	}
	r.kill(victim)

	head = report(5, 10)
	if err := cons.WaitRevision(ctx, head); err != nil {
		t.Fatalf("consumer did not resume to revision %d: %v", head, err)
	}
	opened := src.opened()
	last := r.index(opened[len(opened)-1])
	if last == victim || last == 1 {
		t.Fatalf("after the kill the watch is on replica %d (killed %d, NOT_SERVING 1); streams %q", last, victim, opened)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, rev := range applied {
		if rev != int64(i+1) {
			t.Fatalf("applied revisions %v: want 1..%d each once, in order", applied, head)
		}
	}
	if int64(len(applied)) != head {
		t.Fatalf("applied %d revisions, want %d", len(applied), head)
	}
}

// blackhole forwards TCP to a replica until frozen; then it passes nothing more in
// either direction and closes nothing: a replica whose node vanished.
type blackhole struct {
	lis    net.Listener
	frozen atomic.Bool
	stop   chan struct{}
}

func newBlackhole(t *testing.T, target string) *blackhole {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{lis: lis, stop: make(chan struct{})}
	var conns []net.Conn
	var mu sync.Mutex
	t.Cleanup(func() {
		close(b.stop)
		lis.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			in, err := lis.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, in, out)
			mu.Unlock()
			go b.pipe(out, in)
			go b.pipe(in, out)
		}
	}()
	return b
}

func (b *blackhole) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if b.frozen.Load() {
			<-b.stop
			return
		}
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestWatchLeavesASilentReplica: the watch is on a replica whose node then vanishes
// without closing anything (no RST, no FIN: a blackhole). Keepalive notices; the
// consumer resumes on the other replica from its cursor, gap-free. Without
// keepalive the stream would wait for TCP to give up, minutes later.
func TestWatchLeavesASilentReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a keepalive timeout (about 12 s)")
	}
	peers.SetKeepalive(t, 10*time.Second, time.Second) // gRPC's shortest interval
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	r := startReplicas(t, 2)
	hole := newBlackhole(t, r.addrs[0])
	r.setServing(1, false) // the watch must start on replica 0, behind the blackhole
	c := riskv1.NewRiskServiceClient(dialList(t, []string{hole.lis.Addr().String(), r.addrs[1]}))
	direct := riskv1.NewRiskServiceClient(dialList(t, r.addrs[1:]))
	src := &riskSource{c: c}

	var mu sync.Mutex
	var applied []int64
	cons := consumer.New(consumer.Config[*riskv1.RiskEvent]{
		Name:   t.Name(),
		Source: src,
		Cursor: func(context.Context) (int64, bool, error) {
			mu.Lock()
			defer mu.Unlock()
			if len(applied) == 0 {
				return 0, true, nil
			}
			return applied[len(applied)-1], true, nil
		},
		Resync: func(context.Context) (int64, error) { t.Error("unexpected resync"); return 0, nil },
		Apply: func(_ context.Context, _ *riskv1.RiskEvent, rev int64) error {
			mu.Lock()
			defer mu.Unlock()
			applied = append(applied, rev)
			return nil
		},
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
	})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = cons.Run(runCtx) }()
	defer func() { stop(); <-done }()

	report := func(id string) int64 {
		t.Helper()
		if _, err := direct.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
			AlertId: id, DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "test"}}); err != nil {
			t.Fatalf("ReportAlert %s: %v", id, err)
		}
		resp, err := direct.ListDeviceRisks(ctx, &riskv1.ListDeviceRisksRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetRevision()
	}
	for len(src.opened()) == 0 {
		if ctx.Err() != nil {
			t.Fatal("the consumer opened no stream")
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.setServing(1, true) // for the direct client, and for the failover
	head := report("a-1")
	if err := cons.WaitRevision(ctx, head); err != nil {
		t.Fatalf("consumer did not reach %d: %v", head, err)
	}
	if opened := src.opened(); len(opened) != 1 || opened[0] != hole.lis.Addr().String() {
		t.Fatalf("streams %q: want one, through the blackhole", opened)
	}

	hole.frozen.Store(true)
	start := time.Now()
	head = report("a-2")
	if err := cons.WaitRevision(ctx, head); err != nil {
		t.Fatalf("consumer stuck behind the silent replica: %v (streams %q)", err, src.opened())
	}
	t.Logf("resumed on the other replica %v after the blackhole", time.Since(start).Round(time.Millisecond))
	mu.Lock()
	defer mu.Unlock()
	for i, rev := range applied {
		if rev != int64(i+1) || int64(len(applied)) != head {
			t.Fatalf("applied revisions %v: want 1..%d each once, in order", applied, head)
		}
	}
}
