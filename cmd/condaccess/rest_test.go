package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/auth/authtest"
	"github.com/condaccess/condaccess/internal/httpface"
)

// restCall sends a REST request, as curl does, and returns the status, the
// Content-Type and the body.
func restCall(t *testing.T, c *http.Client, method, url, body string) (int, string, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), b
}

// sameJSON fails unless a and b decode to the same JSON value.
func sameJSON(t *testing.T, a, b []byte) {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("REST body is not JSON: %v: %s", err, a)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("protojson is not JSON: %v: %s", err, b)
	}
	if d := cmp.Diff(vb, va); d != "" {
		t.Errorf("REST body differs from protojson of the gRPC response (-grpc +rest):\n%s", d)
	}
}

// TestRESTMatchesGRPC is the README's flow in curl: each REST call of the contracts'
// google.api.http mappings answers what the same RPC answers over gRPC, as JSON
// (protojson of the gRPC response, with unpopulated fields, as the transcoder writes
// it), and REST writes go through the same handlers.
func TestRESTMatchesGRPC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, conn := startDevSuite(t, ctx)
	base := "http://" + s.HTTPAddr()
	risk := riskv1.NewRiskServiceClient(conn)
	devices := compliancev1.NewDeviceServiceClient(conn)
	access := accessv1.NewAccessServiceClient(conn)

	// Writes over REST: the flow's set-up, as in the README.
	writes := []struct{ method, path, body string }{
		{"POST", "/v1/devices", `{"deviceId":"dev-1","displayName":"Laptop 1","platform":"PLATFORM_WINDOWS","osVersion":"10.0.22631","ownerUserId":"u-1"}`},
		{"POST", "/v1/users", `{"userId":"u-1","displayName":"Ada"}`},
		{"POST", "/v1/applications", `{"applicationId":"payroll","displayName":"Payroll"}`},
		{"POST", "/v1/conditionalAccessPolicies", `{"policyId":"payroll-compliant","displayName":"Payroll requires a compliant device","state":"POLICY_STATE_ENABLED","users":{"all":true},"applications":{"include":["payroll"]},"grantControls":{"require":["GRANT_CONTROL_COMPLIANT_DEVICE"]}}`},
		{"POST", "/v1/alerts", `{"alertId":"a-1","deviceId":"dev-1","severity":"SEVERITY_HIGH","title":"Malicious file opened"}`},
		{"PATCH", "/v1/alerts/a-1?updateMask=assignedTo", `{"assignedTo":"secops-1"}`},
		{"POST", "/v1/alerts/a-1:addComment", `{"text":"looking"}`},
	}
	for _, w := range writes {
		status, _, b := restCall(t, http.DefaultClient, w.method, base+w.path, w.body)
		if status != http.StatusOK {
			t.Fatalf("%s %s: status %d: %s", w.method, w.path, status, b)
		}
	}
	// The REST writes reached the services: the device is enrolled and its risk is high.
	if got, err := devices.GetDevice(ctx, &compliancev1.GetDeviceRequest{DeviceId: "dev-1"}); err != nil || got.GetDevice().GetOwnerUserId() != "u-1" {
		t.Fatalf("GetDevice after POST /v1/devices: %v, %v", got, err)
	}
	if got, err := risk.GetAlert(ctx, &riskv1.GetAlertRequest{AlertId: "a-1"}); err != nil || got.GetAlert().GetAssignedTo() != "secops-1" || len(got.GetAlert().GetComments()) != 1 {
		t.Fatalf("GetAlert after PATCH and :addComment: %v, %v", got, err)
	}
	// Compliance follows risk asynchronously: wait for the block before comparing.
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := access.EvaluateAccess(ctx, &accessv1.EvaluateAccessRequest{UserId: "u-1", DeviceId: "dev-1", ApplicationId: "payroll"})
		if err == nil && r.GetDecision() == accessv1.Decision_DECISION_BLOCK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("payroll not blocked after the alert: %v, %v", r, err)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(20 * time.Millisecond): // polling the condition, not a sleep for ordering
		}
	}

	reads := []struct {
		name     string
		method   string
		path     string
		body     string
		grpc     func() (proto.Message, error)
		newEmpty func() proto.Message
	}{
		{"GetDeviceRisk", "GET", "/v1/devices/dev-1/risk", "",
			func() (proto.Message, error) {
				return risk.GetDeviceRisk(ctx, &riskv1.GetDeviceRiskRequest{DeviceId: "dev-1"})
			}, func() proto.Message { return &riskv1.GetDeviceRiskResponse{} }},
		{"GetDevice", "GET", "/v1/devices/dev-1", "",
			func() (proto.Message, error) {
				return devices.GetDevice(ctx, &compliancev1.GetDeviceRequest{DeviceId: "dev-1"})
			}, func() proto.Message { return &compliancev1.GetDeviceResponse{} }},
		{"GetDeviceCompliance", "GET", "/v1/devices/dev-1/compliance", "",
			func() (proto.Message, error) {
				return compliancev1.NewComplianceServiceClient(conn).GetDeviceCompliance(ctx, &compliancev1.GetDeviceComplianceRequest{DeviceId: "dev-1"})
			}, func() proto.Message { return &compliancev1.GetDeviceComplianceResponse{} }},
		{"ListAlerts with query parameters", "GET", "/v1/alerts?deviceId=dev-1&minSeverity=SEVERITY_MEDIUM&pageSize=10", "",
			func() (proto.Message, error) {
				return risk.ListAlerts(ctx, &riskv1.ListAlertsRequest{DeviceId: "dev-1", MinSeverity: commonv1.Severity_SEVERITY_MEDIUM, PageSize: 10})
			}, func() proto.Message { return &riskv1.ListAlertsResponse{} }},
		{"GetAlert", "GET", "/v1/alerts/a-1", "",
			func() (proto.Message, error) {
				return risk.GetAlert(ctx, &riskv1.GetAlertRequest{AlertId: "a-1"})
			}, func() proto.Message { return &riskv1.GetAlertResponse{} }},
		{"GetPolicy", "GET", "/v1/conditionalAccessPolicies/payroll-compliant", "",
			func() (proto.Message, error) {
				return accessv1.NewConditionalAccessPolicyServiceClient(conn).GetPolicy(ctx, &accessv1.GetPolicyRequest{PolicyId: "payroll-compliant"})
			}, func() proto.Message { return &accessv1.GetPolicyResponse{} }},
		{"ListDeviceRiskHistory", "GET", "/v1/devices/dev-1/riskHistory?pageSize=5", "",
			func() (proto.Message, error) {
				return risk.ListDeviceRiskHistory(ctx, &riskv1.ListDeviceRiskHistoryRequest{DeviceId: "dev-1", PageSize: 5})
			}, func() proto.Message { return &riskv1.ListDeviceRiskHistoryResponse{} }},
	}
	marshal := protojson.MarshalOptions{EmitUnpopulated: true}
	for _, tt := range reads {
		t.Run(tt.name, func(t *testing.T) {
			status, ctype, b := restCall(t, http.DefaultClient, tt.method, base+tt.path, tt.body)
			if status != http.StatusOK || !strings.HasPrefix(ctype, "application/json") {
				t.Fatalf("status %d, Content-Type %q: %s", status, ctype, b)
			}
			want, err := tt.grpc()
			if err != nil {
				t.Fatal(err)
			}
			wantJSON, err := marshal.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			sameJSON(t, b, wantJSON)
			got := tt.newEmpty()
			if err := protojson.Unmarshal(b, got); err != nil {
				t.Fatalf("REST body does not decode as %T: %v", got, err)
			}
			if !proto.Equal(got, want) {
				t.Errorf("REST %v != gRPC %v", got, want)
			}
		})
	}

	// The one the README shows: the level is HIGH.
	_, _, b := restCall(t, http.DefaultClient, "GET", base+"/v1/devices/dev-1/risk", "")
	var dr riskv1.GetDeviceRiskResponse
	if err := protojson.Unmarshal(b, &dr); err != nil || dr.GetDeviceRisk().GetLevel() != commonv1.RiskLevel_RISK_LEVEL_HIGH {
		t.Errorf("GET /v1/devices/dev-1/risk = %s (%v), want level RISK_LEVEL_HIGH", b, err)
	}
}

// restStatus is the google.rpc.Status JSON body of a REST error.
type restStatus struct {
	Code    int32            `json:"code"`
	Message string           `json:"message"`
	Details []map[string]any `json:"details"`
}

// TestRESTErrors shows a refused REST call answered with the gRPC status mapped to its
// HTTP code and the google.rpc.Status JSON body (with the same details as on gRPC),
// and that a refused write changes nothing.
func TestRESTErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", dataDir: t.TempDir(),
		services: "risk,compliance", stopTimeout: 5 * time.Second}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	risk := riskv1.NewRiskServiceClient(conn)
	base := "http://" + s.HTTPAddr()
	if _, err := risk.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
		AlertId: "a-1", DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "Malicious file opened"}}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		wantStatus int
		wantCode   codes.Code
		wantDetail string // a @type among the details; "" for none required
	}{
		{"unknown device", "GET", "/v1/devices/dev-404/risk", "", 404, codes.NotFound, ""},
		{"unknown alert", "GET", "/v1/alerts/a-404", "", 404, codes.NotFound, ""},
		{"device id over its cap", "GET", "/v1/devices/" + strings.Repeat("d", 129) + "/risk", "", 400, codes.InvalidArgument,
			"type.googleapis.com/google.rpc.BadRequest"},
		{"alert without an id", "POST", "/v1/alerts", `{"deviceId":"dev-1","severity":"SEVERITY_HIGH","title":"x"}`, 400, codes.InvalidArgument,
			"type.googleapis.com/google.rpc.BadRequest"},
		{"body not JSON", "POST", "/v1/alerts", `{alertId`, 400, codes.InvalidArgument, ""},
		{"alert with an unknown severity", "POST", "/v1/alerts", `{"alertId":"a-2","deviceId":"dev-1","severity":"SEVERITY_NOPE","title":"x"}`, 400, codes.InvalidArgument, ""},
		{"resolve an unknown alert", "POST", "/v1/alerts/a-404:resolve", `{"classification":"ALERT_CLASSIFICATION_FALSE_POSITIVE"}`, 404, codes.NotFound, ""},
		{"query parameter of the wrong type", "GET", "/v1/alerts?pageSize=many", "", 400, codes.InvalidArgument, ""},
		{"update with a stale etag", "PATCH", "/v1/alerts/a-1", `{"assignedTo":"mallory","updateMask":"assignedTo","etag":"stale"}`, 409, codes.Aborted, ""},
		{"same alert id, other content", "POST", "/v1/alerts", `{"alertId":"a-1","deviceId":"dev-1","severity":"SEVERITY_LOW","title":"other"}`, 409, codes.AlreadyExists, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, ctype, b := restCall(t, http.DefaultClient, tt.method, base+tt.path, tt.body)
			if status != tt.wantStatus {
				t.Fatalf("status = %d, want %d: %s", status, tt.wantStatus, b)
			}
			if !strings.HasPrefix(ctype, "application/json") {
				t.Errorf("Content-Type = %q, want application/json", ctype)
			}
			var st restStatus
			if err := json.Unmarshal(b, &st); err != nil {
				t.Fatalf("body is not a google.rpc.Status: %v: %s", err, b)
			}
			if codes.Code(st.Code) != tt.wantCode || st.Message == "" {
				t.Errorf("status body = %s, want code %d (%s) with a message", b, tt.wantCode, tt.wantCode)
			}
			if tt.wantDetail != "" {
				found := false
				for _, d := range st.Details {
					found = found || d["@type"] == tt.wantDetail
				}
				if !found {
					t.Errorf("details = %v, want one of @type %s", st.Details, tt.wantDetail)
				}
			}
		})
	}
	// Nothing the refused writes named exists; a-1 is unchanged.
	if _, err := risk.GetAlert(ctx, &riskv1.GetAlertRequest{AlertId: "a-2"}); err == nil {
		t.Error("a refused REST write stored alert a-2")
	}
	if a, err := risk.GetAlert(ctx, &riskv1.GetAlertRequest{AlertId: "a-1"}); err != nil || a.GetAlert().GetTitle() != "Malicious file opened" || a.GetAlert().GetAssignedTo() != "" {
		t.Errorf("a-1 after the refused writes: %v, %v", a, err)
	}

	// Cross-site writes: a page on another origin (its browser sends Origin), a form post
	// (not JSON), a rebinding host name. Each is refused and stores nothing.
	attacks := []struct {
		name   string
		header map[string]string
		host   string
		id     string
		want   int
	}{
		{"cross-origin fetch", map[string]string{"Origin": "http://evil.example", "Content-Type": "application/json"}, "", "x-1", http.StatusForbidden},
		{"HTML form post without Origin", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, "", "x-2", http.StatusUnsupportedMediaType},
		{"text/plain form post", map[string]string{"Content-Type": "text/plain"}, "", "x-3", http.StatusUnsupportedMediaType},
		{"DNS rebinding host", map[string]string{"Content-Type": "application/json"}, "evil.example:7480", "x-4", http.StatusMisdirectedRequest},
	}
	for _, tt := range attacks {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"alertId":"` + tt.id + `","deviceId":"dev-1","severity":"SEVERITY_HIGH","title":"x"}`
			req, err := http.NewRequest(http.MethodPost, base+"/v1/alerts", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			if tt.host != "" {
				req.Host = tt.host
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.want)
			}
			if _, err := risk.GetAlert(ctx, &riskv1.GetAlertRequest{AlertId: tt.id}); err == nil {
				t.Errorf("the refused request stored alert %s", tt.id)
			}
		})
	}

	// Paths and methods the mappings do not name (a server stream is a GET only; the
	// GET itself is followed in reststream_test.go).
	others := []struct {
		name, method, path string
		want               int
	}{
		{"no such REST path", "GET", "/v1/nothing", 404},
		{"method not mapped", "DELETE", "/v1/devices/dev-1/risk", 405},
		{"server stream, method not mapped", "POST", "/v1/riskEvents:watch", 405},
	}
	for _, tt := range others {
		t.Run(tt.name, func(t *testing.T) {
			status, _, b := restCall(t, http.DefaultClient, tt.method, base+tt.path, "")
			if status != tt.want {
				t.Errorf("status = %d, want %d: %.200s", status, tt.want, b)
			}
		})
	}
}

// TestRESTIdentity shows that outside development mode a REST call has the identity of
// its verified TLS client certificate and nothing else: none is 401, a certificate
// without the RPC's role 403, a reader 200; and the OpenAPI document is served.
func TestRESTIdentity(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ca := authtest.NewCA(t)
	sc := ca.ServerConfig(t)
	s, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", dataDir: t.TempDir(),
		services: "risk", stopTimeout: 5 * time.Second, tlsCert: sc.CertFile, tlsKey: sc.KeyFile, tlsClientCA: sc.ClientCAFile},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	h, err := httpface.Handler(httpface.Config{GRPC: s.srv.GRPC()})
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	serverCert, err := tls.LoadX509KeyPair(sc.CertFile, sc.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	defer srv.Close()
	client := func(roles ...commonv1.Role) *http.Client {
		cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		if len(roles) > 0 {
			c, k := ca.Issue(t, "caller", roles)
			pair, err := tls.LoadX509KeyPair(c, k)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	}

	tests := []struct {
		name       string
		url        string
		client     *http.Client
		wantStatus int
		wantCode   codes.Code
	}{
		{"serve's HTTPS listener, no client certificate", "https://" + s.HTTPAddr(), client(), 401, codes.Unauthenticated},
		{"HTTPS, no client certificate", srv.URL, client(), 401, codes.Unauthenticated},
		{"HTTPS, sensor certificate (not a reader)", srv.URL, client(commonv1.Role_ROLE_SENSOR), 403, codes.PermissionDenied},
		{"HTTPS, reader certificate", srv.URL, client(commonv1.Role_ROLE_READER), 200, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, b := restCall(t, tt.client, "GET", tt.url+"/v1/deviceRisks", "")
			if status != tt.wantStatus {
				t.Fatalf("status = %d, want %d: %s", status, tt.wantStatus, b)
			}
			if tt.wantCode == codes.OK {
				var r riskv1.ListDeviceRisksResponse
				if err := protojson.Unmarshal(b, &r); err != nil {
					t.Fatalf("not a ListDeviceRisksResponse: %v: %s", err, b)
				}
				return
			}
			var st restStatus
			if err := json.Unmarshal(b, &st); err != nil || codes.Code(st.Code) != tt.wantCode {
				t.Errorf("body = %s, want google.rpc.Status code %d", b, tt.wantCode)
			}
		})
	}

	// The OpenAPI document carries no identity and needs none.
	status, ctype, b := restCall(t, client(), "GET", "https://"+s.HTTPAddr()+"/openapi.yaml", "")
	if status != 200 || ctype != "application/yaml" || !strings.Contains(string(b), "/v1/devices/{deviceId}/risk:") {
		t.Errorf("GET /openapi.yaml: %d %q %.100q", status, ctype, b)
	}
}

// TestRESTRefusesUnknownFields: a REST or Connect JSON body with a field its message does
// not have (a misspelling, a field of another version) is refused with INVALID_ARGUMENT
// and a BadRequest field violation naming the field, instead of being dropped silently;
// nothing is stored. Known fields, in JSON or proto spelling, still pass.
func TestRESTRefusesUnknownFields(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", dataDir: t.TempDir(),
		services: "risk", stopTimeout: 5 * time.Second}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	base := "http://" + s.HTTPAddr()
	if code, _, b := restCall(t, http.DefaultClient, "POST", base+"/v1/alerts", `{"alertId":"a-1","deviceId":"dev-1","severity":"SEVERITY_HIGH","title":"x"}`); code != 200 {
		t.Fatalf("report a-1: %d %s", code, b)
	}
	tests := []struct {
		name, method, path, body string
		wantField                string // "" when the call must succeed
	}{
		{"misspelt field (body: alert)", "POST", "/v1/alerts", `{"alertId":"a-2","deviceId":"dev-1","severity":"SEVERITY_HIGH","title":"x","severty":"SEVERITY_LOW"}`, "severty"},
		{"unknown nested field", "POST", "/v1/alerts", `{"alertId":"a-3","deviceId":"dev-1","severity":"SEVERITY_HIGH","title":"x","comments":[{"nope":1}]}`, "comments[0].nope"},
		{"unknown field (body: *)", "POST", "/v1/alerts/a-1:resolve", `{"classification":"ALERT_CLASSIFICATION_FALSE_POSITIVE","comentary":"x"}`, "comentary"},
		{"a request field inside the resource body", "POST", "/v1/alerts", `{"alert":{"alertId":"a-4"}}`, "alert"},
		{"Connect JSON", "POST", "/condaccess.risk.v1.RiskService/GetDeviceRisk", `{"deviceId":"dev-1","devcieId":"dev-2"}`, "devcieId"},
		{"known fields in proto spelling pass", "POST", "/v1/alerts", `{"alert_id":"a-5","device_id":"dev-1","severity":"SEVERITY_LOW","title":"x"}`, ""},
		{"known fields pass over Connect", "POST", "/condaccess.risk.v1.RiskService/GetDeviceRisk", `{"deviceId":"dev-1"}`, ""},
	}
	call := func(t *testing.T, method, path, body string) (int, string, []byte) {
		t.Helper()
		if !strings.HasPrefix(path, "/condaccess.") {
			return restCall(t, http.DefaultClient, method, base+path, body)
		}
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Connect-Protocol-Version", "1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), b
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, ctype, b := call(t, tt.method, tt.path, tt.body)
			if tt.wantField == "" {
				if code != 200 {
					t.Fatalf("%d %s, want 200", code, b)
				}
				return
			}
			if code != http.StatusBadRequest || !strings.HasPrefix(ctype, "application/json") {
				t.Fatalf("%d %s %s, want 400 JSON", code, ctype, b)
			}
			var st struct {
				Code    any              `json:"code"`
				Message string           `json:"message"`
				Details []map[string]any `json:"details"`
			}
			if err := json.Unmarshal(b, &st); err != nil {
				t.Fatalf("error body: %v: %s", err, b)
			}
			if st.Code != float64(codes.InvalidArgument) && st.Code != "invalid_argument" {
				t.Fatalf("code %v, want INVALID_ARGUMENT: %s", st.Code, b)
			}
			if !strings.Contains(st.Message, strconv.Quote(tt.wantField)) {
				t.Errorf("message %q does not name %q", st.Message, tt.wantField)
			}
			// REST bodies carry google.rpc.Status details as JSON; Connect's carry them
			// base64-encoded with a debug copy.
			found := false
			for _, d := range st.Details {
				found = found || strings.Contains(fmt.Sprint(d), `field:`+tt.wantField)
			}
			if !found {
				t.Errorf("no BadRequest field violation for %q in %s", tt.wantField, b)
			}
		})
	}
	conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	risk := riskv1.NewRiskServiceClient(conn)
	for _, id := range []string{"a-2", "a-3", "a-4"} {
		if _, err := risk.GetAlert(ctx, &riskv1.GetAlertRequest{AlertId: id}); status.Code(err) != codes.NotFound {
			t.Errorf("refused write stored %s: %v", id, err)
		}
	}
	if a, err := risk.GetAlert(ctx, &riskv1.GetAlertRequest{AlertId: "a-1"}); err != nil || a.GetAlert().GetClassification() != riskv1.AlertClassification_ALERT_CLASSIFICATION_UNSPECIFIED {
		t.Errorf("a-1 after the refused resolve: %v %v", a, err)
	}
}
