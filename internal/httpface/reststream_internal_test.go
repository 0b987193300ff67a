package httpface

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/apierr"
)

// condaccessServices names every condaccess service in the registry.
func condaccessServices(t *testing.T) []string {
	t.Helper()
	seen := map[string]bool{}
	var names []string
	for _, m := range condaccessMethods(t) {
		if n := string(m.Parent().FullName()); !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	return names
}

// TestEveryServerStreamIsServedOverREST: every server stream of the contracts (a Watch…
// RPC added tomorrow included) has a REST route, derived from its descriptor, that its
// own mapped path reaches. It fails when a server stream has no GET mapping, or one
// whose template this face cannot serve.
func TestEveryServerStreamIsServedOverREST(t *testing.T) {
	routes, err := restStreamRoutes(condaccessServices(t))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range condaccessMethods(t) {
		if !m.IsStreamingServer() || m.IsStreamingClient() {
			continue
		}
		n++
		rpc := "/" + string(m.Parent().FullName()) + "/" + string(m.Name())
		r := httpRule(m)
		if r == nil || r.GetGet() == "" {
			t.Errorf("%s: a server stream needs a GET mapping to be followed over REST", m.FullName())
			continue
		}
		path := pathParam.ReplaceAllString(r.GetGet(), "x")
		var got string
		for _, rt := range routes {
			if _, ok := rt.template.match(path); ok {
				got = rt.rpc
				break
			}
		}
		if got != rpc {
			t.Errorf("GET %s reaches %q, want %s", path, got, rpc)
		}
	}
	if n < 9 {
		t.Fatalf("found %d server streams, want at least the 9 Watch… RPCs", n)
	}
}

// TestStreamResponsesHaveNoErrorField: a REST stream's error after its first message
// is a line {"error": …}; no response message of a server stream may have a field
// that JSON-encodes as "error", or that line would be ambiguous.
func TestStreamResponsesHaveNoErrorField(t *testing.T) {
	for _, m := range condaccessMethods(t) {
		if !m.IsStreamingServer() {
			continue
		}
		fields := m.Output().Fields()
		if fields.ByJSONName("error") != nil || fields.ByName("error") != nil {
			t.Errorf("%s has a field \"error\": REST streams could not tell it from an error line", m.Output().FullName())
		}
	}
}

func TestPathTemplate(t *testing.T) {
	md := (&riskv1.GetDeviceRiskRequest{}).ProtoReflect().Descriptor()
	tests := []struct {
		name     string
		template string
		path     string // escaped request path
		wantVars []string
		wantOK   bool
	}{
		{"literal with verb", "/v1/riskEvents:watch", "/v1/riskEvents:watch", nil, true},
		{"another verb", "/v1/riskEvents:watch", "/v1/riskEvents:list", nil, false},
		{"no verb", "/v1/riskEvents:watch", "/v1/riskEvents", nil, false},
		{"extra segment", "/v1/riskEvents:watch", "/v1/riskEvents/x:watch", nil, false},
		{"trailing slash", "/v1/riskEvents:watch", "/v1/riskEvents:watch/", nil, false},
		{"variable", "/v1/devices/{device_id}/risk:watch", "/v1/devices/dev-1/risk:watch", []string{"dev-1"}, true},
		{"escaped variable", "/v1/devices/{device_id=*}/risk", "/v1/devices/dev%2F1/risk", []string{"dev/1"}, true},
		{"variable with verb", "/v1/devices/{device_id}:watch", "/v1/devices/dev-1:watch", []string{"dev-1"}, true},
		{"empty variable", "/v1/devices/{device_id}/risk", "/v1/devices//risk", nil, false},
		{"other literal", "/v1/devices/{device_id}/risk", "/v1/users/dev-1/risk", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, err := parsePathTemplate(tt.template, md)
			if err != nil {
				t.Fatal(err)
			}
			vars, ok := tmpl.match(tt.path)
			if ok != tt.wantOK || !cmp.Equal(vars, tt.wantVars) {
				t.Fatalf("match(%q) = %q, %v; want %q, %v", tt.path, vars, ok, tt.wantVars, tt.wantOK)
			}
		})
	}

	refused := []struct{ name, template string }{
		{"multi-segment variable", "/v1/{device_id=devices/*}/risk"},
		{"double wildcard", "/v1/devices/**"},
		{"unknown field", "/v1/devices/{nope}"},
		{"no leading slash", "v1/riskEvents:watch"},
		{"empty segment", "/v1//riskEvents"},
		{"empty verb", "/v1/riskEvents:"},
	}
	for _, tt := range refused {
		t.Run("refused/"+tt.name, func(t *testing.T) {
			if _, err := parsePathTemplate(tt.template, md); err == nil {
				t.Fatalf("parsePathTemplate(%q) accepted", tt.template)
			}
		})
	}
}

// TestReadRequest: query parameters become request fields as the REST mapping says
// (JSON or proto names, nested by '.', repeated by repetition, enums by name or
// number); anything else is INVALID_ARGUMENT naming the parameter, never ignored.
func TestReadRequest(t *testing.T) {
	route := func(m proto.Message, template string) restStreamRoute {
		t.Helper()
		tmpl, err := parsePathTemplate(template, m.ProtoReflect().Descriptor())
		if err != nil {
			t.Fatal(err)
		}
		return restStreamRoute{input: m.ProtoReflect().Type(), template: tmpl}
	}
	tests := []struct {
		name      string
		route     restStreamRoute
		vars      []string
		query     string
		want      proto.Message
		wantField string // the field violation, for a refused request
	}{
		{"empty", route(&riskv1.WatchRiskEventsRequest{}, "/v1/riskEvents:watch"), nil, "",
			&riskv1.WatchRiskEventsRequest{}, ""},
		{"JSON names", route(&riskv1.WatchRiskEventsRequest{}, "/v1/riskEvents:watch"), nil, "startRevision=42&deviceId=dev-1",
			&riskv1.WatchRiskEventsRequest{StartRevision: 42, DeviceId: "dev-1"}, ""},
		{"proto names", route(&riskv1.WatchRiskEventsRequest{}, "/v1/riskEvents:watch"), nil, "start_revision=7",
			&riskv1.WatchRiskEventsRequest{StartRevision: 7}, ""},
		{"path variable", route(&riskv1.WatchRiskEventsRequest{}, "/v1/devices/{device_id}/riskEvents:watch"), []string{"dev/1"}, "startRevision=3",
			&riskv1.WatchRiskEventsRequest{StartRevision: 3, DeviceId: "dev/1"}, ""},
		{"enum by name", route(&accessv1.WatchSignInsRequest{}, "/v1/signIns:watch"), nil, "decision=DECISION_BLOCK&userId=u-1",
			&accessv1.WatchSignInsRequest{Decision: accessv1.Decision_DECISION_BLOCK, UserId: "u-1"}, ""},
		{"enum by number", route(&accessv1.WatchSignInsRequest{}, "/v1/signIns:watch"), nil, "decision=2",
			&accessv1.WatchSignInsRequest{Decision: accessv1.Decision(2)}, ""},
		{"nested, repeated", route(&compliancev1.EnrollDeviceRequest{}, "/v1/x"), nil, "device.deviceId=d&device.groups=a&device.groups=b&device.platform=PLATFORM_LINUX",
			&compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{DeviceId: "d", Groups: []string{"a", "b"}, Platform: commonv1.Platform_PLATFORM_LINUX}}, ""},
		{"bool", route(&compliancev1.UpdateComplianceSettingsRequest{}, "/v1/x"), nil, "settings.devicesWithoutPolicyCompliant=true",
			&compliancev1.UpdateComplianceSettingsRequest{Settings: &compliancev1.ComplianceSettings{DevicesWithoutPolicyCompliant: true}}, ""},
		{"timestamp", route(&riskv1.ListAlertsRequest{}, "/v1/x"), nil, "detectedAfter=2026-01-02T03:04:05Z",
			&riskv1.ListAlertsRequest{DetectedAfter: timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))}, ""},

		{"unknown parameter", route(&riskv1.WatchRiskEventsRequest{}, "/v1/riskEvents:watch"), nil, "startRevison=3", nil, "startRevison"},
		{"not a number", route(&riskv1.WatchRiskEventsRequest{}, "/v1/riskEvents:watch"), nil, "startRevision=x", nil, "start_revision"},
		{"out of range", route(&riskv1.WatchRiskEventsRequest{}, "/v1/riskEvents:watch"), nil, "startRevision=99999999999999999999", nil, "start_revision"},
		{"given twice", route(&riskv1.WatchRiskEventsRequest{}, "/v1/riskEvents:watch"), nil, "deviceId=a&deviceId=b", nil, "device_id"},
		{"bound by the path", route(&riskv1.WatchRiskEventsRequest{}, "/v1/devices/{device_id}/riskEvents:watch"), []string{"dev-1"}, "deviceId=dev-2", nil, "deviceId"},
		{"unknown enum name", route(&accessv1.WatchSignInsRequest{}, "/v1/signIns:watch"), nil, "decision=DECISION_MAYBE", nil, "decision"},
		{"unknown enum number", route(&accessv1.WatchSignInsRequest{}, "/v1/signIns:watch"), nil, "decision=99", nil, "decision"},
		{"not a boolean", route(&compliancev1.UpdateComplianceSettingsRequest{}, "/v1/x"), nil, "settings.devicesWithoutPolicyCompliant=yes please", nil, "settings.devices_without_policy_compliant"},
		{"a message, not a scalar", route(&compliancev1.EnrollDeviceRequest{}, "/v1/x"), nil, "device=x", nil, "device"},
		{"into a scalar", route(&riskv1.WatchRiskEventsRequest{}, "/v1/riskEvents:watch"), nil, "deviceId.x=1", nil, "deviceId.x"},
		{"bad timestamp", route(&riskv1.ListAlertsRequest{}, "/v1/x"), nil, "detectedAfter=yesterday", nil, "detected_after"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			msg := tt.route.input.New()
			err = tt.route.readRequest(msg, tt.vars, q)
			if tt.wantField == "" {
				if err != nil {
					t.Fatal(err)
				}
				if d := cmp.Diff(tt.want, msg.Interface(), protocmp.Transform()); d != "" {
					t.Fatalf("request (-want +got):\n%s", d)
				}
				return
			}
			if status.Code(err) != codes.InvalidArgument || apierr.Reason(err) != apierr.ReasonInvalidArgument {
				t.Fatalf("err = %v, want INVALID_ARGUMENT %s", err, apierr.ReasonInvalidArgument)
			}
			v := apierr.Violations(err)
			if len(v) != 1 || v[0].GetField() != tt.wantField {
				t.Fatalf("violations = %v, want one on %q", v, tt.wantField)
			}
		})
	}
}

// fakeRisk is a RiskService whose WatchRiskEvents echoes its request in the first
// event's device id and revision, then does what script says.
type fakeRisk struct {
	riskv1.UnimplementedRiskServiceServer
	sends int   // events after the echo
	end   error // the status the stream ends with
	done  chan struct{}
}

func (f *fakeRisk) WatchRiskEvents(req *riskv1.WatchRiskEventsRequest, ss grpc.ServerStreamingServer[riskv1.WatchRiskEventsResponse]) error {
	defer close(f.done)
	if f.sends < 0 { // refuse before any message
		return f.end
	}
	echo := &riskv1.RiskEvent{Revision: req.GetStartRevision(), Payload: &riskv1.RiskEvent_DeviceRiskChanged{
		DeviceRiskChanged: &riskv1.DeviceRiskChanged{DeviceRisk: &riskv1.DeviceRisk{DeviceId: req.GetDeviceId()}}}}
	if err := ss.Send(&riskv1.WatchRiskEventsResponse{Kind: &riskv1.WatchRiskEventsResponse_Event{Event: echo}}); err != nil {
		return err
	}
	for i := range f.sends {
		p := &commonv1.WatchProgress{Revision: int64(i + 1)}
		if err := ss.Send(&riskv1.WatchRiskEventsResponse{Kind: &riskv1.WatchRiskEventsResponse_Progress{Progress: p}}); err != nil {
			return err
		}
	}
	if f.end == errBlock {
		<-ss.Context().Done()
		return ss.Context().Err()
	}
	return f.end
}

var errBlock = status.Error(codes.Unknown, "block until the client leaves")

// startFake serves fake through Handler (development mode, no interceptors: the
// transcoding is what is under test here).
func startFake(t *testing.T, fake *fakeRisk) string {
	t.Helper()
	gs := grpc.NewServer()
	riskv1.RegisterRiskServiceServer(gs, fake)
	h, err := Handler(Config{GRPC: gs, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestRESTStreamTranscoding: messages are NDJSON lines, flushed as they come; an
// error before the first message is the google.rpc.Status body with its HTTP code
// and details; an error after it is a last {"error": …} line; the end of a stream
// with OK ends the body; a client that leaves ends the call on the server.
func TestRESTStreamTranscoding(t *testing.T) {
	notFound := apierr.New(codes.NotFound, "DEVICE_NOT_FOUND", "no such device")
	compacted := apierr.New(codes.OutOfRange, "REVISION_COMPACTED", "start revision compacted")
	tests := []struct {
		name       string
		fake       fakeRisk
		wantStatus int
		wantLines  int        // message lines
		wantEnd    codes.Code // the error line's code (OK: none)
		wantReason string     // ErrorInfo of the error (body or line)
	}{
		{"messages then OK", fakeRisk{sends: 3}, 200, 4, codes.OK, ""},
		{"refused before any message", fakeRisk{sends: -1, end: notFound}, 404, 0, codes.NotFound, "DEVICE_NOT_FOUND"},
		{"error after messages", fakeRisk{sends: 2, end: compacted}, 200, 3, codes.OutOfRange, "REVISION_COMPACTED"},
		{"OK without messages", fakeRisk{sends: -1}, 200, 0, codes.OK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := tt.fake
			fake.done = make(chan struct{})
			base := startFake(t, &fake)
			resp, err := http.Get(base + "/v1/riskEvents:watch?startRevision=41&deviceId=dev-1")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if resp.StatusCode != 200 {
				var st restStatusBody
				if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
					t.Fatal(err)
				}
				if resp.Header.Get("Content-Type") != "application/json" || codes.Code(st.Code) != tt.wantEnd || st.reason() != tt.wantReason {
					t.Fatalf("body %+v (%s), want google.rpc.Status %s %s", st, resp.Header.Get("Content-Type"), tt.wantEnd, tt.wantReason)
				}
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != NDJSONContentType {
				t.Fatalf("Content-Type = %q, want %q", ct, NDJSONContentType)
			}
			sc := bufio.NewScanner(resp.Body)
			lines := 0
			var end *restStatusBody
			for sc.Scan() {
				if end != nil {
					t.Fatalf("a line after the error line: %s", sc.Text())
				}
				var e struct {
					Error *restStatusBody `json:"error"`
				}
				if err := json.Unmarshal(sc.Bytes(), &e); err == nil && e.Error != nil {
					end = e.Error
					continue
				}
				var m riskv1.WatchRiskEventsResponse
				if err := protojson.Unmarshal(sc.Bytes(), &m); err != nil {
					t.Fatalf("line %d is not a WatchRiskEventsResponse: %v: %s", lines, err, sc.Text())
				}
				if lines == 0 && (m.GetEvent().GetRevision() != 41 || m.GetEvent().GetDeviceRiskChanged().GetDeviceRisk().GetDeviceId() != "dev-1") {
					t.Fatalf("first line %s does not echo startRevision=41&deviceId=dev-1", sc.Text())
				}
				lines++
			}
			if err := sc.Err(); err != nil {
				t.Fatal(err)
			}
			if lines != tt.wantLines {
				t.Errorf("%d message lines, want %d", lines, tt.wantLines)
			}
			switch {
			case tt.wantEnd == codes.OK && end != nil:
				t.Errorf("error line %+v on a stream that ended OK", end)
			case tt.wantEnd != codes.OK && (end == nil || codes.Code(end.Code) != tt.wantEnd || end.reason() != tt.wantReason):
				t.Errorf("error line %+v, want %s %s", end, tt.wantEnd, tt.wantReason)
			}
		})
	}

	t.Run("client leaves", func(t *testing.T) {
		fake := fakeRisk{sends: 1, end: errBlock, done: make(chan struct{})}
		base := startFake(t, &fake)
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/riskEvents:watch", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(resp.Body)
		for range 2 { // both lines arrive while the call is still open: each is flushed
			if !sc.Scan() {
				t.Fatalf("stream ended early: %v", sc.Err())
			}
		}
		cancel()
		resp.Body.Close()
		select {
		case <-fake.done:
		case <-time.After(10 * time.Second):
			t.Fatal("the server-side call still runs 10 s after the client left")
		}
	})
}

// TestRESTStreamOtherMethods: only GET is a REST stream; other methods on the path
// are left to the transcoder, which refuses them.
func TestRESTStreamOtherMethods(t *testing.T) {
	fake := fakeRisk{sends: 0, done: make(chan struct{})}
	base := startFake(t, &fake)
	resp, err := http.Post(base+"/v1/riskEvents:watch", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 {
		t.Fatalf("POST on a stream's GET path: %d", resp.StatusCode)
	}
	select {
	case <-fake.done:
		t.Fatal("a POST reached the stream")
	default:
	}
}

// TestRESTStreamCrossSite: a browser asked by a page of another origin to open a
// stream is refused before the call (the stream never starts); the browser's own
// navigation, same-origin pages and clients that send no Sec-Fetch-Site (curl) pass.
func TestRESTStreamCrossSite(t *testing.T) {
	tests := []struct {
		site       string
		wantStatus int
	}{
		{"cross-site", http.StatusForbidden},
		{"same-site", http.StatusForbidden},
		{"same-origin", http.StatusOK},
		{"none", http.StatusOK},
		{"", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run("Sec-Fetch-Site "+tt.site, func(t *testing.T) {
			fake := fakeRisk{sends: 0, done: make(chan struct{})}
			base := startFake(t, &fake)
			req, _ := http.NewRequest(http.MethodGet, base+"/v1/riskEvents:watch", nil)
			if tt.site != "" {
				req.Header.Set("Sec-Fetch-Site", tt.site)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if tt.wantStatus == http.StatusOK {
				select {
				case <-fake.done:
				case <-time.After(10 * time.Second):
					t.Fatal("the stream did not run")
				}
				return
			}
			select { // refused before the call: the handler never ran
			case <-fake.done:
				t.Fatal("a refused request reached the stream")
			default:
			}
			var st restStatusBody
			if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || codes.Code(st.Code) != codes.PermissionDenied || st.reason() != ReasonCrossSiteRequest {
				t.Fatalf("body %+v (%v), want PERMISSION_DENIED %s", st, err, ReasonCrossSiteRequest)
			}
		})
	}
}

// TestConnectEndStatus: the Connect end-of-stream message becomes the status with
// its details, as the RPC returned it.
func TestConnectEndStatus(t *testing.T) {
	st := status.Convert(apierr.InvalidArgument("", apierr.FieldViolation("ref", "required")))
	want := st.Proto()
	// As connect-go writes it: base64 without padding.
	payload := `{"error":{"code":"invalid_argument","message":"` + st.Message() + `","details":[`
	for i, d := range want.GetDetails() {
		if i > 0 {
			payload += ","
		}
		typ := strings.TrimPrefix(d.GetTypeUrl(), "type.googleapis.com/")
		payload += `{"type":"` + typ + `","value":"` + base64.RawStdEncoding.EncodeToString(d.GetValue()) + `"}`
	}
	payload += `]},"metadata":{}}`
	got := connectEndStatus([]byte(payload))
	if d := cmp.Diff(want, got.Proto(), protocmp.Transform()); d != "" {
		t.Fatalf("status (-want +got):\n%s", d)
	}
	var br *errdetails.BadRequest
	for _, d := range got.Details() {
		if b, ok := d.(*errdetails.BadRequest); ok {
			br = b
		}
	}
	if br.GetFieldViolations()[0].GetField() != "ref" {
		t.Fatalf("BadRequest lost: %v", got.Details())
	}
	for _, tt := range []struct {
		payload string
		want    codes.Code
	}{
		{`{}`, codes.OK},
		{`{"metadata":{"x":["y"]}}`, codes.OK},
		{`{"error":{"code":"resource_exhausted","message":"m"}}`, codes.ResourceExhausted},
		{`{"error":{"code":"no_such_code"}}`, codes.Unknown},
		{`not json`, codes.Internal},
	} {
		if got := connectEndStatus([]byte(tt.payload)).Code(); got != tt.want {
			t.Errorf("connectEndStatus(%s) = %s, want %s", tt.payload, got, tt.want)
		}
	}
}

// restStatusBody is a google.rpc.Status in JSON.
type restStatusBody struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Details []struct {
		Type   string `json:"@type"`
		Reason string `json:"reason"`
	} `json:"details"`
}

func (s restStatusBody) reason() string {
	for _, d := range s.Details {
		if d.Type == "type.googleapis.com/google.rpc.ErrorInfo" {
			return d.Reason
		}
	}
	return ""
}

// TestReadRequestBoundsViolations: a query of many bad parameters is refused with at
// most maxQueryViolations violations (the refusal's size does not grow with the URL).
func TestReadRequestBoundsViolations(t *testing.T) {
	tmpl, err := parsePathTemplate("/v1/riskEvents:watch", (&riskv1.WatchRiskEventsRequest{}).ProtoReflect().Descriptor())
	if err != nil {
		t.Fatal(err)
	}
	rt := restStreamRoute{input: (&riskv1.WatchRiskEventsRequest{}).ProtoReflect().Type(), template: tmpl}
	q := url.Values{}
	for i := range 100 {
		q.Set(fmt.Sprintf("nope%03d", i), "1")
	}
	err = rt.readRequest(rt.input.New(), nil, q)
	if status.Code(err) != codes.InvalidArgument || len(apierr.Violations(err)) != maxQueryViolations {
		t.Fatalf("err = %v with %d violations, want INVALID_ARGUMENT with %d", status.Code(err), len(apierr.Violations(err)), maxQueryViolations)
	}
}

// floodRisk sends large events until its stream fails.
type floodRisk struct {
	riskv1.UnimplementedRiskServiceServer
	done chan struct{}
}

func (f *floodRisk) WatchRiskEvents(_ *riskv1.WatchRiskEventsRequest, ss grpc.ServerStreamingServer[riskv1.WatchRiskEventsResponse]) error {
	defer close(f.done)
	big := &riskv1.WatchRiskEventsResponse{Kind: &riskv1.WatchRiskEventsResponse_Event{Event: &riskv1.RiskEvent{
		Payload: &riskv1.RiskEvent_AlertChanged{AlertChanged: &riskv1.AlertChanged{Alert: &riskv1.Alert{Title: strings.Repeat("x", 64<<10)}}}}}}
	for {
		if err := ss.Send(big); err != nil {
			return err
		}
	}
}

// TestRESTStreamClientStopsReading: a client that stops reading (its socket's buffers
// full) has its stream ended once a line has waited streamWriteTimeout: the server's
// call returns, freeing its watch slot.
func TestRESTStreamClientStopsReading(t *testing.T) {
	old := streamWriteTimeout
	streamWriteTimeout = 300 * time.Millisecond
	t.Cleanup(func() { streamWriteTimeout = old })
	fake := &floodRisk{done: make(chan struct{})}
	gs := grpc.NewServer()
	riskv1.RegisterRiskServiceServer(gs, fake)
	h, err := Handler(Config{GRPC: gs, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET /v1/riskEvents:watch HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	// Never read.
	select {
	case <-fake.done:
	case <-time.After(20 * time.Second):
		t.Fatal("the stream of a client that stopped reading still runs after 20 s")
	}
}
