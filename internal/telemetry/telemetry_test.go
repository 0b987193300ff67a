package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/telemetry"
)

func clearOTelEnv(t *testing.T) {
	for _, k := range []string{
		"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER",
		"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
		"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
	} {
		t.Setenv(k, "")
	}
}

func setup(t *testing.T) *telemetry.Telemetry {
	t.Helper()
	tel, err := telemetry.Setup(context.Background(), "test-svc", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return tel
}

func TestSetupWithoutExport(t *testing.T) {
	clearOTelEnv(t)
	tel := setup(t)

	ctx, span := tel.TracerProvider().Tracer("t").Start(context.Background(), "op")
	defer span.End()
	if id := telemetry.TraceID(ctx); len(id) != 32 || id == strings.Repeat("0", 32) {
		t.Errorf("TraceID = %q, want a 32-hex-digit id", id)
	}
	if otel.GetTracerProvider() != tel.TracerProvider() {
		t.Error("global tracer provider not set")
	}

	counter, err := tel.MeterProvider().Meter("t").Int64Counter("condaccess_test_events")
	if err != nil {
		t.Fatal(err)
	}
	counter.Add(ctx, 3)
	rec := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	if !strings.Contains(string(body), "condaccess_test_events_total") ||
		!strings.Contains(string(body), `service_name="test-svc"`) {
		t.Errorf("metrics lack the counter or service name:\n%s", body)
	}
}

func TestServiceNameFromEnv(t *testing.T) {
	clearOTelEnv(t)
	t.Setenv("OTEL_SERVICE_NAME", "renamed")
	tel := setup(t)
	rec := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(rec.Body.String(), `service_name="renamed"`) {
		t.Errorf("OTEL_SERVICE_NAME not honoured:\n%s", rec.Body.String())
	}
}

func TestExporterSelection(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		wantErr bool
	}{
		{"none", map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, false},
		{"endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, false},
		{"explicit otlp grpc", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, false},
		{"metrics prometheus", map[string]string{"OTEL_METRICS_EXPORTER": "prometheus"}, false},
		{"http protocol refused", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, true},
		{"unknown exporter refused", map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, true},
		{"protocol irrelevant without export", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearOTelEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			tel, err := telemetry.Setup(context.Background(), "x", nil)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Setup err = %v, wantErr %v", err, tt.wantErr)
			}
			if tel != nil {
				ctx, cancel := context.WithCancel(context.Background())
				cancel() // do not wait for an unreachable collector
				_ = tel.Shutdown(ctx)
			}
		})
	}
}

func TestTraceContextRoundTrip(t *testing.T) {
	clearOTelEnv(t)
	tel := setup(t)

	if tc := telemetry.TraceContextFromContext(context.Background()); tc == nil || tc.GetTraceparent() != "" {
		t.Errorf("no span: got %v, want empty", tc)
	}
	if ctx := telemetry.ContextFromTraceContext(context.Background(), nil); telemetry.TraceID(ctx) != "" {
		t.Error("nil trace context produced a trace id")
	}

	ctx, span := tel.TracerProvider().Tracer("t").Start(context.Background(), "producer")
	defer span.End()
	tc := telemetry.TraceContextFromContext(ctx)
	if !strings.HasPrefix(tc.GetTraceparent(), "00-"+telemetry.TraceID(ctx)+"-") {
		t.Fatalf("traceparent = %q", tc.GetTraceparent())
	}

	consumer := telemetry.ContextFromTraceContext(context.Background(), tc)
	sc := trace.SpanContextFromContext(consumer)
	if !sc.IsRemote() || sc.TraceID() != span.SpanContext().TraceID() || sc.SpanID() != span.SpanContext().SpanID() {
		t.Errorf("extracted %v, want remote parent %v", sc, span.SpanContext())
	}
	_, child := tel.TracerProvider().Tracer("t").Start(consumer, "consumer")
	defer child.End()
	if child.SpanContext().TraceID() != span.SpanContext().TraceID() {
		t.Error("child span is not in the producer's trace")
	}

	bad := telemetry.ContextFromTraceContext(context.Background(), &commonv1.TraceContext{Traceparent: "garbage"})
	if telemetry.TraceID(bad) != "" {
		t.Error("malformed traceparent produced a trace id")
	}
}

func TestLogHandler(t *testing.T) {
	clearOTelEnv(t)
	tel := setup(t)
	var buf bytes.Buffer
	logger := slog.New(telemetry.NewLogHandler(slog.NewJSONHandler(&buf, nil))).With("svc", "risk")

	ctx, span := tel.TracerProvider().Tracer("t").Start(context.Background(), "op")
	defer span.End()
	logger.InfoContext(ctx, "with span")
	logger.InfoContext(context.Background(), "without span")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines", len(lines))
	}
	var with, without map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &with); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &without); err != nil {
		t.Fatal(err)
	}
	if with["trace_id"] != span.SpanContext().TraceID().String() || with["span_id"] != span.SpanContext().SpanID().String() || with["svc"] != "risk" {
		t.Errorf("with span: %v", with)
	}
	if _, ok := without["trace_id"]; ok {
		t.Errorf("without span: %v", without)
	}
}
