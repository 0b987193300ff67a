package server_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/auth/authtest"
	"github.com/condaccess/condaccess/internal/server"
	"github.com/condaccess/condaccess/internal/server/servertest"
)

// tlsClients starts a mutual-TLS server with cfg and returns a connection for each
// reader identity named.
func tlsClients(t *testing.T, cfg server.Config, names ...string) (*env, []*grpc.ClientConn) {
	t.Helper()
	ca := authtest.NewCA(t)
	cfg.Auth = ca.ServerConfig(t)
	var conns []*grpc.ClientConn
	var e *env
	for _, n := range names {
		cc := ca.ClientConfig(t, n, commonv1.Role_ROLE_READER)
		cc.ServerName = "localhost"
		if e == nil {
			e = startWith(t, cfg, cc)
			conns = append(conns, e.conn)
			continue
		}
		conns = append(conns, e.dial(t, cc))
	}
	return e, conns
}

// openWatch opens MethodWatch and waits for its first message, so the stream holds a
// slot when it returns without error.
func openWatch(ctx context.Context, conn *grpc.ClientConn) (grpc.ClientStream, error) {
	s, err := conn.NewStream(ctx, servertest.WatchDesc, servertest.MethodWatch)
	if err != nil {
		return nil, err
	}
	if err := s.SendMsg(servertest.NewRequest("d1", "")); err != nil {
		return nil, err
	}
	if err := s.CloseSend(); err != nil {
		return nil, err
	}
	if err := s.RecvMsg(servertest.NewResponse()); err != nil {
		return nil, err
	}
	return s, nil
}

// waitFor polls cond until it holds or 5s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMaxRecvMsgSize(t *testing.T) {
	e := startWith(t, server.Config{Auth: auth.Config{Insecure: true}, MaxRecvMsgSize: 1024}, auth.ClientConfig{Insecure: true})
	ctx := testCtx(t)
	tests := []struct {
		name     string
		deviceID string
		want     codes.Code
	}{
		{"under the limit", "d1", codes.OK},
		// Over the size limit the request is never decoded, so the validator (which
		// would say INVALID_ARGUMENT for a device_id over 64 characters) never runs.
		{"over the limit", strings.Repeat("x", 2048), codes.ResourceExhausted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := servertest.Call(ctx, e.conn, servertest.MethodEcho, servertest.NewRequest(tt.deviceID, ""))
			if got := status.Code(err); got != tt.want {
				t.Fatalf("code = %v, want %v (%v)", got, tt.want, err)
			}
		})
	}
}

func TestWatchesPerIdentity(t *testing.T) {
	const limit = 3
	e, conns := tlsClients(t, server.Config{MaxWatchesPerIdentity: limit}, "reader-a", "reader-b")
	a, b := conns[0], conns[1]
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()

	var first context.CancelFunc
	for i := range limit {
		wctx, wcancel := context.WithCancel(ctx)
		if i == 0 {
			first = wcancel
		} else {
			defer wcancel()
		}
		if _, err := openWatch(wctx, a); err != nil {
			t.Fatalf("watch %d of reader-a: %v", i+1, err)
		}
	}
	tests := []struct {
		name   string
		conn   *grpc.ClientConn
		want   codes.Code
		reason string
	}{
		{"reader-a past the limit", a, codes.ResourceExhausted, server.ReasonTooManyWatches},
		{"reader-b has its own limit", b, codes.OK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := openWatch(ctx, tt.conn)
			if got := status.Code(err); got != tt.want {
				t.Fatalf("code = %v, want %v (%v)", got, tt.want, err)
			}
			if got := apierr.Reason(err); got != tt.reason {
				t.Errorf("reason = %q, want %q", got, tt.reason)
			}
		})
	}
	// A closed watch frees its slot.
	first()
	waitFor(t, "reader-a's first watch to close", func() bool { return e.srv.OpenWatches("reader-a") == limit-1 })
	if _, err := openWatch(ctx, a); err != nil {
		t.Fatalf("watch after one closed: %v", err)
	}
}

// TestWatchFlood is the audit's attack: 5,000 watch attempts from one identity on one
// connection. Past the default limit each is refused, and the server's goroutines and
// heap stay bounded (the audit saw 10,000 goroutines and 700 MB without a limit).
func TestWatchFlood(t *testing.T) {
	const attempts = 5000
	// Bounds for 5,000 attempts with the default limit of 64 open watches: each open
	// watch costs a few goroutines (transport, handler, drain), a refused one none.
	const maxGoroutineGrowth = 64*6 + 100
	const maxHeapGrowth = 64 << 20
	e, conns := tlsClients(t, server.Config{}, "reader-flood")
	// 5,000 round trips: generous for -race on a shared machine.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	goroutinesBefore := runtime.NumGoroutine()

	refused := map[codes.Code]int{}
	opened := 0
	for range attempts {
		_, err := openWatch(ctx, conns[0])
		if err == nil {
			opened++
			continue
		}
		refused[status.Code(err)]++
		if apierr.Reason(err) != server.ReasonTooManyWatches {
			t.Fatalf("refusal without TOO_MANY_WATCHES: %v", err)
		}
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	growth := runtime.NumGoroutine() - goroutinesBefore
	heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("opened %d, refused %v, goroutines +%d, heap %+d KiB", opened, refused, growth, heap>>10)
	if opened != server.DefaultMaxWatchesPerIdentity || refused[codes.ResourceExhausted] != attempts-server.DefaultMaxWatchesPerIdentity {
		t.Errorf("opened %d, refused %v; want %d opened, the rest RESOURCE_EXHAUSTED", opened, refused, server.DefaultMaxWatchesPerIdentity)
	}
	if got := e.srv.OpenWatches("reader-flood"); got != server.DefaultMaxWatchesPerIdentity {
		t.Errorf("server counts %d open watches, want %d", got, server.DefaultMaxWatchesPerIdentity)
	}
	if growth > maxGoroutineGrowth {
		t.Errorf("goroutines grew by %d, bound %d", growth, maxGoroutineGrowth)
	}
	if heap > maxHeapGrowth {
		t.Errorf("heap grew by %d bytes, bound %d", heap, maxHeapGrowth)
	}
	// The refusals happen in the server's tap, before a stream exists: none reached
	// the interceptor chain (each would have its log line).
	inChain := 0
	e.logs.mu.Lock()
	for _, l := range e.logs.lines {
		if l["grpc.method"] == "Watch" && l["grpc.code"] == codes.ResourceExhausted.String() {
			inChain++
		}
	}
	e.logs.mu.Unlock()
	if inChain > 0 {
		t.Errorf("%d of %d refused watches reached the interceptor chain; want them refused in the tap", inChain, refused[codes.ResourceExhausted])
	}
}

func TestRateLimitPerIdentity(t *testing.T) {
	limit := server.RateLimit{Methods: []string{servertest.MethodEcho}, Rate: 0.5, Burst: 2}
	_, conns := tlsClients(t, server.Config{RateLimits: []server.RateLimit{limit}}, "sensor-a", "sensor-b")
	ctx := testCtx(t)
	tests := []struct {
		name   string
		conn   *grpc.ClientConn
		method string
		want   codes.Code
	}{
		{"a first within burst", conns[0], servertest.MethodEcho, codes.OK},
		{"a second within burst", conns[0], servertest.MethodEcho, codes.OK},
		{"a third over the rate", conns[0], servertest.MethodEcho, codes.ResourceExhausted},
		{"b has its own bucket", conns[1], servertest.MethodEcho, codes.OK},
		{"other methods are not limited", conns[0], servertest.MethodPanic + "x", codes.Unimplemented},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := servertest.Call(ctx, tt.conn, tt.method, servertest.NewRequest("d1", ""))
			if got := status.Code(err); got != tt.want {
				t.Fatalf("code = %v, want %v (%v)", got, tt.want, err)
			}
			if tt.want != codes.ResourceExhausted {
				return
			}
			if apierr.Reason(err) != server.ReasonRateLimited {
				t.Errorf("reason = %q", apierr.Reason(err))
			}
			var retry *errdetails.RetryInfo
			for _, d := range status.Convert(err).Details() {
				if r, ok := d.(*errdetails.RetryInfo); ok {
					retry = r
				}
			}
			if d := retry.GetRetryDelay().AsDuration(); d <= 0 || d > 2*time.Second {
				t.Errorf("RetryInfo delay = %v, want in (0, 2s]", d)
			}
		})
	}
}

func TestRateLimitCostOverBurst(t *testing.T) {
	limit := server.RateLimit{Methods: []string{servertest.MethodEcho}, Rate: 100, Burst: 5,
		Cost: func(req any) int { return len(fmt.Sprint(req)) }}
	e := startWith(t, server.Config{Auth: auth.Config{Insecure: true}, RateLimits: []server.RateLimit{limit}}, auth.ClientConfig{Insecure: true})
	_, err := servertest.Call(testCtx(t), e.conn, servertest.MethodEcho, servertest.NewRequest("a-long-device-id", ""))
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("request costing more than the burst: %v, want InvalidArgument", err)
	}
}

// TestWatchLimitKeyedByKind: a role certificate whose CommonName equals a service's
// (a reader named condaccess-compliance) has its own watch budget: using it up does
// not refuse the service's watches (before, both counted as one identity).
func TestWatchLimitKeyedByKind(t *testing.T) {
	const limit = 2
	ca := authtest.NewCA(t)
	cfg := server.Config{MaxWatchesPerIdentity: limit, Auth: ca.ServerConfig(t)}
	rc := ca.ClientConfig(t, "condaccess-compliance", commonv1.Role_ROLE_READER)
	rc.ServerName = "localhost"
	e := startWith(t, cfg, rc)
	cert, key := ca.IssueURIs(t, "condaccess-compliance", []string{auth.ServiceURI("compliance"), auth.RoleURI(commonv1.Role_ROLE_READER)})
	svc := e.dial(t, auth.ClientConfig{CAFile: ca.CertFile, CertFile: cert, KeyFile: key, ServerName: "localhost"})
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	for i := range limit {
		if _, err := openWatch(ctx, e.conn); err != nil {
			t.Fatalf("reader watch %d: %v", i+1, err)
		}
	}
	if _, err := openWatch(ctx, e.conn); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("reader past its limit: %v, want RESOURCE_EXHAUSTED", err)
	}
	if _, err := openWatch(ctx, svc); err != nil {
		t.Fatalf("the compliance service's watch, after a reader with its name used up the reader's budget: %v", err)
	}
}

// TestRateLimitRefusedInTheTap: a caller over its rate is refused before its request
// is read, in the tap (RATE_LIMITED with RetryInfo, as from the interceptor): none of
// the refused calls reaches the interceptor chain, and the refusals are logged once
// for the host and reason, not once each.
func TestRateLimitRefusedInTheTap(t *testing.T) {
	limit := server.RateLimit{Methods: []string{servertest.MethodUpload}, Rate: 0.01, Burst: 1}
	e, conns := tlsClients(t, server.Config{RateLimits: []server.RateLimit{limit}}, "sensor-flood")
	ctx := testCtx(t)
	if _, err := servertest.Call(ctx, conns[0], servertest.MethodUpload, servertest.NewUpload(nil, false)); err != nil {
		t.Fatalf("the first call, within the burst: %v", err)
	}
	const attempts = 50
	payload := make([]byte, 1<<20)
	for range attempts {
		_, err := servertest.Call(ctx, conns[0], servertest.MethodUpload, servertest.NewUpload(payload, false))
		if status.Code(err) != codes.ResourceExhausted || apierr.Reason(err) != server.ReasonRateLimited {
			t.Fatalf("a call over the rate: %v, want RESOURCE_EXHAUSTED %s", err, server.ReasonRateLimited)
		}
		var retry *errdetails.RetryInfo
		for _, d := range status.Convert(err).Details() {
			if r, ok := d.(*errdetails.RetryInfo); ok {
				retry = r
			}
		}
		if retry.GetRetryDelay().AsDuration() <= 0 {
			t.Fatalf("refusal without a RetryInfo: %v", err)
		}
	}
	e.logs.wait(t, func(l map[string]any) bool { return l["msg"] == "call refused before its request was read" })
	inChain, tapLines := 0, 0
	e.logs.mu.Lock()
	for _, l := range e.logs.lines {
		if l["grpc.method"] == "Upload" && l["grpc.code"] == codes.ResourceExhausted.String() {
			inChain++
		}
		if l["msg"] == "call refused before its request was read" {
			tapLines++
			if l["reason"] != server.ReasonRateLimited {
				t.Errorf("tap log line %v, want reason %s", l, server.ReasonRateLimited)
			}
		}
	}
	e.logs.mu.Unlock()
	if inChain > 0 {
		t.Errorf("%d of %d refusals reached the interceptor chain; want them refused in the tap", inChain, attempts)
	}
	if tapLines != 1 {
		t.Errorf("%d log lines for %d refusals of one host and reason within 10s, want 1", tapLines, attempts)
	}
}
