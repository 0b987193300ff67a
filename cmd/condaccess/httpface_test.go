package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/auth/authtest"
	"github.com/condaccess/condaccess/internal/httpface"
)

// connectCall posts a Connect JSON request, as curl does, and returns the status and
// the decoded body.
func connectCall(t *testing.T, c *http.Client, url, body string, header map[string]string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Connect-Protocol-Version", "1")
	for k, v := range header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m) // plain-text refusals stay nil
	return resp.StatusCode, m
}

// TestConnectJSON is the README's curl call against `serve` in development mode, plus
// the refusals of the HTTP face: bad input, unknown device, cross-origin and
// DNS-rebinding requests.
func TestConnectJSON(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, conn := startDevSuite(t, ctx)
	if _, err := compliancev1.NewDeviceServiceClient(conn).EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
		DeviceId: "dev-1", DisplayName: "Laptop 1", Platform: commonv1.Platform_PLATFORM_WINDOWS, OsVersion: "10.0.22631"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := riskv1.NewRiskServiceClient(conn).ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
		AlertId: "a-1", DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "Malicious file opened"}}); err != nil {
		t.Fatal(err)
	}
	base := "http://" + s.HTTPAddr()
	const method = "/condaccess.risk.v1.RiskService/GetDeviceRisk"
	tests := []struct {
		name       string
		body       string
		header     map[string]string
		wantStatus int
		wantCode   string // Connect error code; "" for success
		wantLevel  string
	}{
		{name: "README call", body: `{"deviceId":"dev-1"}`, wantStatus: 200, wantLevel: "RISK_LEVEL_HIGH"},
		{name: "same-origin browser", body: `{"deviceId":"dev-1"}`, header: map[string]string{"Origin": base}, wantStatus: 200, wantLevel: "RISK_LEVEL_HIGH"},
		{name: "unknown device", body: `{"deviceId":"dev-404"}`, wantStatus: 404, wantCode: "not_found"},
		{name: "invalid device id", body: `{"deviceId":""}`, wantStatus: 400, wantCode: "invalid_argument"},
		{name: "not JSON", body: `{deviceId`, wantStatus: 400, wantCode: "invalid_argument"},
		{name: "17 MiB body", body: `{"deviceId":"` + strings.Repeat("a", 17<<20) + `"}`, wantStatus: 429, wantCode: "resource_exhausted"},
		{name: "cross-origin page", body: `{"deviceId":"dev-1"}`, header: map[string]string{"Origin": "http://evil.example"}, wantStatus: 403},
		{name: "DNS rebinding host", body: `{"deviceId":"dev-1"}`, header: map[string]string{"Host": "evil.example:7480"}, wantStatus: http.StatusMisdirectedRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, m := connectCall(t, http.DefaultClient, base+method, tt.body, tt.header)
			if status != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %v)", status, tt.wantStatus, m)
			}
			if tt.wantCode != "" && m["code"] != tt.wantCode {
				t.Errorf("code = %v, want %s", m["code"], tt.wantCode)
			}
			if tt.wantLevel != "" {
				dr, _ := m["deviceRisk"].(map[string]any)
				if dr["level"] != tt.wantLevel {
					t.Errorf("deviceRisk = %v, want level %s", m["deviceRisk"], tt.wantLevel)
				}
			}
		})
	}

	pages := []struct {
		path       string
		wantStatus int
		wantBody   string
	}{
		{"/", 200, `<div id="app">`},
		{"/devices/dev-1", 200, `<div id="app">`},
		{"/blocked?ref=x", 200, `<div id="app">`},
		{"/audit", 200, `<div id="app">`},
		{"/metrics", 200, "# HELP"},
		{"/no-such-page", 404, ""},
		{"/devices/a/b", 404, ""},
		{"/assets/../index.html", 404, ""},
	}
	for _, p := range pages {
		t.Run("GET "+p.path, func(t *testing.T) {
			resp, err := http.Get(base + p.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != p.wantStatus || !strings.Contains(string(b), p.wantBody) {
				t.Fatalf("status %d body %.80q, want %d containing %q", resp.StatusCode, b, p.wantStatus, p.wantBody)
			}
			if p.wantStatus == 200 && p.path != "/metrics" && !strings.Contains(resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
				t.Errorf("Content-Security-Policy = %q", resp.Header.Get("Content-Security-Policy"))
			}
		})
	}
}

// TestHTTPFaceIdentity shows that outside development mode a browser call carries no
// identity unless its TLS client certificate was verified against the client CA: no
// certificate or a self-signed one is UNAUTHENTICATED, a verified one gets its roles,
// and the contract's roles apply unchanged.
func TestHTTPFaceIdentity(t *testing.T) {
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

	// The same handler behind an HTTPS listener that asks for (but does not require)
	// a client certificate, verified against the client CA when one is given; and one
	// that accepts any certificate without verifying it.
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
	start := func(clientAuth tls.ClientAuthType) string {
		srv := httptest.NewUnstartedServer(h)
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientCAs: pool, ClientAuth: clientAuth, MinVersion: tls.VersionTLS12}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv.URL
	}
	verifying := start(tls.VerifyClientCertIfGiven)
	unverifying := start(tls.RequireAnyClientCert)

	client := func(cert *tls.Certificate) *http.Client {
		cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		if cert != nil {
			// Always offer the certificate, whichever CAs the server names.
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	issued := func(cn string, roles ...commonv1.Role) *tls.Certificate {
		c, k := ca.Issue(t, cn, roles)
		pair, err := tls.LoadX509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		return &pair
	}
	reader := issued("alice", commonv1.Role_ROLE_READER)
	sensor := issued("sensor-1", commonv1.Role_ROLE_SENSOR)
	self := selfSigned(t, "alice")

	const method = "/condaccess.risk.v1.RiskService/ListDeviceRisks"
	tests := []struct {
		name       string
		url        string
		client     *http.Client
		wantStatus int
		wantCode   string
	}{
		// serve's own HTTP listener is TLS when mutual TLS is configured: plain HTTP
		// is refused before any handler, a TLS call without a certificate is
		// UNAUTHENTICATED, and a verified reader gets through.
		{"serve's listener over plain HTTP", "http://" + s.HTTPAddr(), http.DefaultClient, 400, ""},
		{"serve's HTTPS listener, no client certificate", "https://" + s.HTTPAddr(), client(nil), 401, "unauthenticated"},
		{"serve's HTTPS listener, verified reader certificate", "https://" + s.HTTPAddr(), client(reader), 200, ""},
		{"HTTPS, no client certificate", verifying, client(nil), 401, "unauthenticated"},
		{"HTTPS, self-signed certificate not verified", unverifying, client(self), 401, "unauthenticated"},
		{"HTTPS, verified certificate without the role", verifying, client(sensor), 403, "permission_denied"},
		{"HTTPS, verified reader certificate", verifying, client(reader), 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, m := connectCall(t, tt.client, tt.url+method, `{}`, nil)
			if status != tt.wantStatus || (tt.wantCode != "" && m["code"] != tt.wantCode) {
				t.Fatalf("status %d code %v, want %d %s (body %v)", status, m["code"], tt.wantStatus, tt.wantCode, m)
			}
		})
	}
}

func selfSigned(t *testing.T, cn string) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestHTTPFaceCallCountedOnce: a Connect call takes its in-flight slot in the HTTP
// face, before its body is read, and the interceptor chain behind the transcoder does
// not take a second one: with --max-calls-per-identity 1 a call passes (it would be
// refused by its own slot if counted twice) and REST too.
func TestHTTPFaceCallCountedOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	limits := defaultLimits()
	limits.maxCallsPerIdentity = 1
	s, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", dataDir: t.TempDir(),
		services: "risk", stopTimeout: 5 * time.Second, limits: &limits}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	base := "http://" + s.HTTPAddr()
	for i := range 3 {
		if status, m := connectCall(t, http.DefaultClient, base+"/condaccess.risk.v1.RiskService/ListDeviceRisks", `{}`, nil); status != 200 {
			t.Fatalf("Connect call %d with a cap of one call in flight: %d %v", i, status, m)
		}
	}
	resp, err := http.Get(base + "/v1/deviceRisks")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("REST call with a cap of one call in flight: %d", resp.StatusCode)
	}
}
