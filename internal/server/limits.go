package server

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/auth"
)

// Error reasons of the per-identity limits.
const (
	ReasonTooManyWatches = "TOO_MANY_WATCHES"
	ReasonRateLimited    = "RATE_LIMITED"
)

// DefaultMaxWatchesPerIdentity is the default cap on one identity's open watch streams.
const DefaultMaxWatchesPerIdentity = 64

// isWatch reports whether fullMethod is a condaccess watch: a server stream whose
// method name starts with "Watch" (grpc.health.v1.Health/Watch is not one).
func isWatch(fullMethod string, info *grpc.StreamServerInfo) bool {
	if !strings.HasPrefix(fullMethod, "/condaccess.") || info.IsClientStream || !info.IsServerStream {
		return false
	}
	_, method, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	return strings.HasPrefix(method, "Watch")
}

// watchLimiter caps the watch streams one identity holds open at a time (one client
// connection in development mode: see connKey). Each open watch costs a goroutine and
// a replay buffer; without a cap one caller could open thousands (the audit opened
// 5,000 on one connection: 10,000 goroutines, 700 MB).
// go-grpc-middleware's ratelimit limits a rate, not a number open per key, hence our own.
type watchLimiter struct {
	max  int
	mu   sync.Mutex
	open map[string]int
}

func newWatchLimiter(maxPerIdentity int) *watchLimiter {
	return &watchLimiter{max: maxPerIdentity, open: map[string]int{}}
}

// acquire takes a slot for key, or returns false at the cap.
func (w *watchLimiter) acquire(key string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.open[key] >= w.max {
		return false
	}
	w.open[key]++
	return true
}

func (w *watchLimiter) release(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.open[key]--; w.open[key] <= 0 {
		delete(w.open, key)
	}
}

// Open returns how many watches the identities with subject hold open (of every kind).
func (w *watchLimiter) Open(subject string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for key, c := range w.open {
		// kind NUL subject [NUL connection address, in development mode]
		if parts := strings.Split(key, "\x00"); len(parts) > 1 && parts[1] == subject {
			n += c
		}
	}
	return n
}

// full reports whether key holds its cap of watches.
func (w *watchLimiter) full(key string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.open[key] >= w.max
}

func (w *watchLimiter) refusal() error {
	return apierr.WithMetadata(codes.ResourceExhausted, ReasonTooManyWatches,
		fmt.Sprintf("at most %d watch streams may be open per identity; close one or share a stream", w.max),
		map[string]string{"max_watches_per_identity": fmt.Sprint(w.max)})
}

// tap refuses, in the server's InTapHandle, a watch of an identity that already holds
// its cap, before the stream exists: no goroutine, no interceptor chain, no log line,
// no request read. A flood of watch attempts (the audit's 5,000 from one identity)
// then costs the server little more than reading their headers, which keeps it
// responsive (health) meanwhile. It only looks: the slot is taken by the stream
// interceptor, which stays the authority (a few attempts racing past the tap are
// refused there). A caller the tap cannot identify passes to the chain, which decides.
func (w *watchLimiter) tap(authz *auth.Authorizer, isWatch func(fullMethod string) bool) tap.ServerInHandle {
	return func(ctx context.Context, info *tap.Info) (context.Context, error) {
		if !isWatch(info.FullMethodName) {
			return ctx, nil
		}
		idCtx, ok := authz.Authenticate(ctx)
		if ok && w.full(connKey(idCtx)) {
			return ctx, w.refusal()
		}
		return ctx, nil
	}
}

// stream is the interceptor; it runs after authentication, so the identity is known.
func (w *watchLimiter) stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if !isWatch(info.FullMethod, info) {
			return handler(srv, ss)
		}
		key := connKey(ss.Context())
		if !w.acquire(key) {
			return w.refusal()
		}
		defer w.release(key)
		return handler(srv, ss)
	}
}

// identityKey names the caller for its limits. An authenticated caller is named by how
// it was authenticated and its subject: the kind keeps a role certificate whose
// CommonName equals a service's (say, a reader named condaccess-compliance) from using
// up that service's watches or alert budget. A caller without an identity (the open
// methods, e.g. the end user's GetBlockedStatus) is named by its network address
// without the port (an IPv6 address by its /48), so that one client cannot use up
// everyone's share.
func identityKey(ctx context.Context) string {
	if id, ok := auth.FromContext(ctx); ok && id.Subject != "" {
		return id.Kind.String() + "\x00" + id.Subject
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return "addr:" + clientHost(p.Addr.String())
	}
	return ""
}

// clientHost names the client at addr (host:port) for the limits of callers without
// an identity: its address without the port; an IPv6 address by its /48. One IPv6
// client holds at least a whole /64 (it may take a new source address for each
// connection), and a /48 is what a site is given: tunnel brokers hand one out free
// to anyone, many providers give their customers a /56 or a /48. Keyed by the /64, one
// such attacker had 65,536 keys, each with its own share, and took every total. A
// /48 counts like one IPv4 address, which a whole site behind NAT shares too. IPv4
// (also IPv4-mapped) stays whole.
func clientHost(addr string) string {
	a := addr
	if h, _, err := net.SplitHostPort(a); err == nil {
		a = h
	}
	if ip, err := netip.ParseAddr(a); err == nil {
		if ip = ip.Unmap(); ip.Is6() {
			a = netip.PrefixFrom(ip.WithZone(""), strangerIPv6Prefix).Masked().String()
		} else {
			a = ip.String()
		}
	}
	return a
}

// strangerIPv6Prefix is the length of the IPv6 prefix that names one client.
const strangerIPv6Prefix = 48

// RateLimit is a token bucket per caller identity for the methods it names.
type RateLimit struct {
	// Methods are full method names ("/pkg.Service/Method") sharing one bucket per identity.
	Methods []string
	// Rate is the sustained rate in tokens per second; Burst the bucket size.
	Rate  float64
	Burst int
	// Cost is the tokens a request takes (e.g. the alerts in a batch); nil means 1.
	Cost func(req any) int
}

// maxBuckets bounds the per-identity buckets kept; past it, full (idle) buckets are
// dropped, which forgets nothing a caller could exploit: a full bucket is the
// state a new one starts in.
const maxBuckets = 10000

// rateLimiter applies RateLimits per identity. The token bucket is x/time/rate. The
// interceptor is ours, not go-grpc-middleware's ratelimit: that one replaces the
// limiter's error with a plain RESOURCE_EXHAUSTED status, so the caller would not
// learn when to retry (RetryInfo) nor why (ErrorInfo), and its Limiter sees neither
// the method nor the request, so it cannot charge a batch by its size.
type rateLimiter struct {
	byMethod map[string]int // full method -> index in limits
	limits   []RateLimit
	mu       sync.Mutex
	buckets  map[bucketKey]*rate.Limiter
	// sweepAt is the bucket count at which the next sweep of full buckets runs: after a
	// sweep, twice what stayed (at least maxBuckets), so that callers who keep their
	// buckets busy (many identities, or a stranger's many IPv6 prefixes) cost a sweep
	// per doubling, not a scan of the whole map per new key.
	sweepAt int
	sweeps  int // sweeps run (tests)
}

type bucketKey struct {
	limit    int
	identity string
}

func newRateLimiter(limits []RateLimit) *rateLimiter {
	r := &rateLimiter{byMethod: map[string]int{}, limits: limits, buckets: map[bucketKey]*rate.Limiter{}, sweepAt: maxBuckets}
	for i, l := range limits {
		for _, m := range l.Methods {
			r.byMethod[m] = i
		}
	}
	return r
}

func (r *rateLimiter) bucket(k bucketKey) *rate.Limiter {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.buckets[k]
	if ok {
		return b
	}
	if len(r.buckets) >= r.sweepAt {
		now := time.Now()
		for key, lim := range r.buckets {
			if lim.TokensAt(now) >= float64(lim.Burst()) {
				delete(r.buckets, key)
			}
		}
		r.sweeps++
		r.sweepAt = max(maxBuckets, 2*len(r.buckets))
	}
	l := r.limits[k.limit]
	b = rate.NewLimiter(rate.Limit(l.Rate), l.Burst)
	r.buckets[k] = b
	return b
}

// allow takes the request's tokens or returns RESOURCE_EXHAUSTED with a RetryInfo
// saying when they will be there.
func (r *rateLimiter) allow(ctx context.Context, method string, req any) error {
	i, ok := r.byMethod[method]
	if !ok {
		return nil
	}
	l := r.limits[i]
	cost := 1
	if l.Cost != nil {
		cost = max(l.Cost(req), 1)
	}
	if cost > l.Burst {
		return apierr.InvalidArgument(apierr.ReasonInvalidArgument, apierr.FieldViolation("",
			fmt.Sprintf("this request costs %d tokens, more than the burst of %d any caller may send at once; split it", cost, l.Burst)))
	}
	now := time.Now()
	res := r.bucket(bucketKey{limit: i, identity: identityKey(ctx)}).ReserveN(now, cost)
	delay := res.DelayFrom(now)
	if delay == 0 {
		return nil
	}
	res.CancelAt(now)
	return r.refusal(l, method, delay)
}

// tap refuses, in the server's InTapHandle, a call of an authenticated caller whose
// bucket for the method has less than one token, before the call's request is read
// or a goroutine, a span or a log line exists for it: under a flood of alerts from one
// sensor most calls are refused, and through the whole chain each refusal cost about
// as much as a served call. It only looks: the interceptor stays the authority and
// charges the request's cost (a batch's alerts), which the tap cannot know. A caller
// the tap cannot identify passes to the chain.
func (r *rateLimiter) tap(authz *auth.Authorizer) tap.ServerInHandle {
	return func(ctx context.Context, info *tap.Info) (context.Context, error) {
		i, ok := r.byMethod[info.FullMethodName]
		if !ok {
			return ctx, nil
		}
		idCtx, ok := authz.Authenticate(ctx)
		if !ok {
			return ctx, nil
		}
		l := r.limits[i]
		now := time.Now()
		tokens := r.bucket(bucketKey{limit: i, identity: identityKey(idCtx)}).TokensAt(now)
		if tokens >= 1 || l.Rate <= 0 {
			return ctx, nil
		}
		delay := time.Duration((1 - tokens) / l.Rate * float64(time.Second))
		return ctx, r.refusal(l, info.FullMethodName, delay)
	}
}

// refusal is RESOURCE_EXHAUSTED RATE_LIMITED with a RetryInfo of delay.
func (r *rateLimiter) refusal(l RateLimit, method string, delay time.Duration) error {
	st := status.New(codes.ResourceExhausted, fmt.Sprintf("rate limit of %g per second (burst %d) per identity exceeded; retry after %s", l.Rate, l.Burst, delay.Round(time.Millisecond)))
	if d, err := st.WithDetails(
		&errdetails.ErrorInfo{Reason: ReasonRateLimited, Domain: apierr.Domain, Metadata: map[string]string{"method": method}},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(delay)},
	); err == nil {
		st = d
	}
	return st.Err()
}

// stream charges a stream's opening (one token) to the limit of its method, if any.
func (r *rateLimiter) stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := r.allow(ss.Context(), info.FullMethod, nil); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

func (r *rateLimiter) unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := r.allow(ctx, info.FullMethod, req); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}
