package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	"github.com/condaccess/condaccess/integration/harness"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/auth/authtest"
	"github.com/condaccess/condaccess/services/access/edgeid/edgeidtest"
)

// edgeSuite is one `condaccess serve` with mutual TLS, its HTTP listener on a second
// loopback address (127.0.0.2), a test OIDC issuer and a device CA.
type edgeSuite struct {
	dir        string
	ca         *authtest.CA
	deviceCA   *edgeidtest.DeviceCA
	issuer     *edgeidtest.Issuer
	serverCert string
	serverKey  string
	grpcAddr   string
	httpAddr   string
	proc       *harness.Process
	conn       *grpc.ClientConn
}

func startEdgeSuite(t *testing.T) *edgeSuite {
	t.Helper()
	bin, err := harness.Build()
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	s := &edgeSuite{dir: t.TempDir(), ca: authtest.NewCA(t), issuer: edgeidtest.NewIssuer(t)}
	s.deviceCA = edgeidtest.NewDeviceCA(t, s.dir, "device-ca")
	s.serverCert, s.serverKey = s.ca.Issue(t, "condaccess", []commonv1.Role{commonv1.Role_ROLE_SERVICE})
	if s.grpcAddr, err = harness.FreeAddr(); err != nil {
		t.Fatal(err)
	}
	free, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	s.httpAddr = "127.0.0.2:" + free[strings.LastIndexByte(free, ':')+1:]
	args := []string{"serve", "--grpc-addr", s.grpcAddr, "--http-addr", s.httpAddr, "--data-dir", filepath.Join(s.dir, "data"),
		"--tls-cert", s.serverCert, "--tls-key", s.serverKey, "--tls-client-ca", s.ca.CertFile,
		"--device-ca-cert", s.deviceCA.CertFile, "--device-ca-key", s.deviceCA.KeyFile, "--oidc-issuer", s.issuer.URL, "--oidc-audience", "condaccess",
		"--access-trusted-proxy-hops", "1", "--access-help-url", "https://help.example/blocked", "--stop-timeout", "2s"}
	s.proc = &harness.Process{Name: "condaccess", Path: bin.Condaccess, Args: args, Env: []string{"OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none"},
		LogPath: filepath.Join(s.dir, "condaccess.log")}
	if err := s.proc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.proc.Stop(5 * time.Second)
		if t.Failed() {
			t.Logf("condaccess log:\n%s", s.proc.Logs(8000))
		}
	})
	opt, err := auth.DialOption(s.ca.ClientConfig(t, "test-admin", commonv1.Role_ROLE_POLICY_ADMIN, commonv1.Role_ROLE_SECOPS_ADMIN, commonv1.Role_ROLE_READER))
	if err != nil {
		t.Fatal(err)
	}
	if s.conn, err = grpc.NewClient(s.grpcAddr, opt); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.conn.Close() })
	hc := grpc_health_v1.NewHealthClient(s.conn)
	harness.Eventually(t, "condaccess healthy", func(ctx context.Context) (bool, string) {
		r, err := hc.Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: "condaccess.access.v1.AccessService"})
		return err == nil && r.GetStatus() == grpc_health_v1.HealthCheckResponse_SERVING, fmt.Sprint(r, err)
	})
	return s
}

// httpsClient trusts the suite CA and presents cert (when not nil).
func (s *edgeSuite) httpsClient(t *testing.T, cert *tls.Certificate) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(s.ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

// fromSecondLoopback makes c connect from 127.0.0.2, a source address that is not
// 127.0.0.1, as a caller on another host would.
func fromSecondLoopback(c *http.Client) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
	c.Transport.(*http.Transport).DialContext = d.DialContext
	return c
}

func (s *edgeSuite) roleCert(t *testing.T, name string, roles ...commonv1.Role) *tls.Certificate {
	t.Helper()
	cf, kf := s.ca.Issue(t, name, roles)
	c, err := tls.LoadX509KeyPair(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

// seed: alice owns dev-a, bob owns dev-b; payroll needs a compliant device registered
// to the user, wiki needs MFA, remote is blocked outside 10.0.0.0/8.
func (s *edgeSuite) seed(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	dir, pol := accessv1.NewDirectoryServiceClient(s.conn), accessv1.NewConditionalAccessPolicyServiceClient(s.conn)
	devs, cps := compliancev1.NewDeviceServiceClient(s.conn), compliancev1.NewCompliancePolicyServiceClient(s.conn)
	check := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range []string{"alice", "bob"} {
		check(dir.CreateUser(ctx, &accessv1.CreateUserRequest{User: &accessv1.User{UserId: u, DisplayName: u}}))
	}
	for _, a := range []string{"payroll", "wiki", "remote"} {
		check(dir.CreateApplication(ctx, &accessv1.CreateApplicationRequest{Application: &accessv1.Application{ApplicationId: a, DisplayName: a}}))
	}
	check(cps.CreateCompliancePolicy(ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{PolicyId: "max-medium",
		DisplayName: "risk at or under medium", MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_MEDIUM, Assignment: &compliancev1.PolicyAssignment{AllDevices: true}}}))
	for _, p := range []*accessv1.ConditionalAccessPolicy{
		{PolicyId: "payroll-registered", DisplayName: "Payroll: compliant device registered to the user", State: accessv1.PolicyState_POLICY_STATE_ENABLED,
			Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{Include: []string{"payroll"}},
			GrantControls: &accessv1.GrantControls{Require: []accessv1.GrantControl{accessv1.GrantControl_GRANT_CONTROL_COMPLIANT_DEVICE, accessv1.GrantControl_GRANT_CONTROL_REGISTERED_DEVICE}}},
		{PolicyId: "wiki-mfa", DisplayName: "Wiki: MFA", State: accessv1.PolicyState_POLICY_STATE_ENABLED,
			Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{Include: []string{"wiki"}},
			GrantControls: &accessv1.GrantControls{Require: []accessv1.GrantControl{accessv1.GrantControl_GRANT_CONTROL_MFA}}},
		{PolicyId: "remote-office-only", DisplayName: "Remote: block unless 10.0.0.0/8", State: accessv1.PolicyState_POLICY_STATE_ENABLED,
			Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{Include: []string{"remote"}},
			Conditions:    &accessv1.Conditions{Locations: &accessv1.LocationCondition{ExcludeIpRanges: []string{"10.0.0.0/8"}}},
			GrantControls: &accessv1.GrantControls{Block: true}},
	} {
		check(pol.CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: p}))
	}
	for dev, owner := range map[string]string{"dev-a": "alice", "dev-b": "bob"} {
		check(devs.EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{DeviceId: dev, DisplayName: dev,
			Platform: commonv1.Platform_PLATFORM_LINUX, OsVersion: "6.1", OwnerUserId: owner}}))
	}
	acc := accessv1.NewAccessServiceClient(s.conn)
	harness.Eventually(t, "access sees dev-a and dev-b compliant and registered", func(ctx context.Context) (bool, string) {
		for dev, owner := range map[string]string{"dev-a": "alice", "dev-b": "bob"} {
			r, err := acc.WhatIf(ctx, &accessv1.WhatIfRequest{Request: &accessv1.EvaluateAccessRequest{UserId: owner, DeviceId: dev, ApplicationId: "payroll"}})
			if err != nil || r.GetActual().GetDecision() != accessv1.Decision_DECISION_ALLOW {
				return false, fmt.Sprint(r.GetActual().GetReasons(), err)
			}
		}
		return true, ""
	})
}

// TestHTTPListenerWhoMayAsk: on 127.0.0.2 and from 127.0.0.2 (not 127.0.0.1), the TLS listener
// refuses /authz to a caller without a client certificate (401) or without the
// enforcement-point role (403), and /metrics to one without reader or service.
func TestHTTPListenerWhoMayAsk(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: starts real processes")
	}
	s := startEdgeSuite(t)
	base := "https://" + s.httpAddr
	reader := s.roleCert(t, "dashboards", commonv1.Role_ROLE_READER)
	ep := s.roleCert(t, "nginx", commonv1.Role_ROLE_ENFORCEMENT_POINT)
	for _, tt := range []struct {
		name     string
		cert     *tls.Certificate
		path     string
		wantCode int
	}{
		{"/authz without a client certificate", nil, "/authz", http.StatusUnauthorized},
		{"/authz as a reader", reader, "/authz", http.StatusForbidden},
		{"/authz as an enforcement point (no application: not evaluated)", ep, "/authz", http.StatusForbidden},
		{"/metrics without a client certificate", nil, "/metrics", http.StatusUnauthorized},
		{"/metrics as an enforcement point", ep, "/metrics", http.StatusForbidden},
		{"/metrics as a reader", reader, "/metrics", http.StatusOK},
		{"/access/status without a client certificate", nil, "/access/status", http.StatusUnauthorized},
		{"/access/status as a reader", reader, "/access/status", http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, base+tt.path, nil)
			req.Header.Set("x-user-id", "alice")
			req.Header.Set("x-device-id", "dev-a")
			resp, err := fromSecondLoopback(s.httpsClient(t, tt.cert)).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.wantCode {
				t.Errorf("GET %s = %d, want %d", tt.path, resp.StatusCode, tt.wantCode)
			}
		})
	}
	// Plain HTTP is not served.
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + s.httpAddr + "/authz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP /authz = %d, want 400 (TLS only)", resp.StatusCode)
		}
	}
	// Red team: another service's certificate is no enforcement point (EvaluateAccess
	// names no allowed_services), not even with identity headers; and an RPC from a
	// caller without a certificate is refused at once, whatever its body.
	cf, kf := s.ca.IssueURIs(t, "condaccess-risk", []string{auth.ServiceURI("risk")}, "localhost")
	riskCert, err := tls.LoadX509KeyPair(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/authz", nil)
	for k, v := range map[string]string{"x-user-id": "alice", "x-device-id": "dev-a", "x-mfa-done": "true", "x-application-id": "wiki"} {
		req.Header.Set(k, v)
	}
	resp, err := fromSecondLoopback(s.httpsClient(t, &riskCert)).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("x-condaccess-reason") != "ROLE_NOT_ALLOWED" {
		t.Errorf("GET /authz as the risk service = %d %s, want 403 ROLE_NOT_ALLOWED", resp.StatusCode, resp.Header.Get("x-condaccess-reason"))
	}
	big := strings.NewReader(`{"deviceId":"` + strings.Repeat("a", 4<<20-64) + `"}`)
	req, _ = http.NewRequest(http.MethodPost, base+"/condaccess.risk.v1.RiskService/GetDeviceRisk", big)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Connect-Protocol-Version", "1")
	resp, err = fromSecondLoopback(s.httpsClient(t, nil)).Do(req)
	if err != nil {
		t.Fatalf("Connect call without a certificate: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "unauthenticated") {
		t.Errorf("Connect call without a certificate = %d %s, want 401 unauthenticated", resp.StatusCode, body)
	}
}

const nginxConf = `daemon off;
master_process off;
pid {{dir}}/nginx.pid;
error_log {{dir}}/nginx-error.log info;
events { worker_connections 64; }
http {
  access_log {{dir}}/nginx-access.log;
  client_body_temp_path {{dir}}/tmp-body;
  proxy_temp_path {{dir}}/tmp-proxy;
  fastcgi_temp_path {{dir}}/tmp-fastcgi;
  uwsgi_temp_path {{dir}}/tmp-uwsgi;
  scgi_temp_path {{dir}}/tmp-scgi;
  map $request_uri $condaccess_app {
    ~^/payroll/ payroll;
    ~^/wiki/ wiki;
    ~^/remote/ remote;
    default unknown;
  }
  server {
    listen 127.0.0.1:{{port}} ssl;
    ssl_certificate {{server_cert}};
    ssl_certificate_key {{server_key}};
    # Devices prove themselves with their certificate; nginx verifies it.
    ssl_client_certificate {{device_ca}};
    ssl_verify_client on;
    root {{dir}}/www;
    location / {
      auth_request /_condaccess;
      auth_request_set $condaccess_reason $upstream_http_x_condaccess_reason;
      add_header X-Condaccess-Reason $condaccess_reason always;
    }
    location = /_condaccess {
      internal;
      proxy_pass https://{{condaccess}}/authz;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Application-Id $condaccess_app;
      proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;
      proxy_set_header Authorization $http_authorization;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      # nginx authenticates to condaccess with its enforcement-point certificate.
      proxy_ssl_certificate {{ep_cert}};
      proxy_ssl_certificate_key {{ep_key}};
      proxy_ssl_trusted_certificate {{suite_ca}};
      proxy_ssl_verify on;
      proxy_ssl_name localhost;
      proxy_ssl_protocols TLSv1.3;
    }
  }
}
`

// TestNginxForwardAuth puts real nginx in front: ssl_verify_client against the
// device CA, auth_request to /authz over mutual TLS with the device certificate
// ($ssl_client_escaped_cert) and the bearer token forwarded. The issuer rotates
// its key midway.
func TestNginxForwardAuth(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: starts real processes")
	}
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx"} {
			if _, err := os.Stat(p); err == nil {
				nginx = p
			}
		}
	}
	if nginx == "" {
		t.Skip("nginx is not installed (.ci/run installs nginx-light): the nginx forward-auth test cannot run")
	}
	s := startEdgeSuite(t)
	s.seed(t)

	dir := t.TempDir()
	for _, d := range []string{"www/payroll", "www/wiki", "www/remote"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, d, "index.html"), []byte("hello from "+d+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	epCert, epKey := s.ca.Issue(t, "nginx-edge", []commonv1.Role{commonv1.Role_ROLE_ENFORCEMENT_POINT})
	nginxServerCert, nginxServerKey := s.ca.Issue(t, "nginx-server", nil)
	addr, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	conf := strings.NewReplacer("{{dir}}", dir, "{{port}}", port, "{{server_cert}}", nginxServerCert, "{{server_key}}", nginxServerKey,
		"{{device_ca}}", s.deviceCA.CertFile, "{{condaccess}}", s.httpAddr, "{{ep_cert}}", epCert, "{{ep_key}}", epKey, "{{suite_ca}}", s.ca.CertFile).Replace(nginxConf)
	confFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	proc := &harness.Process{Name: "nginx", Path: nginx, Args: []string{"-p", dir, "-c", confFile, "-e", filepath.Join(dir, "nginx-error.log")}, LogPath: filepath.Join(dir, "nginx.log")}
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = proc.Stop(5 * time.Second)
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "nginx-error.log"))
			t.Logf("nginx error log:\n%s\n%s", b, proc.Logs(4000))
		}
	})

	now := time.Now()
	devA := s.deviceCA.Issue(t, "dev-a", now.Add(-time.Hour), now.Add(24*time.Hour))
	devB := s.deviceCA.Issue(t, "dev-b", now.Add(-time.Hour), now.Add(24*time.Hour))
	base := "https://127.0.0.1:" + port
	get := func(t *testing.T, dev *edgeidtest.DeviceCert, path, token string, hdrs map[string]string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		for k, v := range hdrs {
			req.Header.Add(k, v)
		}
		var cert *tls.Certificate
		if dev != nil {
			cert = &dev.TLS
		}
		resp, err := s.httpsClient(t, cert).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("X-Condaccess-Reason")
	}
	harness.Eventually(t, "nginx serving", func(context.Context) (bool, string) {
		resp, err := s.httpsClient(t, &devA.TLS).Get(base + "/payroll/")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return true, ""
	})

	is := s.issuer
	alice := is.Token(map[string]any{"sub": "alice", "aud": "condaccess"})
	bob := is.Token(map[string]any{"sub": "bob", "aud": "condaccess"})
	expired := is.Token(map[string]any{"sub": "alice", "aud": "condaccess", "exp": now.Add(-2 * time.Hour).Unix()})
	for _, tt := range []struct {
		name       string
		dev        *edgeidtest.DeviceCert
		path       string
		token      string
		hdrs       map[string]string
		wantCode   int
		wantReason string
	}{
		{"enrolled device and its owner's token", devA, "/payroll/", alice, nil, http.StatusOK, "GRANTED_BY_POLICY"},
		{"attack: another user's token on the owner's device", devA, "/payroll/", bob, nil, http.StatusForbidden, "DEVICE_NOT_REGISTERED_TO_USER"},
		{"attack: forged x-device-id and x-user-id are ignored", devB, "/payroll/", alice, map[string]string{"x-device-id": "dev-a", "x-user-id": "bob"},
			http.StatusForbidden, "DEVICE_NOT_REGISTERED_TO_USER"},
		{"attack: forged x-mfa-done is ignored", devA, "/wiki/", alice, map[string]string{"x-mfa-done": "true"}, http.StatusForbidden, "MFA_REQUIRED"},
		{"attack: headers without a token", devA, "/payroll/", "", map[string]string{"x-user-id": "alice", "x-device-id": "dev-a"}, http.StatusForbidden, "USER_TOKEN_MISSING"},
		{"expired token", devA, "/payroll/", expired, nil, http.StatusForbidden, "USER_TOKEN_INVALID"},
		{"attack XFF 1: client-supplied 10.1.2.3 left of the real address", devA, "/remote/", alice, map[string]string{"X-Forwarded-For": "10.1.2.3"},
			http.StatusForbidden, "BLOCKED_BY_POLICY"},
		{"attack XFF 2: 10.1.2.3, 203.0.113.9", devA, "/remote/", alice, map[string]string{"X-Forwarded-For": "10.1.2.3, 203.0.113.9"},
			http.StatusForbidden, "BLOCKED_BY_POLICY"},
		{"attack XFF 3: unparsable", devA, "/remote/", alice, map[string]string{"X-Forwarded-For": "not-an-ip"}, http.StatusForbidden, "BLOCKED_BY_POLICY"},
		{"no XFF: the connection's address (outside 10.0.0.0/8)", devA, "/remote/", alice, nil, http.StatusForbidden, "BLOCKED_BY_POLICY"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, reason := get(t, tt.dev, tt.path, tt.token, tt.hdrs)
			if code != tt.wantCode || reason != tt.wantReason {
				t.Errorf("GET %s = %d %s, want %d %s", tt.path, code, reason, tt.wantCode, tt.wantReason)
			}
		})
	}

	// Without a device certificate nginx itself refuses (ssl_verify_client on).
	if resp, err := s.httpsClient(t, nil).Get(base + "/payroll/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("no device certificate: %d, want 400 from nginx", resp.StatusCode)
		}
	}

	// Key rotation midway: a token signed with the new key works without a restart.
	is.Rotate()
	if code, reason := get(t, devA, "/payroll/", is.Token(map[string]any{"sub": "alice", "aud": "condaccess"}), nil); code != http.StatusOK {
		t.Errorf("after the issuer's key rotation: %d %s, want 200", code, reason)
	}

	// The sign-in log says how each identity was proven.
	acc := accessv1.NewAccessServiceClient(s.conn)
	harness.Eventually(t, "sign-ins recorded", func(ctx context.Context) (bool, string) {
		r, err := acc.ListSignIns(ctx, &accessv1.ListSignInsRequest{UserProof: accessv1.Proof_PROOF_VERIFIED_TOKEN, DeviceProof: accessv1.Proof_PROOF_VERIFIED_CERTIFICATE})
		if err != nil {
			return false, err.Error()
		}
		for _, si := range r.GetSignIns() {
			if si.GetUserId() == "alice" && si.GetDeviceId() == "dev-a" && si.GetDecision() == accessv1.Decision_DECISION_ALLOW && si.GetEnforcementPoint() == "nginx-edge" {
				return true, ""
			}
		}
		return false, fmt.Sprint(len(r.GetSignIns()), " verified sign-ins")
	})

	// Bound to an identity-provider id, alice is reached only through it: a token
	// whose subject merely equals her user id is UNKNOWN_USER.
	if _, err := accessv1.NewDirectoryServiceClient(s.conn).UpdateUser(context.Background(), &accessv1.UpdateUserRequest{User: &accessv1.User{UserId: "alice", ExternalId: "00u-alice"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"external_id"}}}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		sub        string
		wantCode   int
		wantReason string
	}{
		{"00u-alice", http.StatusOK, "GRANTED_BY_POLICY"},
		{"alice", http.StatusForbidden, "UNKNOWN_USER"},
	} {
		if code, reason := get(t, devA, "/payroll/", is.Token(map[string]any{"sub": tt.sub, "aud": "condaccess"}), nil); code != tt.wantCode || reason != tt.wantReason {
			t.Errorf("token subject %q after binding alice to 00u-alice: %d %s, want %d %s", tt.sub, code, reason, tt.wantCode, tt.wantReason)
		}
	}
}
