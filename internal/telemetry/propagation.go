package telemetry

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
)

var w3c = propagation.TraceContext{}

// TraceContextFromContext returns the W3C trace context of the span in ctx, for
// storing in a message; it is empty (not nil) when ctx has no valid span.
func TraceContextFromContext(ctx context.Context) *commonv1.TraceContext {
	c := propagation.MapCarrier{}
	w3c.Inject(ctx, c)
	return &commonv1.TraceContext{Traceparent: c.Get("traceparent"), Tracestate: c.Get("tracestate")}
}

// ContextFromTraceContext returns ctx with tc as its remote parent span context;
// ctx is returned unchanged when tc is nil, empty or malformed.
func ContextFromTraceContext(ctx context.Context, tc *commonv1.TraceContext) context.Context {
	if tc.GetTraceparent() == "" {
		return ctx
	}
	return w3c.Extract(ctx, propagation.MapCarrier{
		"traceparent": tc.GetTraceparent(),
		"tracestate":  tc.GetTracestate(),
	})
}

// TraceID returns the hex trace id of the span in ctx, or "" without one.
func TraceID(ctx context.Context) string {
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		return sc.TraceID().String()
	}
	return ""
}

// NewLogHandler wraps h so that every record logged with a context holding a span
// gets trace_id and span_id attributes (trace_id only when the record has none yet).
func NewLogHandler(h slog.Handler) slog.Handler { return logHandler{h} }

type logHandler struct{ slog.Handler }

func (l logHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		hasTraceID := false
		r.Attrs(func(a slog.Attr) bool {
			hasTraceID = a.Key == "trace_id"
			return !hasTraceID
		})
		r = r.Clone()
		if !hasTraceID {
			r.AddAttrs(slog.String("trace_id", sc.TraceID().String()))
		}
		r.AddAttrs(slog.String("span_id", sc.SpanID().String()))
	}
	return l.Handler.Handle(ctx, r)
}

func (l logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return logHandler{l.Handler.WithAttrs(attrs)}
}

func (l logHandler) WithGroup(name string) slog.Handler { return logHandler{l.Handler.WithGroup(name)} }
