package harness

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	collectortracev1 "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc"
)

// Span is one span received by the TraceReceiver, flattened.
type Span struct {
	TraceID, SpanID, ParentSpanID string
	Name                          string
	// Service is the resource's service.name, e.g. "condaccess-risk".
	Service string
	Kind    string
	Start   time.Time
	End     time.Time
	Attrs   map[string]string
	Links   []SpanLink
}

// SpanLink is a link from a span to another span, possibly of another trace.
type SpanLink struct{ TraceID, SpanID string }

func (s Span) String() string {
	return fmt.Sprintf("%s %q trace=%s span=%s parent=%s links=%d", s.Service, s.Name, s.TraceID, s.SpanID, s.ParentSpanID, len(s.Links))
}

// TraceReceiver is an OTLP/gRPC trace collector inside the test: processes export to
// it through OTEL_EXPORTER_OTLP_ENDPOINT.
type TraceReceiver struct {
	collectortracev1.UnimplementedTraceServiceServer

	Addr string
	srv  *grpc.Server

	mu      sync.Mutex
	spans   []Span
	changed chan struct{}
}

// StartTraceReceiver listens on a loopback port.
func StartTraceReceiver() (*TraceReceiver, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &TraceReceiver{Addr: lis.Addr().String(), srv: grpc.NewServer(), changed: make(chan struct{})}
	collectortracev1.RegisterTraceServiceServer(r.srv, r)
	go r.srv.Serve(lis)
	return r, nil
}

// Env is the environment that makes a process export its spans here quickly.
func (r *TraceReceiver) Env() []string {
	return []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + r.Addr,
		"OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
		"OTEL_TRACES_EXPORTER=otlp",
		"OTEL_METRICS_EXPORTER=none",
		"OTEL_LOGS_EXPORTER=none",
		"OTEL_BSP_SCHEDULE_DELAY=100",
		"OTEL_TRACES_SAMPLER=always_on",
	}
}

// Stop stops the receiver.
func (r *TraceReceiver) Stop() { r.srv.Stop() }

// Export implements the OTLP trace service.
func (r *TraceReceiver) Export(_ context.Context, req *collectortracev1.ExportTraceServiceRequest) (*collectortracev1.ExportTraceServiceResponse, error) {
	var got []Span
	for _, rs := range req.GetResourceSpans() {
		service := attr(rs.GetResource().GetAttributes(), "service.name")
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				s := Span{
					TraceID: hex.EncodeToString(sp.GetTraceId()), SpanID: hex.EncodeToString(sp.GetSpanId()),
					ParentSpanID: hex.EncodeToString(sp.GetParentSpanId()), Name: sp.GetName(), Service: service,
					Kind:  strings.TrimPrefix(sp.GetKind().String(), "SPAN_KIND_"),
					Start: time.Unix(0, int64(sp.GetStartTimeUnixNano())), End: time.Unix(0, int64(sp.GetEndTimeUnixNano())),
					Attrs: map[string]string{},
				}
				for _, kv := range sp.GetAttributes() {
					s.Attrs[kv.GetKey()] = anyString(kv.GetValue())
				}
				for _, l := range sp.GetLinks() {
					s.Links = append(s.Links, SpanLink{TraceID: hex.EncodeToString(l.GetTraceId()), SpanID: hex.EncodeToString(l.GetSpanId())})
				}
				got = append(got, s)
			}
		}
	}
	r.mu.Lock()
	r.spans = append(r.spans, got...)
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	return &collectortracev1.ExportTraceServiceResponse{}, nil
}

func attr(kvs []*commonpb.KeyValue, key string) string {
	for _, kv := range kvs {
		if kv.GetKey() == key {
			return anyString(kv.GetValue())
		}
	}
	return ""
}

func anyString(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return fmt.Sprint(x.IntValue)
	case *commonpb.AnyValue_BoolValue:
		return fmt.Sprint(x.BoolValue)
	case *commonpb.AnyValue_DoubleValue:
		return fmt.Sprint(x.DoubleValue)
	}
	return v.String()
}

// Spans returns a copy of every span received so far.
func (r *TraceReceiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// WaitFor waits until cond holds for the spans received, or ctx ends; it returns the
// last explanation cond gave.
func (r *TraceReceiver) WaitFor(ctx context.Context, cond func([]Span) (bool, string)) error {
	for {
		r.mu.Lock()
		spans := append([]Span(nil), r.spans...)
		changed := r.changed
		r.mu.Unlock()
		ok, why := cond(spans)
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%v: %s", ctx.Err(), why)
		case <-changed:
		}
	}
}

// Connected returns the spans of trace traceID and of every trace connected to it by
// span links (in either direction), transitively: the causal story of one request
// across services that continue it as a child or link to it.
func Connected(spans []Span, traceID string) []Span {
	traces := map[string]bool{traceID: true}
	for changed := true; changed; {
		changed = false
		for _, s := range spans {
			for _, l := range s.Links {
				if traces[s.TraceID] && !traces[l.TraceID] {
					traces[l.TraceID], changed = true, true
				}
				if traces[l.TraceID] && !traces[s.TraceID] {
					traces[s.TraceID], changed = true, true
				}
			}
		}
	}
	var out []Span
	for _, s := range spans {
		if traces[s.TraceID] {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}
