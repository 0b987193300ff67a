package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"buf.build/go/protovalidate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/telemetry"
)

// quietServices are logged at DEBUG when they succeed: probes would drown the log, and
// every access decision is already recorded in the sign-in log.
var quietServices = []string{
	"/grpc.health.v1.Health/", "/grpc.reflection.",
	"/condaccess.access.v1.AccessService/EvaluateAccess", "/envoy.service.auth.v3.Authorization/Check",
}

// ReasonShuttingDown is the ErrorInfo reason of a stream ended because the server stops.
const ReasonShuttingDown = "SHUTTING_DOWN"

// drainStream ends a stream promptly when the server starts to stop: its context is
// cancelled, and the client gets UNAVAILABLE (reason SHUTTING_DOWN) so that it
// reconnects elsewhere or later. Without it, long-lived streams (watches, agent
// connections) would hold a graceful stop until its deadline.
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

func logUnary(logger *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		logRPC(ctx, logger, info.FullMethod, start, err)
		return resp, err
	}
}

func logStream(logger *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		err := handler(srv, ss)
		logRPC(ss.Context(), logger, info.FullMethod, start, err)
		return err
	}
}

// logRPC writes the one line for an RPC.
func logRPC(ctx context.Context, logger *slog.Logger, method string, start time.Time, err error) {
	st := status.Convert(err)
	level := levelFor(st.Code())
	if level == slog.LevelInfo {
		for _, q := range quietServices {
			if strings.HasPrefix(method, q) {
				level = slog.LevelDebug
			}
		}
	}
	if !logger.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("method", method),
		slog.String("code", st.Code().String()),
		slog.Duration("duration", time.Since(start)),
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		attrs = append(attrs, slog.String("peer", p.Addr.String()))
	}
	if id := telemetry.TraceID(ctx); id != "" {
		attrs = append(attrs, slog.String("trace_id", id))
	}
	if err != nil {
		attrs = append(attrs, slog.String("err", st.Message()))
		if r := apierr.Reason(err); r != "" {
			attrs = append(attrs, slog.String("reason", r))
		}
	}
	logger.LogAttrs(ctx, level, "rpc", attrs...)
}

// levelFor is INFO for OK, ERROR for server faults and WARN for everything else.
func levelFor(c codes.Code) slog.Level {
	switch c {
	case codes.OK:
		return slog.LevelInfo
	case codes.Internal, codes.Unknown, codes.DataLoss:
		return slog.LevelError
	default:
		return slog.LevelWarn
	}
}

func validateUnary(v protovalidate.Validator) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := validateMsg(v, req); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

func validateStream(v protovalidate.Validator) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &validatingStream{ServerStream: ss, v: v})
	}
}

// validatingStream validates every message the handler receives.
type validatingStream struct {
	grpc.ServerStream
	v protovalidate.Validator
}

func (s *validatingStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return validateMsg(s.v, m)
}

func validateMsg(v protovalidate.Validator, m any) error {
	msg, ok := m.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "server: cannot validate %T: not a proto message", m)
	}
	return validationStatus(v.Validate(msg))
}

// validationStatus converts a protovalidate error into INVALID_ARGUMENT with an
// ErrorInfo and BadRequest field violations named by snake_case field path; a rule
// that cannot be compiled or evaluated is INTERNAL.
func validationStatus(err error) error {
	if err == nil {
		return nil
	}
	var verr *protovalidate.ValidationError
	if !errors.As(err, &verr) {
		return status.Errorf(codes.Internal, "request validation failed: %v", err)
	}
	vs := make([]*errdetails.BadRequest_FieldViolation, 0, len(verr.Violations))
	for _, v := range verr.Violations {
		desc := v.Proto.GetMessage()
		if desc == "" {
			desc = v.Proto.GetRuleId()
		}
		vs = append(vs, apierr.FieldViolation(protovalidate.FieldPathString(v.Proto.GetField()), desc))
	}
	return apierr.InvalidArgument(apierr.ReasonInvalidArgument, vs...)
}

// errPanic is what the caller of a panicking handler sees.
var errPanic = status.Error(codes.Internal, "internal error")

func recoverUnary(logger *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				logPanic(ctx, logger, info.FullMethod, r)
				resp, err = nil, errPanic
			}
		}()
		return handler(ctx, req)
	}
}

func recoverStream(logger *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				logPanic(ss.Context(), logger, info.FullMethod, r)
				err = errPanic
			}
		}()
		return handler(srv, ss)
	}
}

func logPanic(ctx context.Context, logger *slog.Logger, method string, r any) {
	logger.ErrorContext(ctx, "panic in handler", "method", method, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
}
