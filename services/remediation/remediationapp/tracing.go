package remediationapp

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/telemetry"
	"github.com/condaccess/condaccess/services/remediation"
)

// OtelTracing implements remediation.Tracing with the global tracer provider: a span
// is a child of the stored trace context (the alert's) and links to the others.
type OtelTracing struct{}

var tracer = otel.Tracer("github.com/condaccess/condaccess/services/remediation")

func spanContext(tc remediation.TraceContext) trace.SpanContext {
	ctx := telemetry.ContextFromTraceContext(context.Background(), &commonv1.TraceContext{Traceparent: tc.TraceParent, Tracestate: tc.TraceState})
	return trace.SpanContextFromContext(ctx)
}

// Start implements remediation.Tracing.
func (OtelTracing) Start(ctx context.Context, name string, parent remediation.TraceContext, links ...remediation.TraceContext) (context.Context, func(error)) {
	var opts []trace.SpanStartOption
	if parent.TraceParent != "" {
		if sc := spanContext(parent); sc.IsValid() {
			if trace.SpanContextFromContext(ctx).IsValid() {
				// Already inside a trace (an RPC): link to the alert's instead.
				opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
			} else {
				ctx = trace.ContextWithRemoteSpanContext(ctx, sc)
			}
		}
	}
	for _, l := range links {
		if sc := spanContext(l); sc.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
		}
	}
	ctx, span := tracer.Start(ctx, name, opts...)
	return ctx, func(err error) {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}

// Current implements remediation.Tracing.
func (OtelTracing) Current(ctx context.Context) remediation.TraceContext {
	tc := telemetry.TraceContextFromContext(ctx)
	return remediation.TraceContext{TraceParent: tc.GetTraceparent(), TraceState: tc.GetTracestate()}
}
