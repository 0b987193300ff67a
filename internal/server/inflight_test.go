package server_test

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/auth/authtest"
	"github.com/condaccess/condaccess/internal/server"
	"github.com/condaccess/condaccess/internal/server/servertest"
)

// TestCallsInFlightPerIdentity: an authenticated caller running many slow calls in
// parallel is refused past its cap (calls in flight, or bytes of requests in flight)
// with RESOURCE_EXHAUSTED, an ErrorInfo reason and a RetryInfo, while another identity
// is still served; when its calls end, it is served again.
func TestCallsInFlightPerIdentity(t *testing.T) {
	const (
		maxCalls = 4
		maxBytes = 8 << 20
		big      = 4<<20 - 1024 // just under the server's 4 MiB receive limit
		attempts = 20
	)
	for _, tt := range []struct {
		name        string
		size        int
		wantServed  int // calls of the flood that are held (in flight) at once
		wantReasons []string
	}{
		// Refused by the bytes cap once decoded, or by the calls cap before being read
		// while maxCalls of them are being received.
		{name: "many 4 MiB requests: the bytes in flight are capped", size: big, wantServed: maxBytes / big,
			wantReasons: []string{server.ReasonTooManyBytesInFlight, server.ReasonTooManyCallsInFlight}},
		{name: "many small requests: the calls in flight are capped", size: 16, wantServed: maxCalls,
			wantReasons: []string{server.ReasonTooManyCallsInFlight}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, conns := tlsClients(t, server.Config{MaxCallsPerIdentity: maxCalls, MaxRequestBytesPerIdentity: maxBytes}, "reader-1", "reader-2")
			flooder, other := conns[0], conns[1]
			ctx := testCtx(t)
			holdCtx, release := context.WithCancel(ctx)
			defer release()
			payload := make([]byte, tt.size)
			errs := make(chan error, attempts)
			for range attempts {
				go func() {
					_, err := servertest.Call(holdCtx, flooder, servertest.MethodUpload, servertest.NewUpload(payload, true))
					errs <- err
				}()
			}
			// The refused calls return at once; the served ones are held until release.
			var refused []error
			for len(refused) < attempts-tt.wantServed {
				select {
				case err := <-errs:
					refused = append(refused, err)
				case <-ctx.Done():
					t.Fatalf("%d of %d calls refused before the deadline, want %d: %v", len(refused), attempts, attempts-tt.wantServed, refused)
				}
			}
			for _, err := range refused {
				checkInflightRefusal(t, err, tt.wantReasons...)
			}
			// Another identity is served meanwhile, with a request as large.
			if _, err := servertest.Call(ctx, other, servertest.MethodUpload, servertest.NewUpload(payload, false)); err != nil {
				t.Fatalf("another identity's call while the first is at its cap: %v", err)
			}
			// The held calls were served (they end only when their caller leaves).
			release()
			for range tt.wantServed {
				if err := <-errs; status.Code(err) != codes.Canceled {
					t.Errorf("a held call ended with %v, want CANCELED (it was in flight, not refused)", err)
				}
			}
			// Their slots are free again.
			deadline := time.Now().Add(5 * time.Second)
			for {
				_, err := servertest.Call(ctx, flooder, servertest.MethodUpload, servertest.NewUpload(payload, false))
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the first identity is still refused after its calls ended: %v", err)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// holdSlot makes a held call on conn until one is in flight (the probe calls that
// wait for it compete for the same slot), then waits for it to end.
func holdSlot(ctx context.Context, conn grpc.ClientConnInterface) error {
	for {
		_, err := servertest.Call(ctx, conn, servertest.MethodUpload, servertest.NewUpload(nil, true))
		if status.Code(err) != codes.ResourceExhausted {
			return err
		}
	}
}

func checkInflightRefusal(t *testing.T, err error, reasons ...string) {
	t.Helper()
	if status.Code(err) != codes.ResourceExhausted || !slices.Contains(reasons, apierr.Reason(err)) {
		t.Fatalf("refused call: %v, want RESOURCE_EXHAUSTED with a reason in %v", err, reasons)
	}
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay().AsDuration() > 0 {
			return
		}
	}
	t.Fatalf("refused call %v has no RetryInfo", err)
}

// TestCallsInFlightIgnoreHealthAndStreams: health checks and streams are not counted,
// so a caller at its unary cap can still be probed and keep its watches (the services'
// consumers hold watches).
func TestCallsInFlightIgnoreHealthAndStreams(t *testing.T) {
	_, conns := tlsClients(t, server.Config{MaxCallsPerIdentity: 1}, "reader-1")
	conn := conns[0]
	ctx := testCtx(t)
	holdCtx, release := context.WithCancel(ctx)
	defer release()
	held := make(chan error, 1)
	go func() { held <- holdSlot(holdCtx, conn) }()
	// Wait until the held call has the identity's one slot.
	waitFor(t, "the held call to take the slot", func() bool {
		_, err := servertest.Call(ctx, conn, servertest.MethodEcho, servertest.NewRequest("d1", ""))
		return apierr.Reason(err) == server.ReasonTooManyCallsInFlight
	})
	for _, tt := range []struct {
		name string
		call func() error
	}{
		{"health check", func() error {
			_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		}},
		{"watch stream", func() error { _, err := openWatch(ctx, conn); return err }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); err != nil {
				t.Fatalf("%s at the unary cap: %v", tt.name, err)
			}
		})
	}
	release()
	if err := <-held; status.Code(err) != codes.Canceled {
		t.Fatalf("held call: %v", err)
	}
}

// devTCP serves cfg in development mode on loopback TCP, as development mode runs
// (bufconn gives every connection one address), and returns n client connections.
func devTCP(t *testing.T, cfg server.Config, n int) []*grpc.ClientConn {
	t.Helper()
	cfg.Name, cfg.Auth, cfg.GracefulStopTimeout = "dev", auth.Config{Insecure: true}, time.Second
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	servertest.Register(srv.Registrar())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(context.Background()) })
	opts, err := server.DialOptions(auth.ClientConfig{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	var conns []*grpc.ClientConn
	for range n {
		c, err := grpc.NewClient(lis.Addr().String(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
	}
	return conns
}

// TestCallsInFlightDevelopmentPerConnection: in development mode every caller is the
// one development identity, so the cap applies per client connection: one client's
// flood does not refuse another's calls (the suite's own clients among them).
func TestCallsInFlightDevelopmentPerConnection(t *testing.T) {
	conns := devTCP(t, server.Config{MaxCallsPerIdentity: 1}, 2)
	flooder, other := conns[0], conns[1]
	ctx := testCtx(t)
	holdCtx, release := context.WithCancel(ctx)
	defer release()
	go func() { _ = holdSlot(holdCtx, flooder) }()
	waitFor(t, "the held call to take the connection's slot", func() bool {
		_, err := servertest.Call(ctx, flooder, servertest.MethodEcho, servertest.NewRequest("d1", ""))
		return apierr.Reason(err) == server.ReasonTooManyCallsInFlight
	})
	if _, err := servertest.Call(ctx, other, servertest.MethodEcho, servertest.NewRequest("d1", "")); err != nil {
		t.Fatalf("another connection's call: %v", err)
	}
}

// TestWatchesDevelopmentPerConnection: in development mode the watch cap also applies
// per client connection, so a client flooding watches cannot refuse the watches of the
// suite's own consumers (which, in development mode, are the same identity).
func TestWatchesDevelopmentPerConnection(t *testing.T) {
	const limit = 3
	conns := devTCP(t, server.Config{MaxWatchesPerIdentity: limit}, 2)
	flooder, consumer := conns[0], conns[1]
	ctx := testCtx(t)
	for i := range limit {
		if _, err := openWatch(ctx, flooder); err != nil {
			t.Fatalf("watch %d: %v", i+1, err)
		}
	}
	for _, tt := range []struct {
		name   string
		conn   *grpc.ClientConn
		reason string
	}{
		{"the flooding connection past the cap", flooder, server.ReasonTooManyWatches},
		{"another connection (a consumer) has its own cap", consumer, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := openWatch(ctx, tt.conn)
			if got := apierr.Reason(err); got != tt.reason || (tt.reason == "") != (err == nil) {
				t.Fatalf("watch: %v, want reason %q", err, tt.reason)
			}
		})
	}
}

// TestCallsInFlightServiceNotStarved: a reader certificate named like a service
// (condaccess-risk) that uses up its calls in flight does not refuse the risk
// service's own calls (limits are keyed by how the caller was authenticated and its
// name), nor does any other identity's flood.
func TestCallsInFlightServiceNotStarved(t *testing.T) {
	ca := authtest.NewCA(t)
	rc := ca.ClientConfig(t, "condaccess-risk", commonv1.Role_ROLE_READER)
	rc.ServerName = "localhost"
	e := startWith(t, server.Config{MaxCallsPerIdentity: 1, Auth: ca.ServerConfig(t)}, rc)
	cert, key := ca.IssueURIs(t, "condaccess-risk", []string{auth.ServiceURI("risk")})
	svc := e.dial(t, auth.ClientConfig{CAFile: ca.CertFile, CertFile: cert, KeyFile: key, ServerName: "localhost"})
	ctx := testCtx(t)
	holdCtx, release := context.WithCancel(ctx)
	defer release()
	go func() { _ = holdSlot(holdCtx, e.conn) }()
	waitFor(t, "the reader to be at its cap", func() bool {
		_, err := servertest.Call(ctx, e.conn, servertest.MethodEcho, servertest.NewRequest("d1", ""))
		return apierr.Reason(err) == server.ReasonTooManyCallsInFlight
	})
	if _, err := servertest.Call(ctx, svc, servertest.MethodInternal, servertest.NewRequest("d1", "")); err != nil {
		t.Fatalf("the risk service's call while a reader named like it is at its cap: %v", err)
	}
}

// TestCallsInFlightServerTotal: the server's total of unary calls in flight is capped
// (MaxCallsInFlight): past it, a heavy caller that is under its own cap is refused
// with RESOURCE_EXHAUSTED SERVER_OVERLOADED and a RetryInfo, before its request is
// read; one identity holds at most half the total, and a reserve of a quarter more
// serves light callers (here, those holding no call), so two floods do not refuse
// everyone; the suite's services are counted but never refused, and health is never
// counted.
func TestCallsInFlightServerTotal(t *testing.T) {
	const total = 8
	ca := authtest.NewCA(t)
	cc := func(name string) auth.ClientConfig {
		c := ca.ClientConfig(t, name, commonv1.Role_ROLE_READER)
		c.ServerName = "localhost"
		return c
	}
	e := startWith(t, server.Config{MaxCallsInFlight: total, MaxCallsPerIdentity: 256, Auth: ca.ServerConfig(t)}, cc("reader-1"))
	r2, r3 := e.dial(t, cc("reader-2")), e.dial(t, cc("reader-3"))
	r4, r5 := e.dial(t, cc("reader-4")), e.dial(t, cc("reader-5"))
	cert, key := ca.IssueURIs(t, "condaccess-risk", []string{auth.ServiceURI("risk")})
	svc := e.dial(t, auth.ClientConfig{CAFile: ca.CertFile, CertFile: cert, KeyFile: key, ServerName: "localhost"})
	ctx := testCtx(t)
	holdCtx, release := context.WithCancel(ctx)
	defer release()

	// flood makes n held calls from conn and returns the refusals once the others are
	// in flight; it fails the test if a held call ends within 200 ms (it was refused
	// after all).
	flood := func(conn grpc.ClientConnInterface, n, held int) []error {
		errs := make(chan error, n)
		for range n {
			go func() {
				_, err := servertest.Call(holdCtx, conn, servertest.MethodUpload, servertest.NewUpload(nil, true))
				errs <- err
			}()
		}
		var refused []error
		for len(refused) < n-held {
			select {
			case err := <-errs:
				refused = append(refused, err)
			case <-ctx.Done():
				t.Fatalf("%d of %d calls refused, want %d", len(refused), n, n-held)
			}
		}
		select {
		case err := <-errs:
			t.Fatalf("%d of %d calls refused, want %d (the last: %v)", len(refused)+1, n, n-held, err)
		case <-time.After(200 * time.Millisecond):
		}
		return refused
	}
	// One identity gets half the total, no more.
	for _, err := range flood(e.conn, 20, total/2) {
		checkInflightRefusal(t, err, server.ReasonTooManyCallsInFlight)
	}
	// A second one takes the other half: the server is full.
	for _, err := range flood(r2, 20, total/2) {
		checkInflightRefusal(t, err, server.ReasonTooManyCallsInFlight, server.ReasonServerOverloaded)
	}
	// A third and a fourth, holding nothing, get one call each from the reserve (a
	// quarter of the total: 2); a second call of the third is refused by the total,
	// and so is a fifth identity once the reserve is used up.
	for _, conn := range []*grpc.ClientConn{r3, r4} {
		if refused := flood(conn, 2, 1); len(refused) != 1 {
			t.Fatalf("a light caller past the total: %d refused, want 1", len(refused))
		} else {
			checkInflightRefusal(t, refused[0], server.ReasonServerOverloaded)
		}
	}
	_, err := servertest.Call(ctx, r5, servertest.MethodEcho, servertest.NewRequest("d1", ""))
	checkInflightRefusal(t, err, server.ReasonServerOverloaded)
	// The suite's own service is served, and health answers.
	if _, err := servertest.Call(ctx, svc, servertest.MethodInternal, servertest.NewRequest("d1", "")); err != nil {
		t.Fatalf("the risk service's call while the server is full: %v", err)
	}
	if _, err := healthpb.NewHealthClient(r3).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health while the server is full: %v", err)
	}
	// When the floods end, the fifth identity is served.
	release()
	waitFor(t, "the fifth identity to be served", func() bool {
		_, err := servertest.Call(ctx, r5, servertest.MethodEcho, servertest.NewRequest("d1", ""))
		return err == nil
	})
}
