package accessgrpc_test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/services/access/accessgrpc"
	"github.com/condaccess/condaccess/services/access/edgeid"
	"github.com/condaccess/condaccess/services/access/edgeid/edgeidtest"
)

// edgeWorld is a harness whose enforcement points verify tokens from a test issuer
// and device certificates from a test device CA, with one trusted proxy hop.
type edgeWorld struct {
	h                *harness
	issuer           *edgeidtest.Issuer
	ca, otherCA      *edgeidtest.DeviceCA
	devA, devB       *edgeidtest.DeviceCert // owned by alice, bob
	devC             *edgeidtest.DeviceCert // owned by alice, bob registered
	expired, foreign *edgeidtest.DeviceCert
	revoked          *edgeidtest.DeviceCert
	noSAN            *edgeidtest.DeviceCert
}

// testCaller is the test's stand-in for the TLS identity middleware: the
// X-Test-Caller header picks the authenticated caller ("" = none).
const testCaller = "X-Test-Caller"

func callerWrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get(testCaller) {
		case "ep":
			r = r.WithContext(auth.NewContext(r.Context(), auth.Identity{Subject: "nginx-1", Roles: []commonv1.Role{commonv1.Role_ROLE_ENFORCEMENT_POINT}}))
		case "reader":
			r = r.WithContext(auth.NewContext(r.Context(), auth.Identity{Subject: "dashboards", Roles: []commonv1.Role{commonv1.Role_ROLE_READER}}))
		case "risk-service":
			r = r.WithContext(auth.NewContext(r.Context(), auth.IdentityFromCert(&x509.Certificate{
				Subject: pkix.Name{CommonName: "condaccess-risk"}, URIs: []*url.URL{{Scheme: "spiffe", Host: "condaccess", Path: "/service/risk"}}})))
		}
		next.ServeHTTP(w, r)
	})
}

func newEdgeWorld(t *testing.T, trustHeaders bool) *edgeWorld {
	t.Helper()
	dir := t.TempDir()
	w := &edgeWorld{issuer: edgeidtest.NewIssuer(t), ca: edgeidtest.NewDeviceCA(t, dir, "device-ca"), otherCA: edgeidtest.NewDeviceCA(t, dir, "other-ca")}
	now := time.Now()
	w.devA = w.ca.Issue(t, "dev-a", now.Add(-time.Hour), now.Add(24*time.Hour))
	w.devB = w.ca.Issue(t, "dev-b", now.Add(-time.Hour), now.Add(24*time.Hour))
	w.devC = w.ca.Issue(t, "dev-c", now.Add(-time.Hour), now.Add(24*time.Hour))
	w.expired = w.ca.Issue(t, "dev-a", now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	w.foreign = w.otherCA.Issue(t, "dev-a", now.Add(-time.Hour), now.Add(24*time.Hour))
	w.revoked = w.ca.Issue(t, "dev-a", now.Add(-time.Hour), now.Add(24*time.Hour))
	w.noSAN = w.ca.IssueURIs(t, []string{"spiffe://condaccess/role/enforcement-point"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	revokedSerial := w.revoked.Cert.SerialNumber
	dv, err := edgeid.NewX509DeviceVerifier(w.ca.CertFile, nil, func(_ string, serial *big.Int) bool { return serial.Cmp(revokedSerial) == 0 })
	if err != nil {
		t.Fatal(err)
	}
	tv, err := edgeid.NewTokenVerifier(edgeid.TokenConfig{Issuers: []string{w.issuer.URL}, Audience: "condaccess"})
	if err != nil {
		t.Fatal(err)
	}
	w.h = start(t, options{headers: accessgrpc.DefaultHeaders, httpWrap: callerWrap, edge: &accessgrpc.Edge{Tokens: tv, Devices: edgeid.NewDeviceCerts(dv), TrustedHops: 1,
		TrustHeaders: trustHeaders, HelpURL: "https://help.example/blocked"}})
	ctx := context.Background()
	h := w.h
	for _, u := range []string{"alice", "bob"} {
		must(h.dir.CreateUser(ctx, &accessv1.CreateUserRequest{User: &accessv1.User{UserId: u, DisplayName: u}}))
	}
	for _, a := range []string{"payroll", "wiki", "office", "open"} {
		must(h.dir.CreateApplication(ctx, &accessv1.CreateApplicationRequest{Application: &accessv1.Application{ApplicationId: a, DisplayName: a}}))
	}
	for _, p := range []*accessv1.ConditionalAccessPolicy{
		{PolicyId: "payroll-registered", DisplayName: "Payroll: compliant device registered to the user", State: accessv1.PolicyState_POLICY_STATE_ENABLED,
			Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{Include: []string{"payroll"}},
			GrantControls: &accessv1.GrantControls{Require: []accessv1.GrantControl{accessv1.GrantControl_GRANT_CONTROL_COMPLIANT_DEVICE, accessv1.GrantControl_GRANT_CONTROL_REGISTERED_DEVICE}}},
		{PolicyId: "wiki-mfa", DisplayName: "Wiki: MFA", State: accessv1.PolicyState_POLICY_STATE_ENABLED,
			Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{Include: []string{"wiki"}},
			GrantControls: &accessv1.GrantControls{Require: []accessv1.GrantControl{accessv1.GrantControl_GRANT_CONTROL_MFA}}},
		{PolicyId: "office-only", DisplayName: "Office: block unless 10.0.0.0/8", State: accessv1.PolicyState_POLICY_STATE_ENABLED,
			Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{Include: []string{"office"}},
			Conditions:    &accessv1.Conditions{Locations: &accessv1.LocationCondition{ExcludeIpRanges: []string{"10.0.0.0/8"}}},
			GrantControls: &accessv1.GrantControls{Block: true}},
	} {
		must(h.pol.CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: p}))
	}
	h.compliance.enroll("dev-a", "alice")
	h.compliance.enroll("dev-b", "bob")
	h.compliance.enroll("dev-c", "alice", "bob")
	for _, d := range []string{"dev-a", "dev-b"} {
		h.compliance.set(d, commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT, commonv1.RiskLevel_RISK_LEVEL_NONE, nil, nil)
	}
	rev := h.compliance.set("dev-c", commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT, commonv1.RiskLevel_RISK_LEVEL_NONE, nil, nil)
	eventually(t, "the compliance feed", func() bool { return h.svc.FeedStatus().Revision >= rev })
	return w
}

// edgeCase is one request through an enforcement point and the decision it must get.
type edgeCase struct {
	name       string
	app        string
	token      string            // bearer token
	cert       string            // forwarded device certificate (URL-encoded PEM)
	headers    map[string]string // extra request headers (forgeries)
	xff        []string          // X-Forwarded-For values
	wantAllow  bool
	wantReason string
}

func (w *edgeWorld) cases() []edgeCase {
	is := w.issuer
	alice := is.Token(map[string]any{"sub": "alice", "aud": "condaccess"})
	aliceMFA := is.Token(map[string]any{"sub": "alice", "aud": "condaccess", "amr": []string{"pwd", "mfa"}})
	bob := is.Token(map[string]any{"sub": "bob", "aud": "condaccess"})
	home := []string{"203.0.113.9"}
	office := []string{"10.1.2.3"}
	return []edgeCase{
		{name: "owner's token and owner's device certificate", app: "payroll", token: alice, cert: w.devA.Escaped, xff: home, wantAllow: true, wantReason: "GRANTED_BY_POLICY"},
		{name: "registered user on a shared device", app: "payroll", token: bob, cert: w.devC.Escaped, xff: home, wantAllow: true, wantReason: "GRANTED_BY_POLICY"},
		{name: "attack: another user's token with the owner's device certificate", app: "payroll", token: bob, cert: w.devA.Escaped, xff: home, wantReason: "DEVICE_NOT_REGISTERED_TO_USER"},
		{name: "attack: forged identity headers without a token are ignored", app: "payroll", cert: w.devA.Escaped, xff: home,
			headers: map[string]string{"x-user-id": "alice", "x-device-id": "dev-a", "x-mfa-done": "true"}, wantReason: "USER_TOKEN_MISSING"},
		{name: "attack: forged x-device-id without a certificate is ignored", app: "payroll", token: alice, xff: home,
			headers: map[string]string{"x-device-id": "dev-a"}, wantReason: "UNKNOWN_DEVICE"},
		{name: "attack: forged x-device-id does not replace the certificate's device", app: "payroll", token: bob, cert: w.devB.Escaped, xff: home,
			headers: map[string]string{"x-device-id": "dev-a", "x-user-id": "alice"}, wantAllow: true, wantReason: "GRANTED_BY_POLICY"},
		{name: "attack: forged x-mfa-done is ignored", app: "wiki", token: alice, cert: w.devA.Escaped, xff: home,
			headers: map[string]string{"x-mfa-done": "true"}, wantReason: "MFA_REQUIRED"},
		{name: "MFA from the token's amr", app: "wiki", token: aliceMFA, cert: w.devA.Escaped, xff: home, wantAllow: true, wantReason: "GRANTED_BY_POLICY"},
		{name: "expired token", app: "open", token: is.Token(map[string]any{"sub": "alice", "aud": "condaccess", "exp": time.Now().Add(-2 * time.Hour).Unix()}),
			cert: w.devA.Escaped, xff: home, wantReason: "USER_TOKEN_INVALID"},
		{name: "token expired within the 60 s leeway", app: "open", token: is.Token(map[string]any{"sub": "alice", "aud": "condaccess", "exp": time.Now().Add(-20 * time.Second).Unix()}),
			cert: w.devA.Escaped, xff: home, wantAllow: true, wantReason: "ALLOWED"},
		{name: "token not valid yet", app: "open", token: is.Token(map[string]any{"sub": "alice", "aud": "condaccess", "nbf": time.Now().Add(10 * time.Minute).Unix()}),
			cert: w.devA.Escaped, xff: home, wantReason: "USER_TOKEN_INVALID"},
		{name: "token for another audience", app: "open", token: is.Token(map[string]any{"sub": "alice", "aud": "another-app"}), cert: w.devA.Escaped, xff: home, wantReason: "USER_TOKEN_INVALID"},
		{name: "token from another issuer", app: "open", token: is.Token(map[string]any{"sub": "alice", "aud": "condaccess", "iss": "https://evil.example"}), cert: w.devA.Escaped, xff: home, wantReason: "USER_TOKEN_INVALID"},
		{name: "token signed with an unpublished key", app: "open", token: is.ForeignToken(map[string]any{"sub": "alice", "aud": "condaccess"}), cert: w.devA.Escaped, xff: home, wantReason: "USER_TOKEN_INVALID"},
		{name: "token with alg none", app: "open", token: is.NoneToken(map[string]any{"sub": "alice", "aud": "condaccess"}), cert: w.devA.Escaped, xff: home, wantReason: "USER_TOKEN_INVALID"},
		{name: "garbage token", app: "open", token: "not.a.jwt", cert: w.devA.Escaped, xff: home, wantReason: "USER_TOKEN_INVALID"},
		{name: "device certificate from another CA", app: "open", token: alice, cert: w.foreign.Escaped, xff: home, wantReason: "DEVICE_CERTIFICATE_INVALID"},
		{name: "expired device certificate", app: "open", token: alice, cert: w.expired.Escaped, xff: home, wantReason: "DEVICE_CERTIFICATE_INVALID"},
		{name: "revoked device certificate", app: "open", token: alice, cert: w.revoked.Escaped, xff: home, wantReason: "DEVICE_CERTIFICATE_INVALID"},
		{name: "certificate without a device SAN", app: "open", token: alice, cert: w.noSAN.Escaped, xff: home, wantReason: "DEVICE_CERTIFICATE_INVALID"},
		{name: "garbage certificate", app: "open", token: alice, cert: "-----BEGIN%20CERTIFICATE-----%0Azzzz", xff: home, wantReason: "DEVICE_CERTIFICATE_INVALID"},
		{name: "no policy applies: allowed without a device", app: "open", token: alice, xff: home, wantAllow: true, wantReason: "ALLOWED"},
		{name: "client inside the excluded range", app: "office", token: alice, cert: w.devA.Escaped, xff: office, wantAllow: true, wantReason: "ALLOWED"},
		{name: "attack: client-supplied XFF entry left of the proxy's", app: "office", token: alice, cert: w.devA.Escaped,
			xff: []string{"10.1.2.3, 203.0.113.9"}, wantReason: "BLOCKED_BY_POLICY"},
		{name: "attack: client-supplied XFF header before the proxy's", app: "office", token: alice, cert: w.devA.Escaped,
			xff: []string{"10.1.2.3", "203.0.113.9"}, wantReason: "BLOCKED_BY_POLICY"},
		{name: "attack: no XFF from the trusted proxy", app: "office", token: alice, cert: w.devA.Escaped, wantReason: "CLIENT_IP_UNKNOWN"},
		{name: "attack: unparsable XFF", app: "office", token: alice, cert: w.devA.Escaped, xff: []string{"not-an-ip"}, wantReason: "CLIENT_IP_UNKNOWN"},
	}
}

func (w *edgeWorld) authz(t *testing.T, caller string, c edgeCase) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, w.h.http.URL+"/authz", nil)
	if caller != "" {
		req.Header.Set(testCaller, caller)
	}
	req.Header.Set("x-application-id", c.app)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.cert != "" {
		req.Header.Set(accessgrpc.DefaultCertHeader, c.cert)
	}
	for k, v := range c.headers {
		req.Header.Set(k, v)
	}
	for _, v := range c.xff {
		req.Header.Add("X-Forwarded-For", v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestAuthzVerifiedIdentities runs the attack table through the real /authz
// handler: tokens, device certificates, forged headers, XFF, then checks what
// was recorded (proofs, sessions only for known devices, the 403 page).
func TestAuthzVerifiedIdentities(t *testing.T) {
	w := newEdgeWorld(t, false)
	ctx := context.Background()
	for _, tt := range w.cases() {
		t.Run(tt.name, func(t *testing.T) {
			resp := w.authz(t, "ep", tt)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			wantCode := http.StatusForbidden
			if tt.wantAllow {
				wantCode = http.StatusOK
			}
			if resp.StatusCode != wantCode || resp.Header.Get(accessgrpc.ReasonHeader) != tt.wantReason {
				t.Fatalf("GET /authz = %d %s, want %d %s", resp.StatusCode, resp.Header.Get(accessgrpc.ReasonHeader), wantCode, tt.wantReason)
			}
			ref := resp.Header.Get(accessgrpc.SignInHeader)
			if !strings.HasPrefix(ref, "si-") {
				t.Errorf("sign-in id header = %q", ref)
			}
			if !tt.wantAllow {
				b := string(body)
				if !strings.Contains(b, "Reference: "+ref) || !strings.Contains(b, "https://help.example/blocked?ref="+ref) {
					t.Errorf("403 body lacks the reference or help link:\n%s", b)
				}
				for _, secret := range []string{tt.wantReason, "payroll-registered", "wiki-mfa", "office-only", "UNKNOWN_USER", "Payroll"} {
					if strings.Contains(b, secret) {
						t.Errorf("403 body shows %q:\n%s", secret, b)
					}
				}
			}
		})
	}

	if err := w.h.svc.Recorder().Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Sessions only for allowed decisions on devices the compliance feed knows.
	ss := must(w.h.acc.ListSessions(ctx, &accessv1.ListSessionsRequest{}))
	for _, s := range ss.GetSessions() {
		if s.GetDeviceId() == "" || !strings.HasPrefix(s.GetDeviceId(), "dev-") {
			t.Errorf("session for an unproven device: %v", s)
		}
	}
	// alice/dev-a on payroll, wiki, open and office; bob/dev-c and bob/dev-b on payroll.
	// Not alice without a device on open, though it was allowed.
	if n := len(ss.GetSessions()); n != 6 {
		t.Errorf("%d sessions, want 6: %v", n, ss.GetSessions())
	}
	// Sign-ins record how identities were proven and why a credential was refused.
	tok := must(w.h.acc.ListSignIns(ctx, &accessv1.ListSignInsRequest{UserProof: accessv1.Proof_PROOF_VERIFIED_TOKEN, PageSize: 1000}))
	none := must(w.h.acc.ListSignIns(ctx, &accessv1.ListSignInsRequest{UserProof: accessv1.Proof_PROOF_NONE, PageSize: 1000}))
	all := must(w.h.acc.ListSignIns(ctx, &accessv1.ListSignInsRequest{PageSize: 1000}))
	if len(tok.GetSignIns())+len(none.GetSignIns()) != len(all.GetSignIns()) || len(none.GetSignIns()) != 8 {
		t.Errorf("sign-ins: %d verified-token + %d none, of %d; want 8 none", len(tok.GetSignIns()), len(none.GetSignIns()), len(all.GetSignIns()))
	}
	for _, si := range none.GetSignIns() {
		if si.GetUserProof() != accessv1.Proof_PROOF_NONE || si.GetDecision() != accessv1.Decision_DECISION_BLOCK || si.GetEnforcementPoint() != "nginx-1" {
			t.Errorf("sign-in %v", si)
		}
		if si.GetReasons()[0].GetCode() == "USER_TOKEN_INVALID" && si.GetIdentityError() == "" {
			t.Errorf("refused token without the reason in the sign-in: %v", si)
		}
	}
	certs := must(w.h.acc.ListSignIns(ctx, &accessv1.ListSignInsRequest{DeviceProof: accessv1.Proof_PROOF_VERIFIED_CERTIFICATE, PageSize: 1000}))
	for _, si := range certs.GetSignIns() {
		if !strings.HasPrefix(si.GetDeviceId(), "dev-") {
			t.Errorf("verified-certificate sign-in without its device: %v", si)
		}
	}
}

// TestAuthzWhoMayAsk: /authz answers only authenticated enforcement points, and a
// refused caller leaves nothing behind (no sign-in, no session).
func TestAuthzWhoMayAsk(t *testing.T) {
	w := newEdgeWorld(t, true)
	ctx := context.Background()
	ok := w.cases()[0]
	forged := edgeCase{app: "payroll", headers: map[string]string{"x-user-id": "alice", "x-device-id": "dev-a"}, xff: []string{"203.0.113.9"}}
	for _, tt := range []struct {
		name, caller string
		c            edgeCase
		wantCode     int
	}{
		{"unauthenticated caller with a valid token and certificate", "", ok, http.StatusUnauthorized},
		{"unauthenticated caller asserting headers", "", forged, http.StatusUnauthorized},
		{"reader is not an enforcement point", "reader", ok, http.StatusForbidden},
		// EvaluateAccess over gRPC names no allowed_services: another service's
		// certificate is no enforcement point on the HTTP path either.
		{"the risk service is not an enforcement point", "risk-service", ok, http.StatusForbidden},
		{"the risk service asserting headers", "risk-service", forged, http.StatusForbidden},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp := w.authz(t, tt.caller, tt.c)
			resp.Body.Close()
			if resp.StatusCode != tt.wantCode || resp.Header.Get(accessgrpc.SignInHeader) != "" {
				t.Errorf("GET /authz = %d (sign-in %q), want %d and no sign-in", resp.StatusCode, resp.Header.Get(accessgrpc.SignInHeader), tt.wantCode)
			}
		})
	}
	if err := w.h.svc.Recorder().Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(must(w.h.acc.ListSignIns(ctx, &accessv1.ListSignInsRequest{})).GetSignIns()); n != 0 {
		t.Errorf("%d sign-ins recorded for refused callers", n)
	}
	if n := len(must(w.h.acc.ListSessions(ctx, &accessv1.ListSessionsRequest{})).GetSessions()); n != 0 {
		t.Errorf("%d sessions opened for refused callers", n)
	}
}

// TestAuthzTrustedHeaders: with --access-trust-headers an authenticated
// enforcement point may assert identities (recorded as asserted); a token, when
// present, still wins over the headers.
func TestAuthzTrustedHeaders(t *testing.T) {
	w := newEdgeWorld(t, true)
	ctx := context.Background()
	bob := w.issuer.Token(map[string]any{"sub": "bob", "aud": "condaccess"})
	home := []string{"203.0.113.9"}
	for _, tt := range []struct {
		name       string
		c          edgeCase
		wantAllow  bool
		wantReason string
		wantUser   accessv1.Proof
	}{
		{"asserted user, device and MFA", edgeCase{app: "wiki", xff: home, headers: map[string]string{"x-user-id": "alice", "x-device-id": "dev-a", "x-mfa-done": "true"}},
			true, "GRANTED_BY_POLICY", accessv1.Proof_PROOF_ASSERTED_BY_CALLER},
		{"asserted user without MFA", edgeCase{app: "wiki", xff: home, headers: map[string]string{"x-user-id": "alice", "x-device-id": "dev-a"}},
			false, "MFA_REQUIRED", accessv1.Proof_PROOF_ASSERTED_BY_CALLER},
		{"a token wins over x-user-id and x-mfa-done", edgeCase{app: "wiki", token: bob, cert: w.devB.Escaped, xff: home, headers: map[string]string{"x-user-id": "alice", "x-mfa-done": "true"}},
			false, "MFA_REQUIRED", accessv1.Proof_PROOF_VERIFIED_TOKEN},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp := w.authz(t, "ep", tt.c)
			resp.Body.Close()
			if (resp.StatusCode == http.StatusOK) != tt.wantAllow || resp.Header.Get(accessgrpc.ReasonHeader) != tt.wantReason {
				t.Fatalf("GET /authz = %d %s, want allow=%v %s", resp.StatusCode, resp.Header.Get(accessgrpc.ReasonHeader), tt.wantAllow, tt.wantReason)
			}
			if err := w.h.svc.Recorder().Flush(ctx); err != nil {
				t.Fatal(err)
			}
			si := must(w.h.acc.ListSignIns(ctx, &accessv1.ListSignInsRequest{PageSize: 1})).GetSignIns()[0]
			if si.GetSignInId() != resp.Header.Get(accessgrpc.SignInHeader) || si.GetUserProof() != tt.wantUser {
				t.Errorf("sign-in %s user proof %v, want %s %v", si.GetSignInId(), si.GetUserProof(), resp.Header.Get(accessgrpc.SignInHeader), tt.wantUser)
			}
		})
	}
}

// TestCheckParity: Envoy's Check, given the same token, certificate
// (attributes.source.certificate) and client address (x-envoy-external-address,
// as Envoy computes it with one trusted hop), gives the same decision as /authz.
func TestCheckParity(t *testing.T) {
	w := newEdgeWorld(t, false)
	ctx := context.Background()
	for _, tt := range w.cases() {
		t.Run(tt.name, func(t *testing.T) {
			hdrs := map[string]string{"x-application-id": tt.app}
			if tt.token != "" {
				hdrs["authorization"] = "Bearer " + tt.token
			}
			for k, v := range tt.headers {
				hdrs[k] = v
			}
			if len(tt.xff) > 0 {
				all := strings.Join(tt.xff, ",")
				hdrs["x-forwarded-for"] = all
				hdrs["x-envoy-external-address"] = strings.TrimSpace(all[strings.LastIndexByte(all, ',')+1:])
			}
			cr := must(w.h.authz.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
				Source:  &authv3.AttributeContext_Peer{Certificate: tt.cert, Address: sockAddr("127.0.0.1")},
				Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/", Headers: hdrs}},
			}}))
			allow := codes.Code(cr.GetStatus().GetCode()) == codes.OK
			var hv []*corev3.HeaderValueOption
			if allow {
				hv = cr.GetOkResponse().GetHeaders()
			} else {
				if codes.Code(cr.GetStatus().GetCode()) != codes.PermissionDenied {
					t.Fatalf("Check status %v", cr.GetStatus())
				}
				hv = cr.GetDeniedResponse().GetHeaders()
				if b := cr.GetDeniedResponse().GetBody(); strings.Contains(b, tt.wantReason) || !strings.Contains(b, "Reference: si-") {
					t.Errorf("denied body:\n%s", b)
				}
			}
			if allow != tt.wantAllow || headerValue(hv, accessgrpc.ReasonHeader) != tt.wantReason {
				t.Errorf("Check = allow %v %s, want %v %s", allow, headerValue(hv, accessgrpc.ReasonHeader), tt.wantAllow, tt.wantReason)
			}
		})
	}
}

func sockAddr(ip string) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000}}}}
}

// TestTokenKeyRotation: the issuer rotates its signing key midway; tokens signed
// with the new key verify without a restart (the JWKS is fetched again), tokens
// signed with the retired key after the rotation do not.
func TestTokenKeyRotation(t *testing.T) {
	w := newEdgeWorld(t, false)
	before := w.issuer.Token(map[string]any{"sub": "alice", "aud": "condaccess"})
	c := edgeCase{app: "open", token: before, xff: []string{"203.0.113.9"}}
	check := func(name string, c edgeCase, wantReason string) {
		t.Helper()
		resp := w.authz(t, "ep", c)
		resp.Body.Close()
		if got := resp.Header.Get(accessgrpc.ReasonHeader); got != wantReason {
			t.Errorf("%s: reason %s, want %s", name, got, wantReason)
		}
	}
	check("before the rotation", c, "ALLOWED")
	fetches := w.issuer.JWKSFetches()
	// A token signed before the rotation but never seen: signed with the old key.
	stale := w.issuer.Token(map[string]any{"sub": "bob", "aud": "condaccess"})
	w.issuer.Rotate()
	after := w.issuer.Token(map[string]any{"sub": "bob", "aud": "condaccess"})
	check("new key after the rotation", edgeCase{app: "open", token: after, xff: c.xff}, "ALLOWED")
	if w.issuer.JWKSFetches() <= fetches {
		t.Errorf("JWKS not fetched again after the rotation (%d fetches)", w.issuer.JWKSFetches())
	}
	check("retired key after the rotation", edgeCase{app: "open", token: stale, xff: c.xff}, "USER_TOKEN_INVALID")
}

// TestEvaluateAccessRoles: a reader may ask WhatIf (no side effects) but not
// EvaluateAccess (records a sign-in, opens a session).
func TestEvaluateAccessRoles(t *testing.T) {
	a := auth.NewAuthorizer(auth.Config{})
	for _, tt := range []struct {
		method     string
		wantReader bool
	}{
		{"/condaccess.access.v1.AccessService/EvaluateAccess", false},
		{"/condaccess.access.v1.AccessService/EvaluateAccessStream", false},
		{"/condaccess.access.v1.AccessService/WhatIf", true},
	} {
		roles, _ := a.AllowedRoles(tt.method)
		hasReader, hasEP := false, false
		for _, r := range roles {
			hasReader = hasReader || r == commonv1.Role_ROLE_READER
			hasEP = hasEP || r == commonv1.Role_ROLE_ENFORCEMENT_POINT
		}
		if hasReader != tt.wantReader || (!tt.wantReader && !hasEP) {
			t.Errorf("%s roles %v: reader %v, want %v", tt.method, roles, hasReader, tt.wantReader)
		}
	}
}

// TestCheckContextExtensionApplication: the application Envoy's route configuration
// names (context_extensions) wins over a client-supplied x-application-id header.
func TestCheckContextExtensionApplication(t *testing.T) {
	w := newEdgeWorld(t, false)
	alice := w.issuer.Token(map[string]any{"sub": "alice", "aud": "condaccess"})
	cr := must(w.h.authz.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:            &authv3.AttributeContext_Peer{Certificate: w.devB.Escaped, Address: sockAddr("203.0.113.9")},
		ContextExtensions: map[string]string{accessgrpc.ContextExtensionApplication: "payroll"},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Headers: map[string]string{
			"authorization": "Bearer " + alice, "x-application-id": "open"}}},
	}}))
	if got := headerValue(cr.GetDeniedResponse().GetHeaders(), accessgrpc.ReasonHeader); got != "DEVICE_NOT_REGISTERED_TO_USER" {
		t.Errorf("Check with a forged x-application-id: %v %s, want payroll's DEVICE_NOT_REGISTERED_TO_USER", cr.GetStatus(), got)
	}
}
