package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"buf.build/go/protovalidate"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/telemetry"
)

// quietServices are logged at DEBUG when they succeed: probes would drown the log, and
// every access decision is already recorded in the sign-in log.
var quietServices = []string{
	"/grpc.health.v1.Health/", "/grpc.reflection.",
	"/condaccess.access.v1.AccessService/EvaluateAccess", "/envoy.service.auth.v3.Authorization/Check",
}

// openServices are selected out of authentication: anyone may probe health and read
// the schema by reflection.
var openServices = []string{"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}

// Log line keys added to the library's fields (grpc.service, grpc.method, grpc.code, ...).
const (
	LogKeyCaller  = "caller"
	LogKeyTraceID = "trace_id"
	LogKeyReason  = "reason"
)

// ReasonShuttingDown is the ErrorInfo reason of a stream ended because the server stops.
const ReasonShuttingDown = "SHUTTING_DOWN"

func isQuiet(_ context.Context, c interceptors.CallMeta) bool {
	m := c.FullMethod()
	for _, q := range quietServices {
		if strings.HasPrefix(m, q) {
			return true
		}
	}
	return false
}

func isOpen(_ context.Context, c interceptors.CallMeta) bool {
	for _, s := range openServices {
		if c.Service == s {
			return true
		}
	}
	return false
}

func not(f func(context.Context, interceptors.CallMeta) bool) selector.Matcher {
	return selector.MatchFunc(func(ctx context.Context, c interceptors.CallMeta) bool { return !f(ctx, c) })
}

// slogLogger adapts slog to the logging interceptor (the adapter the library documents).
func slogLogger(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}

// loggingOptions logs one line per RPC when it finishes, with the trace id, the
// caller (added by the auth function once known) and the ErrorInfo reason.
func loggingOptions(levels logging.CodeToLevel) []logging.Option {
	return []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithLevels(levels),
		logging.WithDurationField(logging.DurationToDurationField),
		logging.WithFieldsFromContext(func(ctx context.Context) logging.Fields {
			if id := telemetry.TraceID(ctx); id != "" {
				return logging.Fields{LogKeyTraceID, id}
			}
			return nil
		}),
		logging.WithErrorFields(func(err error) logging.Fields {
			if r := apierr.Reason(err); r != "" {
				return logging.Fields{LogKeyReason, r}
			}
			return nil
		}),
	}
}

// levelFor is INFO for OK, ERROR for server faults and WARN for everything else.
func levelFor(c codes.Code) logging.Level {
	switch c {
	case codes.OK:
		return logging.LevelInfo
	case codes.Internal, codes.Unknown, codes.DataLoss:
		return logging.LevelError
	default:
		return logging.LevelWarn
	}
}

// quietLevelFor is levelFor with success at DEBUG.
func quietLevelFor(c codes.Code) logging.Level {
	if c == codes.OK {
		return logging.LevelDebug
	}
	return levelFor(c)
}

// authFunc is the auth interceptor's function: the existing role check, with the
// method from the server transport stream; the caller joins the RPC's log line.
func authFunc(authz *auth.Authorizer) func(ctx context.Context) (context.Context, error) {
	return func(ctx context.Context) (context.Context, error) {
		method, ok := grpc.Method(ctx)
		if !ok {
			return ctx, status.Error(codes.Internal, "server: no method in context")
		}
		ctx, err := authz.Authorize(ctx, method)
		if id, ok := auth.FromContext(ctx); ok {
			logging.AddFields(ctx, logging.Fields{LogKeyCaller, id.Subject})
		}
		return ctx, err
	}
}

// badRequestUnary and badRequestStream give the protovalidate interceptor's errors the
// shape every condaccess error has (ErrorInfo reason INVALID_ARGUMENT and BadRequest
// field violations, AIP-193): the library's interceptor attaches buf.validate.Violations,
// which generic clients cannot read. They wrap the protovalidate interceptor, so a
// stream handler that returns its RecvMsg error gets the same conversion.
func badRequestUnary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		return resp, toBadRequest(err)
	}
}

func badRequestStream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return toBadRequest(handler(srv, ss))
	}
}

// toBadRequest converts an INVALID_ARGUMENT status carrying buf.validate.Violations
// into apierr's shape; other errors pass unchanged.
func toBadRequest(err error) error {
	if err == nil || status.Code(err) != codes.InvalidArgument {
		return err
	}
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if vs, ok := d.(*validate.Violations); ok {
			return violationsStatus(vs.GetViolations())
		}
	}
	return err
}

// violationsStatus is INVALID_ARGUMENT with an ErrorInfo and BadRequest field
// violations named by snake_case field path.
func violationsStatus(violations []*validate.Violation) error {
	vs := make([]*errdetails.BadRequest_FieldViolation, 0, len(violations))
	for _, v := range violations {
		desc := v.GetMessage()
		if desc == "" {
			desc = v.GetRuleId()
		}
		vs = append(vs, apierr.FieldViolation(protovalidate.FieldPathString(v.GetField()), desc))
	}
	return apierr.InvalidArgument(apierr.ReasonInvalidArgument, vs...)
}

// drainStream ends a stream promptly when the server starts to stop: its context is
// cancelled, and the client gets UNAVAILABLE (reason SHUTTING_DOWN) so that it
// reconnects elsewhere or later. Without it, long-lived streams (watches, agent
// connections) would hold a graceful stop until its deadline. go-grpc-middleware has
// no equivalent, hence our own.
func drainStream(drain <-chan struct{}) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, cancel := context.WithCancel(ss.Context())
		defer cancel()
		go func() {
			select {
			case <-drain:
				cancel()
			case <-ctx.Done():
			}
		}()
		err := handler(srv, &ctxStream{ServerStream: ss, ctx: ctx})
		select {
		case <-drain:
			if ss.Context().Err() == nil && (err == nil || errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled) {
				return apierr.New(codes.Unavailable, ReasonShuttingDown, "the server is shutting down; reconnect and resume")
			}
		default:
		}
		return err
	}
}

// ctxStream is a grpc.ServerStream with another context.
type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }

// errPanic is what the caller of a panicking handler sees.
var errPanic = status.Error(codes.Internal, "internal error")

// recoveryHandler logs the panic with its stack and hides it from the caller.
func recoveryHandler(logger *slog.Logger) func(ctx context.Context, p any) error {
	return func(ctx context.Context, p any) error {
		method, _ := grpc.Method(ctx)
		logger.ErrorContext(ctx, "panic in handler", "method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		return errPanic
	}
}

// Callers without a client certificate may call only the open methods (health,
// reflection, enrollment); these bound how many such calls they have in flight, since
// each may carry a request of up to MaxRecvMsgSize that the library buffers before any
// handler runs: at most MaxStrangerStreams in the whole server (64 x 4 MiB = 256 MiB
// by default; as many again for the open watches, which have their own pool) and
// MaxStrangerStreamsPerHost from one peer address (an IPv6 /48), so that one host
// cannot take every slot. More are refused with RESOURCE_EXHAUSTED (the callers, an
// enrolling agent or a health probe, retry).
const (
	MaxStrangerStreams        = 64
	MaxStrangerStreamsPerHost = 8
)

// strangers counts the open-method streams in flight of callers without a certificate.
type strangers struct {
	mu     sync.Mutex
	total  int
	byHost map[string]int
	// perHostOnly drops the total cap (the HTTP face's pool, see Server.HoldCall).
	perHostOnly bool
}

func (s *strangers) acquire(host string) (release func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if (!s.perHostOnly && s.total >= MaxStrangerStreams) || s.byHost[host] >= MaxStrangerStreamsPerHost {
		return nil, false
	}
	s.total++
	s.byHost[host]++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.total--
		if s.byHost[host]--; s.byHost[host] <= 0 {
			delete(s.byHost, host)
		}
	}, true
}

// refuseStrangers is the server's InTapHandle (the gRPC library has no interceptor
// that runs earlier): outside development mode, a stream for a method that needs a
// client certificate is refused with UNAUTHENTICATED when the connection presented
// none, before any of its request data is read. The library receives a whole request
// message before the interceptor chain runs, so without this a stranger could make the
// server hold up to MaxRecvMsgSize per stream, MaxConcurrentStreams streams per
// connection (200 unauthenticated 4 MB calls on one connection took a server from
// 61 MB to 1.9 GB). A stranger's calls of open methods are bounded (see
// MaxStrangerStreams). The auth interceptor still decides everything else (expiry,
// revocation, roles, devices).
//
// The end user's watches (WatchBlockedStatus) keep their slot for as long as they stay
// open, so they have a pool of their own: a few hosts holding watches open must not
// take the slots of enrollment and health calls.
func refuseStrangers(insecure bool) tap.ServerInHandle {
	calls := &strangers{byHost: map[string]int{}}
	watches := &strangers{byHost: map[string]int{}}
	return func(ctx context.Context, info *tap.Info) (context.Context, error) {
		if insecure || auth.HasVerifiedCertificate(ctx) {
			return ctx, nil
		}
		if !auth.IsOpen(info.FullMethodName) {
			return ctx, apierr.New(codes.Unauthenticated, auth.ReasonUnauthenticated, "a verified client certificate is required")
		}
		host := ""
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			host = clientHost(p.Addr.String())
		}
		st, watch := calls, false
		if _, m, _ := strings.Cut(strings.TrimPrefix(info.FullMethodName, "/"), "/"); strings.HasPrefix(m, "Watch") {
			st, watch = watches, true
		}
		release, ok := st.acquire(host)
		if !ok {
			return ctx, apierr.New(codes.ResourceExhausted, ReasonTooManyStrangerCalls,
				"too many calls in flight from callers without a client certificate; retry")
		}
		if !watch {
			// A call that sends its headers and then nothing would keep its slot for
			// ever (the library waits for the request without a deadline): eight such
			// calls per host from eight hosts refused every enrollment. The open unary
			// calls end within strangerCallTimeout or are cut (DEADLINE_EXCEEDED).
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, strangerCallTimeout)
			context.AfterFunc(ctx, cancel)
		}
		// The stream's context ends when the stream does.
		context.AfterFunc(ctx, release)
		return ctx, nil
	}
}

// strangerCallTimeout bounds an open unary call (enrollment, health, the end user's
// GetBlockedStatus) of a caller without a certificate, receiving its request included.
var strangerCallTimeout = 30 * time.Second

// ReasonTooManyStrangerCalls is the ErrorInfo reason of a refused open-method call
// from a caller without a certificate (MaxStrangerStreams).
const ReasonTooManyStrangerCalls = "TOO_MANY_UNAUTHENTICATED_CALLS"
