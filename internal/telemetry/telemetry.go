// Package telemetry sets up OpenTelemetry traces and metrics from the standard OTEL_* variables and carries trace context through logs and messages.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Telemetry owns the SDK tracer and meter providers set up by Setup.
type Telemetry struct {
	tp       *sdktrace.TracerProvider
	mp       *sdkmetric.MeterProvider
	registry *prometheus.Registry
}

// Setup installs, and sets as the otel globals, an SDK TracerProvider (always, so
// trace ids exist without export), the W3C TraceContext+Baggage propagator, and an
// SDK MeterProvider that Prometheus can scrape through MetricsHandler.
//
// Traces and metrics are also pushed by OTLP when the standard variables ask for it:
// OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER "otlp", or, when those are unset,
// OTEL_EXPORTER_OTLP_ENDPOINT or the per-signal OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT.
// "none" disables a signal's push. Only the grpc OTLP protocol is supported: any other
// OTEL_EXPORTER_OTLP_PROTOCOL is an error. Nothing configured means no push and no
// error. OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override serviceName.
func Setup(ctx context.Context, serviceName string, logger *slog.Logger) (*Telemetry, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", serviceName)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(),
	)
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}

	pushTraces, err := otlpEnabled("TRACES")
	if err != nil {
		return nil, err
	}
	pushMetrics, err := otlpEnabled("METRICS")
	if err != nil {
		return nil, err
	}

	tpOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if pushTraces {
		exp, err := otlptracegrpc.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP trace exporter: %w", err)
		}
		tpOpts = append(tpOpts, sdktrace.WithBatcher(exp))
	}
	tp := sdktrace.NewTracerProvider(tpOpts...)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	promExp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		_ = tp.Shutdown(ctx)
		return nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
	}
	mpOpts := []sdkmetric.Option{sdkmetric.WithResource(res), sdkmetric.WithReader(promExp)}
	if pushMetrics {
		exp, err := otlpmetricgrpc.New(ctx)
		if err != nil {
			_ = tp.Shutdown(ctx)
			return nil, fmt.Errorf("telemetry: OTLP metric exporter: %w", err)
		}
		mpOpts = append(mpOpts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)))
	}
	mp := sdkmetric.NewMeterProvider(mpOpts...)

	otel.SetTracerProvider(tp)
	otel.SetMeterProvider(mp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		logger.Warn("opentelemetry", "err", err)
	}))
	logger.Info("telemetry ready", "otlp_traces", pushTraces, "otlp_metrics", pushMetrics)
	return &Telemetry{tp: tp, mp: mp, registry: reg}, nil
}

// otlpEnabled decides whether signal ("TRACES" or "METRICS") is pushed by OTLP.
func otlpEnabled(signal string) (bool, error) {
	var enabled bool
	switch v := strings.TrimSpace(strings.ToLower(os.Getenv("OTEL_" + signal + "_EXPORTER"))); v {
	case "none":
		return false, nil
	case "otlp":
		enabled = true
	case "prometheus":
		if signal != "METRICS" {
			return false, fmt.Errorf("telemetry: OTEL_%s_EXPORTER=%q is not supported (use otlp or none)", signal, v)
		}
		return false, nil // scraped through MetricsHandler; nothing to push
	case "":
		enabled = os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" ||
			os.Getenv("OTEL_EXPORTER_OTLP_"+signal+"_ENDPOINT") != ""
	default:
		return false, fmt.Errorf("telemetry: OTEL_%s_EXPORTER=%q is not supported (use otlp or none)", signal, v)
	}
	if !enabled {
		return false, nil
	}
	for _, key := range []string{"OTEL_EXPORTER_OTLP_" + signal + "_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := os.Getenv(key); p != "" {
			if p != "grpc" {
				return false, fmt.Errorf("telemetry: %s=%q is not supported: only grpc", key, p)
			}
			break
		}
	}
	return true, nil
}

// Shutdown flushes and stops the providers.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	return errors.Join(t.tp.Shutdown(ctx), t.mp.Shutdown(ctx))
}

// TracerProvider returns the SDK tracer provider.
func (t *Telemetry) TracerProvider() trace.TracerProvider { return t.tp }

// MeterProvider returns the SDK meter provider.
func (t *Telemetry) MeterProvider() metric.MeterProvider { return t.mp }

// MetricsHandler serves every OTel metric, and Go runtime and process metrics, in
// the Prometheus exposition format.
func (t *Telemetry) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{})
}
