package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	auditv1 "github.com/condaccess/condaccess/gen/go/condaccess/audit/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/auth/authtest"
	"github.com/condaccess/condaccess/internal/ssf"
)

// setRecord is one SET the test receiver accepted, verified with go-jose against the
// transmitter's published JWKS.
type setRecord struct {
	jti, token, typ string
	event           map[string]any
	subject         map[string]any
	iss             string
}

// testReceiver is an RFC 8935 push endpoint that verifies every SET; while failing it
// answers 503 (and records the attempt).
type testReceiver struct {
	t       *testing.T
	mu      sync.Mutex
	jwksURL string
	keys    *jose.JSONWebKeySet
	failing bool
	got     []setRecord       // accepted
	tried   map[string]string // jti -> token of every attempt (same jti must carry the same token)
	tries   map[string]int    // jti -> attempts
	changed chan struct{}
	errs    []string
}

func (r *testReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer func() {
		close(r.changed)
		r.changed = make(chan struct{})
		r.mu.Unlock()
	}()
	fail := func(format string, args ...any) {
		r.errs = append(r.errs, fmt.Sprintf(format, args...))
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"err":"invalid_request"}`)
	}
	if req.Header.Get("Content-Type") != "application/secevent+jwt" {
		fail("content type %q", req.Header.Get("Content-Type"))
		return
	}
	if r.keys == nil {
		resp, err := http.Get(r.jwksURL)
		if err != nil {
			fail("jwks: %v", err)
			return
		}
		defer resp.Body.Close()
		r.keys = &jose.JSONWebKeySet{}
		if err := json.NewDecoder(resp.Body).Decode(r.keys); err != nil {
			fail("jwks: %v", err)
			return
		}
	}
	jws, err := jose.ParseSigned(string(b), []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		fail("parse: %v", err)
		return
	}
	h := jws.Signatures[0].Header
	if h.ExtraHeaders[jose.HeaderType] != "secevent+jwt" {
		fail("typ %v", h.ExtraHeaders[jose.HeaderType])
		return
	}
	ks := r.keys.Key(h.KeyID)
	if len(ks) != 1 {
		fail("kid %q not in JWKS", h.KeyID)
		return
	}
	payload, err := jws.Verify(ks[0])
	if err != nil {
		fail("signature: %v", err)
		return
	}
	var c struct {
		Iss    string                    `json:"iss"`
		Jti    string                    `json:"jti"`
		Iat    int64                     `json:"iat"`
		Aud    string                    `json:"aud"`
		Sub    *string                   `json:"sub"`
		Exp    *int64                    `json:"exp"`
		SubID  map[string]any            `json:"sub_id"`
		Events map[string]map[string]any `json:"events"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		fail("claims: %v", err)
		return
	}
	if c.Jti == "" || c.Iat == 0 || c.Aud != "https://idp.example/caep" || c.Sub != nil || c.Exp != nil || len(c.Events) != 1 {
		fail("claims %s", payload)
		return
	}
	if prev, ok := r.tried[c.Jti]; ok && prev != string(b) {
		fail("jti %s was resent with a different token", c.Jti)
		return
	}
	r.tried[c.Jti] = string(b)
	r.tries[c.Jti]++
	if r.failing {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	for typ, ev := range c.Events {
		r.got = append(r.got, setRecord{jti: c.Jti, token: string(b), typ: typ, event: ev, subject: c.SubID, iss: c.Iss})
	}
	w.WriteHeader(http.StatusAccepted)
}

// waitFor waits until cond holds over the receiver's state.
func (r *testReceiver) waitFor(ctx context.Context, what string, cond func() bool) {
	r.t.Helper()
	for {
		r.mu.Lock()
		ok := cond()
		ch := r.changed
		errs := append([]string(nil), r.errs...)
		r.mu.Unlock()
		if len(errs) > 0 {
			r.t.Fatalf("receiver refused SETs: %v", errs)
		}
		if ok {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			r.t.Fatalf("waiting for %s: %v", what, ctx.Err())
		}
	}
}

// has reports whether an accepted SET of typ matches the member values in want.
func (r *testReceiver) has(typ string, want map[string]string) bool {
	for _, s := range r.got {
		if s.typ != typ {
			continue
		}
		ok := true
		for k, v := range want {
			if fmt.Sprint(s.event[k]) != v {
				ok = false
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// freeAddrs returns n distinct free loopback addresses: every listener is held until
// all are chosen, so that none is handed out twice.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		addrs = append(addrs, l.Addr().String())
	}
	return addrs
}

func httpDo(t *testing.T, method, url, token, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestSharedSignalsFlow runs serve with a push stream to a receiver in the test: the
// flow's alert yields device-compliance-change to not-compliant, session-revoked and
// risk-level-change; the resolution, delivered across a restart of the transmitter while
// the receiver was failing, yields compliant with nothing lost and retries on the same jti.
// A second transmitter's signed SET then raises dev-1's risk and blocks payroll, and its
// "back to low" resolves it.
func TestSharedSignalsFlow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// The second transmitter: its key set served by the test.
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ssf.NewSigner(otherKey)
	if err != nil {
		t.Fatal(err)
	}
	otherTx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _ = json.NewEncoder(w).Encode(other.JWKS()) }))
	defer otherTx.Close()

	dataDir, addrs := t.TempDir(), freeAddrs(t, 2)
	o := serveOptions{grpcAddr: addrs[0], httpAddr: addrs[1], dataDir: dataDir,
		services: "risk,compliance,access,remediation", stopTimeout: 5 * time.Second}
	o.ssf.ReceiverIssuers = []string{otherTx.URL}
	o.ssf.ReceiverJWKS = []string{otherTx.URL + "/jwks"}
	o.ssf.ReceiverAudience = "condaccess-under-test"
	o.ssf.PushAllow = []string{"127.0.0.0/8"} // the test receiver listens on loopback
	logger := slog.New(slog.DiscardHandler)
	s, err := startSuite(ctx, o, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Stop() }()
	base := "http://" + s.HTTPAddr()

	// Discovery and keys.
	code, b := httpDo(t, "GET", base+"/.well-known/ssf-configuration", "", "")
	var md ssf.Metadata
	if code != 200 || json.Unmarshal(b, &md) != nil || md.Issuer != base || md.JWKSURI != base+"/ssf/jwks.json" {
		t.Fatalf("ssf-configuration: %d %s", code, b)
	}

	// A receiver is registered with the CLI while the server runs; the token is stdout's only line.
	var out, errOut bytes.Buffer
	if err := runSSF(ctx, []string{"receivers", "add", "--data-dir", dataDir, "https://idp.example/caep"}, &out, &errOut); err != nil {
		t.Fatalf("ssf receivers add: %v (%s)", err, errOut.String())
	}
	token := strings.TrimSuffix(out.String(), "\n")
	if token == "" || strings.ContainsAny(token, " \n") {
		t.Fatalf("token output %q", out.String())
	}
	if code, _ := httpDo(t, "POST", base+"/ssf/stream", "", `{}`); code != http.StatusUnauthorized {
		t.Fatalf("create stream without a token: %d, want 401", code)
	}

	// Push endpoints outside the allow-list are refused (the guard's own tests cover the rest).
	for _, u := range []string{"http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "file:///etc/passwd"} {
		if code, b := httpDo(t, "POST", base+"/ssf/stream", token, `{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"`+u+`"}}`); code != http.StatusBadRequest {
			t.Fatalf("push stream to %s: %d %s, want 400", u, code, b)
		}
	}

	rx := &testReceiver{t: t, jwksURL: md.JWKSURI, tried: map[string]string{}, tries: map[string]int{}, changed: make(chan struct{})}
	rxSrv := httptest.NewServer(rx)
	defer rxSrv.Close()
	evs, _ := json.Marshal(ssf.SupportedEvents)
	code, b = httpDo(t, "POST", base+"/ssf/stream", token,
		`{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"`+rxSrv.URL+`/events"},"events_requested":`+string(evs)+`}`)
	if code != http.StatusCreated {
		t.Fatalf("create stream: %d %s", code, b)
	}

	conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	setupPayroll(ctx, t, conn)
	access := accessv1.NewAccessServiceClient(conn)
	risk := riskv1.NewRiskServiceClient(conn)
	evaluate := func(want accessv1.Decision) {
		t.Helper()
		for {
			r, err := access.EvaluateAccess(ctx, &accessv1.EvaluateAccessRequest{UserId: "u-1", DeviceId: "dev-1", ApplicationId: "payroll"})
			if err != nil {
				t.Fatal(err)
			}
			if r.GetDecision() == want {
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("access is %s, want %s", r.GetDecision(), want)
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	evaluate(accessv1.Decision_DECISION_ALLOW) // opens a session

	// The alert: not-compliant, the session revoked, risk HIGH.
	if _, err := risk.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
		AlertId: "a-1", DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "Malicious file opened"}}); err != nil {
		t.Fatal(err)
	}
	rx.waitFor(ctx, "not-compliant, session-revoked, risk HIGH", func() bool {
		return rx.has(ssf.EventDeviceComplianceChange, map[string]string{"current_status": "not-compliant", "previous_status": "compliant", "initiating_entity": "policy"}) &&
			rx.has(ssf.EventSessionRevoked, nil) &&
			rx.has(ssf.EventRiskLevelChange, map[string]string{"current_level": "HIGH", "principal": "DEVICE"})
	})
	rx.mu.Lock()
	for _, r := range rx.got {
		dev, _ := r.subject["device"].(map[string]any)
		user, _ := r.subject["user"].(map[string]any)
		if r.subject["format"] != "complex" || dev["format"] != "opaque" || dev["id"] != "dev-1" ||
			user["format"] != "iss_sub" || user["sub"] != "u-1" || user["iss"] != base || r.iss != base {
			t.Errorf("%s subject %v", r.typ, r.subject)
		}
		if _, ok := r.event["event_timestamp"].(float64); !ok {
			t.Errorf("%s without event_timestamp: %v", r.typ, r.event)
		}
	}
	// The receiver now fails; the resolution's SETs wait in the transmitter's store.
	rx.failing = true
	rx.mu.Unlock()
	if _, err := risk.ResolveAlert(ctx, &riskv1.ResolveAlertRequest{AlertId: "a-1",
		Classification: riskv1.AlertClassification_ALERT_CLASSIFICATION_TRUE_POSITIVE, Comment: "cleaned"}); err != nil {
		t.Fatal(err)
	}
	accepted := func() int { return len(rx.got) }
	rx.mu.Lock()
	before := accepted()
	rx.mu.Unlock()
	rx.waitFor(ctx, "a refused delivery attempt", func() bool { return len(rx.tried) > before })

	// Restart the transmitter (the whole serve) on the same data dir; the receiver recovers.
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	rx.mu.Lock()
	rx.failing = false
	rx.mu.Unlock()
	s, err = startSuite(ctx, o, logger)
	if err != nil {
		t.Fatal(err)
	}
	rx.waitFor(ctx, "compliant and risk LOW after the restart", func() bool {
		return rx.has(ssf.EventDeviceComplianceChange, map[string]string{"current_status": "compliant", "previous_status": "not-compliant"}) &&
			rx.has(ssf.EventRiskLevelChange, map[string]string{"current_level": "LOW", "previous_level": "HIGH"})
	})
	rx.mu.Lock()
	got := map[string]bool{}
	for _, r := range rx.got {
		if got[r.jti] {
			t.Errorf("jti %s accepted twice", r.jti)
		}
		got[r.jti] = true
	}
	retried := 0
	for jti := range rx.tried {
		if !got[jti] {
			t.Errorf("SET %s was attempted but never delivered", jti)
		}
		if rx.tries[jti] > 1 {
			retried++
		}
	}
	if retried == 0 {
		t.Error("no SET was refused before the restart and delivered after it")
	}
	rx.mu.Unlock()

	// A second transmitter's SET raises dev-1's risk and blocks payroll.
	pushOther := func(jti string, events map[string]any) (int, string) {
		tok, err := other.Sign(map[string]any{"iss": otherTx.URL, "jti": jti, "iat": time.Now().Unix(), "aud": "condaccess-under-test",
			"sub_id": map[string]any{"format": "complex", "device": map[string]any{"format": "opaque", "id": "dev-1"}}, "events": events})
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("POST", "http://"+s.HTTPAddr()+"/ssf/receiver", strings.NewReader(tok))
		req.Header.Set("Content-Type", "application/secevent+jwt")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, b := pushOther("edr-1", map[string]any{ssf.EventRiskLevelChange: map[string]any{"current_level": "HIGH", "principal": "DEVICE", "risk_reason": "ransomware"}}); code != 202 {
		t.Fatalf("push from the second transmitter: %d %s", code, b)
	}
	r, err := risk.GetDeviceRisk(ctx, &riskv1.GetDeviceRiskRequest{DeviceId: "dev-1"})
	if err != nil || r.GetDeviceRisk().GetLevel() != commonv1.RiskLevel_RISK_LEVEL_HIGH {
		t.Fatalf("dev-1 risk %v %v, want HIGH", r.GetDeviceRisk().GetLevel(), err)
	}
	evaluate(accessv1.Decision_DECISION_BLOCK)
	alerts, err := risk.ListAlerts(ctx, &riskv1.ListAlertsRequest{DeviceId: "dev-1"})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, a := range alerts.GetAlerts() {
		if a.GetDetectionSource() == otherTx.URL {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d alerts from the second transmitter, want 1", n)
	}
	if code, b := pushOther("edr-1", map[string]any{ssf.EventRiskLevelChange: map[string]any{"current_level": "HIGH", "principal": "DEVICE"}}); code != 400 || !strings.Contains(b, "invalid_request") {
		t.Fatalf("replayed jti: %d %s, want 400 invalid_request", code, b)
	}
	if code, b := pushOther("edr-2", map[string]any{ssf.EventDeviceComplianceChange: map[string]any{"current_status": "compliant", "previous_status": "not-compliant"}}); code != 202 {
		t.Fatalf("back to compliant: %d %s", code, b)
	}
	r, err = risk.GetDeviceRisk(ctx, &riskv1.GetDeviceRiskRequest{DeviceId: "dev-1"})
	if err != nil || r.GetDeviceRisk().GetLevel() != commonv1.RiskLevel_RISK_LEVEL_NONE {
		t.Fatalf("dev-1 risk %v %v, want NONE", r.GetDeviceRisk().GetLevel(), err)
	}
	evaluate(accessv1.Decision_DECISION_ALLOW)

	// Deliveries and receptions are counted on /metrics.
	code, b = httpDo(t, "GET", "http://"+s.HTTPAddr()+"/metrics", "", "")
	for _, want := range []string{`condaccess_ssf_receiver_sets_total{`, `result="applied"`, `result="refused"`, `condaccess_ssf_transmitter_sets_total{`, `result="pushed"`} {
		if code != 200 || !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// setupPayroll creates u-1, payroll, dev-1 (owned by u-1), a max-medium compliance
// policy and "payroll requires a compliant device".
func setupPayroll(ctx context.Context, t *testing.T, conn *grpc.ClientConn) {
	t.Helper()
	dir := accessv1.NewDirectoryServiceClient(conn)
	if _, err := dir.CreateUser(ctx, &accessv1.CreateUserRequest{User: &accessv1.User{UserId: "u-1", DisplayName: "Ada"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := dir.CreateApplication(ctx, &accessv1.CreateApplicationRequest{Application: &accessv1.Application{ApplicationId: "payroll", DisplayName: "Payroll"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := compliancev1.NewCompliancePolicyServiceClient(conn).CreateCompliancePolicy(ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
		PolicyId: "max-medium", DisplayName: "Device risk at or under medium",
		MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_MEDIUM, Assignment: &compliancev1.PolicyAssignment{AllDevices: true},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := compliancev1.NewDeviceServiceClient(conn).EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
		DeviceId: "dev-1", DisplayName: "Laptop 1", Platform: commonv1.Platform_PLATFORM_WINDOWS, OsVersion: "10.0.22631", OwnerUserId: "u-1",
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := accessv1.NewConditionalAccessPolicyServiceClient(conn).CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: &accessv1.ConditionalAccessPolicy{
		PolicyId: "payroll-compliant", DisplayName: "Payroll requires a compliant device", State: accessv1.PolicyState_POLICY_STATE_ENABLED,
		Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{Include: []string{"payroll"}},
		GrantControls: &accessv1.GrantControls{Require: []accessv1.GrantControl{accessv1.GrantControl_GRANT_CONTROL_COMPLIANT_DEVICE}},
	}}); err != nil {
		t.Fatal(err)
	}
}

func TestSSFReceiversAdd(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	add := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := runSSF(ctx, append([]string{"receivers", "add", "--data-dir", dir}, args...), &out, &errOut)
		return out.String(), err
	}
	tok, err := add("rp-1")
	if err != nil || strings.Count(tok, "\n") != 1 || len(strings.TrimSpace(tok)) < 40 {
		t.Fatalf("add rp-1: %q %v", tok, err)
	}
	tok = strings.TrimSpace(tok)
	tests := []struct {
		name  string
		args  []string
		usage bool
	}{
		{"duplicate name", []string{"rp-1"}, false},
		{"no name", nil, true},
		{"two names", []string{"a", "b"}, true},
		{"name with spaces", []string{"a b"}, true},
		{"name too long", []string{strings.Repeat("a", 300)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := add(tt.args...)
			if err == nil || out != "" {
				t.Fatalf("got %q, %v; want an error and no output", out, err)
			}
			if got := errors.Is(err, errUsage); got != tt.usage {
				t.Errorf("usage error = %v, want %v (%v)", got, tt.usage, err)
			}
		})
	}
	// The token is stored only as a hash.
	st, err := ssf.OpenStore(ctx, ssf.StorePath(dir+"/ssf"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	name, err := st.ReceiverByToken(ctx, tok)
	st.Close()
	if err != nil || name != "rp-1" {
		t.Fatalf("ReceiverByToken = %q, %v", name, err)
	}
	for _, f := range []string{"ssf.db", "ssf.db-wal"} {
		b, err := os.ReadFile(dir + "/ssf/" + f)
		if err == nil && bytes.Contains(b, []byte(tok)) {
			t.Errorf("%s holds the token in clear", f)
		}
	}
}

// TestSSFStreamManagementByAdminCertificate runs serve with mutual TLS: a client
// certificate with the secops-admin role manages a registered receiver's streams on the
// HTTPS address; no certificate, another role's certificate, or a wrong token get 401;
// push endpoints must use https outside development mode.
func TestSSFStreamManagementByAdminCertificate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ca := authtest.NewCA(t)
	cfg := ca.ServerConfig(t)
	dataDir := t.TempDir()
	o := serveOptions{grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", dataDir: dataDir, services: "risk,compliance,access",
		stopTimeout: 5 * time.Second, tlsCert: cfg.CertFile, tlsKey: cfg.KeyFile, tlsClientCA: cfg.ClientCAFile}
	s, err := startSuite(ctx, o, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	var out, errOut bytes.Buffer
	if err := runSSF(ctx, []string{"receivers", "add", "--data-dir", dataDir, "rp-1"}, &out, &errOut); err != nil {
		t.Fatalf("ssf receivers add: %v (%s)", err, errOut.String())
	}
	token := strings.TrimSpace(out.String())

	caPEM, err := os.ReadFile(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := func(roles ...commonv1.Role) *http.Client {
		tc := &tls.Config{RootCAs: pool, ServerName: "localhost"}
		if roles != nil {
			certFile, keyFile := ca.Issue(t, "person-"+auth.RoleName(roles[0]), roles)
			kp, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				t.Fatal(err)
			}
			tc.Certificates = []tls.Certificate{kp}
		}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	}
	base := "https://" + s.HTTPAddr()
	do := func(c *http.Client, method, path, tok, body string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	admin := client(commonv1.Role_ROLE_SECOPS_ADMIN)
	for _, tt := range []struct {
		name   string
		client *http.Client
		token  string
	}{
		{"no certificate", client(), ""},
		{"reader certificate", client(commonv1.Role_ROLE_READER), ""},
		{"policy-admin certificate", client(commonv1.Role_ROLE_POLICY_ADMIN), ""},
		{"admin certificate with a wrong token", admin, "wrong"},
	} {
		t.Run("refused: "+tt.name, func(t *testing.T) {
			if code, b := do(tt.client, "POST", "/ssf/stream", tt.token, `{"aud":"rp-1"}`); code != http.StatusUnauthorized {
				t.Fatalf("%d %s, want 401", code, b)
			}
		})
	}
	code, b := do(admin, "POST", "/ssf/stream", "", `{"aud":"rp-1"}`)
	var made ssf.StreamConfig
	if code != http.StatusCreated || json.Unmarshal(b, &made) != nil || len(made.Aud) != 1 || made.Aud[0] != "rp-1" {
		t.Fatalf("admin create: %d %s", code, b)
	}
	if code, b := do(client(), "GET", "/ssf/stream?stream_id="+made.StreamID, token, ""); code != http.StatusOK {
		t.Fatalf("the receiver reads the stream an admin made for it: %d %s", code, b)
	}
	if code, b := do(client(), "GET", "/.well-known/ssf-configuration", "", ""); code != http.StatusOK || !strings.Contains(string(b), "urn:ietf:rfc:8705") {
		t.Fatalf("metadata: %d %s", code, b)
	}
	if code, b := do(client(), "POST", "/ssf/stream", token, `{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"http://93.184.215.14/events"}}`); code != http.StatusBadRequest {
		t.Fatalf("http push endpoint outside development mode: %d %s, want 400", code, b)
	}
	// The admin's change is in the suite's audit log (AuditService), with its certificate.
	opt, err := auth.DialOption(ca.ClientConfig(t, "auditor", commonv1.Role_ROLE_SECOPS_ADMIN))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(s.GRPCAddr(), opt)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := auditv1.NewAuditServiceClient(conn).ListAuditEvents(ctx, &auditv1.ListAuditEventsRequest{ResourceType: "ssf_stream"})
	if err != nil {
		t.Fatal(err)
	}
	if evs := resp.GetEvents(); len(evs) != 1 || evs[0].GetService() != "ssf" || evs[0].GetResourceId() != made.StreamID ||
		evs[0].GetActor().GetSubject() != "person-secops-admin" || evs[0].GetMethod() != "POST /ssf/stream" ||
		evs[0].GetAction() != auditv1.AuditAction_AUDIT_ACTION_CREATE {
		t.Fatalf("audit events %v, want the admin's stream creation", evs)
	}
	certFile, keyFile := ca.Issue(t, "auditor", []commonv1.Role{commonv1.Role_ROLE_READER})
	listed, _, err := runCLI(t, "audit", "list", "--server", s.GRPCAddr(), "--tls-ca", ca.CertFile, "--tls-cert", certFile, "--tls-key", keyFile,
		"--resource-type", "ssf_stream")
	if err != nil || !strings.Contains(listed, "ssf_stream/"+made.StreamID) || !strings.Contains(listed, "POST /ssf/stream") {
		t.Fatalf("condaccess audit list: %v\n%s", err, listed)
	}
}
