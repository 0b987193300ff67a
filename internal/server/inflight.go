package server

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/auth"
)

// Defaults of the per-identity concurrency cap on unary calls.
const (
	// DefaultMaxCallsPerIdentity is how many unary calls one identity may have in
	// flight. It is far above what one client needs for fast calls (an enforcement
	// point's Check takes well under a millisecond), and bounds what one identity can
	// make the server receive at once: this many requests of up to MaxRecvMsgSize.
	DefaultMaxCallsPerIdentity = 256
	// DefaultMaxRequestBytesPerIdentity is the sum of the sizes of one identity's
	// unary requests in flight (16 requests of the default 4 MiB limit).
	DefaultMaxRequestBytesPerIdentity = 64 << 20
	// DefaultMaxCallsInFlightPerCPU times GOMAXPROCS is the default of the server-wide
	// cap on unary calls in flight (Config.MaxCallsInFlight).
	DefaultMaxCallsInFlightPerCPU = 128
)

// Error reasons of the per-identity concurrency cap.
const (
	ReasonTooManyCallsInFlight = "TOO_MANY_CALLS_IN_FLIGHT"
	ReasonTooManyBytesInFlight = "TOO_MANY_REQUEST_BYTES_IN_FLIGHT"
	ReasonServerOverloaded     = "SERVER_OVERLOADED"
)

// inflightRetryDelay is the RetryInfo of a refusal: in-flight calls end quickly, so a
// short wait usually finds room.
const inflightRetryDelay = 200 * time.Millisecond

// inflight caps, per caller identity, the unary calls in flight and the bytes of their
// requests. Without it an authenticated caller could run up to MaxConcurrentStreams
// calls of up to MaxRecvMsgSize on every connection it opens (gigabytes), and as many
// as it likes through the HTTP face.
//
// The call count is taken at two places. On the gRPC listener it is taken in the
// server's InTapHandle, when a call's headers arrive and before any of its request is
// read, so a refused call costs no memory: the identity is read there from the
// connection's verified certificate by the same Authorizer the auth interceptor uses.
// The HTTP face, which hands requests to the grpc.Server in-process (no tap), takes it
// with HoldCall before its transcoder reads a request's body; a call that reaches the
// chain holding no slot takes one in the unary interceptor. The bytes
// are charged in the interceptor, once the request is decoded (its size is not known
// before), and released when the handler returns. Streams are not counted: watches and
// agent connections have their own caps, and the services' consumers, which hold
// watches for a living, so cannot be starved by this cap. Health and reflection are
// never counted. Limits are per identity (kind and name, see identityKey), so one
// caller's flood never uses up another's share, a service's included; in development
// mode, where every caller is the one development identity, the cap is per client
// connection instead.
//
// The server's total is capped too (maxTotal, the overload limit): past it a call is
// refused in the tap, RESOURCE_EXHAUSTED SERVER_OVERLOADED, before a goroutine, a span
// or a log line exists for it. The per-identity caps alone let callers together hold
// any number of calls (in development mode, each connection its 256), every one a
// runnable goroutine once its request arrives; the Go scheduler has no priorities, so
// health checks and the services' own consumers waited behind all of them. With the
// load generator's four connections holding 1,024 calls, BenchmarkOverload measured
// health p99 at 64-127 ms (28-46 checks over 100 ms in a run); with this cap (256 on
// two CPUs), 42 and 57 ms (1 and 6 over 100 ms). The
// suite's services (service identities) are never refused by the total, only counted
// in it: their calls are the pipeline's own. So that one caller cannot take the whole
// total and refuse everyone else, an identity holds at most half of it; and so that
// two cannot either, a reserve of a quarter more is kept for light callers, those
// holding fewer than lightCalls (an enforcement point asking a few questions at a
// time): a full server still admits them, and refuses only its heavy callers.
//
// go-grpc-middleware has no concurrency limiter keyed by caller (its ratelimit limits
// a rate and sees neither the caller nor the request's size), hence our own.
type inflight struct {
	maxCalls int
	maxTotal int
	maxBytes int64
	authz    *auth.Authorizer
	isUnary  func(fullMethod string) bool // known once serving

	// The refusals of the two counts, built once: under a flood most calls get one,
	// and building each (details, metadata) was 5% of the server's allocations.
	errTooManyCalls, errOverloaded error

	mu    sync.Mutex
	total int
	calls map[string]int
	bytes map[string]int64
}

func newInflight(maxCalls, maxTotal int, maxBytes int64, authz *auth.Authorizer, isUnary func(string) bool) *inflight {
	f := &inflight{maxCalls: maxCalls, maxTotal: maxTotal, maxBytes: maxBytes, authz: authz, isUnary: isUnary,
		calls: map[string]int{}, bytes: map[string]int64{}}
	f.errTooManyCalls = f.refusal(ReasonTooManyCallsInFlight,
		fmt.Sprintf("at most %d unary calls may be in flight per identity; retry when one has finished", f.perIdentity()))
	f.errOverloaded = f.refusal(ReasonServerOverloaded,
		fmt.Sprintf("the server is overloaded: %d unary calls are in flight; retry later", f.maxTotal))
	return f
}

// perIdentity is the most calls one identity may hold: --max-calls-per-identity, and
// at most half of the server's total.
func (f *inflight) perIdentity() int { return max(1, min(f.maxCalls, f.maxTotal/2)) }

// lightCalls is how many calls an identity may hold and still take the reserve past
// the total: 8, or a quarter of the per-identity cap when that is smaller.
func (f *inflight) lightCalls() int { return max(1, min(8, f.perIdentity()/4)) }

// exempt reports whether fullMethod is never counted: health and reflection.
func exemptFromInflight(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/grpc.health.") || strings.HasPrefix(fullMethod, "/grpc.reflection.")
}

// connKey is identityKey, but per client connection for the development identity:
// in development mode every caller, the suite's own consumers and clients included, is
// that one identity, so a per-identity cap would let one client's flood refuse the
// suite's own watches and calls. (Development mode serves loopback only.)
func connKey(ctx context.Context) string {
	key := identityKey(ctx)
	if id, ok := auth.FromContext(ctx); ok && id.Kind == auth.KindDevelopment {
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			key += "\x00" + p.Addr.String()
		}
	}
	return key
}

// HoldCall takes, for the HTTP face, the in-flight call slot of a request of the
// authenticated caller id before its body is read (the transcoder buffers a whole
// request message before the grpc.Server, and so this chain, sees it). remote is the
// client's address, which names the development identity's connection. The returned
// context carries the slot, so the chain takes no second one for the same call; the
// caller calls release when the request is done. Past the cap it returns the same
// RESOURCE_EXHAUSTED (TOO_MANY_CALLS_IN_FLIGHT, RetryInfo) as the chain.
//
// For a caller without an identity (id.Subject empty: the end user's GetBlockedStatus)
// it takes a slot of the HTTP face's stranger pool instead, MaxStrangerStreamsPerHost
// per client host (remote), or returns RESOURCE_EXHAUSTED
// (TOO_MANY_UNAUTHENTICATED_CALLS). That pool has no total: the HTTP server sets no
// read timeout, so a few hosts sending their bodies slowly would hold a total for as
// long as they like and refuse every end user's page.
func (s *Server) HoldCall(ctx context.Context, id auth.Identity, remote string) (_ context.Context, release func(), _ error) {
	if id.Subject == "" {
		rel, ok := s.httpStrangers.acquire(clientHost(remote))
		if !ok {
			return ctx, func() {}, apierr.New(codes.ResourceExhausted, ReasonTooManyStrangerCalls,
				"too many calls in flight from callers without a client certificate; retry")
		}
		var once sync.Once
		return ctx, func() { once.Do(rel) }, nil
	}
	key := id.Kind.String() + "\x00" + id.Subject
	if id.Kind == auth.KindDevelopment {
		key += "\x00" + remote
	}
	if err := s.calls.acquireCall(key, id.Kind == auth.KindService); err != nil {
		return ctx, func() {}, err
	}
	var once sync.Once
	return context.WithValue(ctx, heldCallKey{}, key), func() { once.Do(func() { s.calls.releaseCall(key) }) }, nil
}

// acquireCall takes a call slot for key, or returns the refusal. A service's calls
// (service true) are never refused by the server's total, only counted in it.
func (f *inflight) acquireCall(key string, service bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	limit := f.perIdentity()
	if service {
		limit = f.maxCalls // a service's share is not bounded by half the total
	}
	if f.calls[key] >= limit {
		return f.tooManyCalls()
	}
	if !service && f.total >= f.maxTotal && (f.calls[key] >= f.lightCalls() || f.total >= f.maxTotal+f.maxTotal/4) {
		return f.overloaded()
	}
	f.calls[key]++
	f.total++
	return nil
}

func (f *inflight) releaseCall(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.total--
	if f.calls[key]--; f.calls[key] <= 0 {
		delete(f.calls, key)
	}
}

// isService reports whether ctx's caller is one of the suite's services.
func isService(ctx context.Context) bool {
	id, ok := auth.FromContext(ctx)
	return ok && id.Kind == auth.KindService
}

func (f *inflight) acquireBytes(key string, n int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	// One request alone is always admitted (the receive limit bounds it), so a limit
	// under the largest request never refuses every call.
	if cur := f.bytes[key]; cur > 0 && cur+n > f.maxBytes {
		return false
	}
	f.bytes[key] += n
	return true
}

func (f *inflight) releaseBytes(key string, n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bytes[key] -= n; f.bytes[key] <= 0 {
		delete(f.bytes, key)
	}
}

// refusal is RESOURCE_EXHAUSTED with the ErrorInfo reason and a RetryInfo.
func (f *inflight) refusal(reason, msg string) error {
	st := status.New(codes.ResourceExhausted, msg)
	if d, err := st.WithDetails(
		&errdetails.ErrorInfo{Reason: reason, Domain: apierr.Domain, Metadata: map[string]string{
			"max_calls_per_identity": fmt.Sprint(f.perIdentity()), "max_request_bytes_per_identity": fmt.Sprint(f.maxBytes),
			"max_calls_in_flight": fmt.Sprint(f.maxTotal)}},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(inflightRetryDelay)},
	); err == nil {
		st = d
	}
	return st.Err()
}

func (f *inflight) tooManyCalls() error { return f.errTooManyCalls }

func (f *inflight) overloaded() error { return f.errOverloaded }

// heldCallKey marks a call whose slot the tap took (the value is the key).
type heldCallKey struct{}

// tap is the InTapHandle part: it takes the call's slot before its request is read.
// A caller it cannot identify passes untouched (refuseStrangers and the auth
// interceptor decide about it).
func (f *inflight) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if exemptFromInflight(info.FullMethodName) || !f.isUnary(info.FullMethodName) {
		return ctx, nil
	}
	idCtx, ok := f.authz.Authenticate(ctx)
	if !ok {
		return ctx, nil
	}
	key := connKey(idCtx)
	if err := f.acquireCall(key, isService(idCtx)); err != nil {
		return ctx, err
	}
	// The stream's context ends when the stream does.
	context.AfterFunc(ctx, func() { f.releaseCall(key) })
	return context.WithValue(ctx, heldCallKey{}, key), nil
}

// unaryInterceptor runs after authentication: it takes the call's slot unless the tap
// did, and charges the request's bytes.
func (f *inflight) unaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if exemptFromInflight(info.FullMethod) {
			return handler(ctx, req)
		}
		key, _ := ctx.Value(heldCallKey{}).(string)
		if key == "" {
			key = connKey(ctx)
			if err := f.acquireCall(key, isService(ctx)); err != nil {
				return nil, err
			}
			defer f.releaseCall(key)
		}
		var n int64
		if m, ok := req.(proto.Message); ok {
			n = int64(proto.Size(m))
		}
		if !f.acquireBytes(key, n) {
			return nil, f.refusal(ReasonTooManyBytesInFlight,
				fmt.Sprintf("at most %d bytes of unary requests may be in flight per identity; this one has %d; retry when others have finished", f.maxBytes, n))
		}
		defer f.releaseBytes(key, n)
		return handler(ctx, req)
	}
}
