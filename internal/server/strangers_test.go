package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/auth/authtest"
	"github.com/condaccess/condaccess/internal/server"
	"github.com/condaccess/condaccess/internal/server/servertest"
)

// countingListener counts the bytes the server reads from its connections.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{c, l.n}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	k, err := c.Conn.Read(p)
	c.n.Add(int64(k))
	return k, err
}

// TestStrangersAreRefusedBeforeTheirMessages: with mutual TLS, a connection without a
// client certificate calling a method that needs one is UNAUTHENTICATED before the
// server reads its request messages. Before, the library received each whole message
// (up to 4 MiB, 1,000 streams per connection) before the auth interceptor refused it:
// 200 such calls took a server from 61 MB to 1.9 GB. Health stays open; a certificate
// still works.
func TestStrangersAreRefusedBeforeTheirMessages(t *testing.T) {
	ca := authtest.NewCA(t)
	srv, err := server.New(server.Config{Name: "strangers", Auth: ca.ServerConfig(t), GracefulStopTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Register(srv.Registrar())
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var read atomic.Int64
	go func() { _ = srv.Serve(countingListener{tcp, &read}) }()
	t.Cleanup(func() { srv.Stop(context.Background()) })

	pem, err := os.ReadFile(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	stranger, err := grpc.NewClient(tcp.Addr().String(),
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13})),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(8<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stranger.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Health is open to anyone.
	if resp, err := healthpb.NewHealthClient(stranger).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health without a certificate: %v %v", resp, err)
	}
	base := read.Load()
	const calls, size = 20, 4<<20 - 1024
	big := strings.Repeat("a", size)
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := servertest.Call(ctx, stranger, servertest.MethodEcho, servertest.NewRequest(big, ""))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if status.Code(err) != codes.Unauthenticated || apierr.Reason(err) != auth.ReasonUnauthenticated {
			t.Fatalf("stranger's call: %v, want UNAUTHENTICATED with reason %s", err, auth.ReasonUnauthenticated)
		}
	}
	if n := read.Load() - base; n > calls*size/4 {
		t.Errorf("the server read %d bytes from a stranger's %d refused calls of %d bytes each", n, calls, size)
	}

	// A caller with a certificate is served as before.
	cc := ca.ClientConfig(t, "reader-1", commonv1.Role_ROLE_READER)
	cc.ServerName = "localhost"
	opts, err := server.DialOptions(cc)
	if err != nil {
		t.Fatal(err)
	}
	reader, err := grpc.NewClient(tcp.Addr().String(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reader.Close() })
	if resp, err := servertest.Call(ctx, reader, servertest.MethodEcho, servertest.NewRequest("d1", "")); err != nil || servertest.DeviceID(resp) != "d1" {
		t.Fatalf("reader Echo: %v %v", resp, err)
	}
}

// TestStrangersOpenCallsAreBounded: a caller without a certificate may have at most
// MaxStrangerStreamsPerHost open-method calls (health, reflection, enrollment) in
// flight from one host; more are RESOURCE_EXHAUSTED, and finished calls free their
// slots (many calls one after another all pass).
func TestStrangersOpenCallsAreBounded(t *testing.T) {
	ca := authtest.NewCA(t)
	srv, err := server.New(server.Config{Name: "strangers", Auth: ca.ServerConfig(t), GracefulStopTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(tcp) }()
	t.Cleanup(func() { srv.Stop(context.Background()) })
	pem, err := os.ReadFile(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	stranger, err := grpc.NewClient(tcp.Addr().String(),
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stranger.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(stranger)
	for i := range 3 * server.MaxStrangerStreamsPerHost {
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("health check %d one after another: %v", i, err)
		}
	}
	// Watch streams stay open: the ones past the limit are refused.
	wctx, wcancel := context.WithCancel(ctx)
	var got []codes.Code
	for range server.MaxStrangerStreamsPerHost + 2 {
		w, err := hc.Watch(wctx, &healthpb.HealthCheckRequest{})
		if err == nil {
			_, err = w.Recv()
		}
		got = append(got, status.Code(err))
	}
	for i, c := range got {
		want := codes.OK
		if i >= server.MaxStrangerStreamsPerHost {
			want = codes.ResourceExhausted
		}
		if c != want {
			t.Fatalf("watch %d: %v, want %v (all: %v)", i, c, want, got)
		}
	}
	// Ending them frees the slots.
	wcancel()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slots not freed after the watches ended: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStalledStrangerCallEnds: over a real TLS connection, a caller without a
// certificate opens an open unary call (health Check), sends its headers and never its
// request. It is cut at the stranger call timeout (DEADLINE_EXCEEDED) and its slot is
// free again: before, it held the slot for as long as the connection lived.
func TestStalledStrangerCallEnds(t *testing.T) {
	defer server.SetStrangerCallTimeout(300 * time.Millisecond)()
	ca := authtest.NewCA(t)
	srv, err := server.New(server.Config{Name: "strangers", Auth: ca.ServerConfig(t), GracefulStopTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(tcp) }()
	t.Cleanup(func() { srv.Stop(context.Background()) })
	pem, err := os.ReadFile(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	stranger, err := grpc.NewClient(tcp.Addr().String(),
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stranger.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Every slot of this host held by calls that never send their request.
	desc := &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}
	var stalled []grpc.ClientStream
	sctx, scancel := context.WithCancel(context.Background()) // no client deadline
	defer scancel()
	for i := range server.MaxStrangerStreamsPerHost {
		s, err := stranger.NewStream(sctx, desc, "/grpc.health.v1.Health/Check")
		if err != nil {
			t.Fatalf("stalled call %d: %v", i, err)
		}
		stalled = append(stalled, s)
	}
	// The server cuts each (the client set no deadline).
	for i, s := range stalled {
		ended := make(chan error, 1)
		go func() {
			var m healthpb.HealthCheckResponse
			ended <- s.RecvMsg(&m)
		}()
		select {
		case err := <-ended:
			if status.Code(err) != codes.DeadlineExceeded {
				t.Fatalf("stalled call %d ended with %v, want DEADLINE_EXCEEDED from the server", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("stalled call %d still open after 10 s: it holds its stranger slot", i)
		}
	}
	// The host's slots are free: a health check passes.
	deadline := time.Now().Add(10 * time.Second)
	hc := healthpb.NewHealthClient(stranger)
	for {
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slots not freed after the stalled calls were cut: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
