package accessgrpc

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/services/access"
	"github.com/condaccess/condaccess/services/access/edgeid"
	"github.com/condaccess/condaccess/services/access/edgeid/edgeidtest"
)

// fuzzEdge is a strict edge (no header trust) with a test issuer and device CA.
func fuzzEdge(f testing.TB) (*Server, *edgeidtest.Issuer, *edgeidtest.DeviceCert) {
	is := edgeidtest.NewIssuer(f)
	ca := edgeidtest.NewDeviceCA(f, f.TempDir(), "device-ca")
	f.Helper()
	dv, err := edgeid.NewX509DeviceVerifier(ca.CertFile, nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	tv, err := edgeid.NewTokenVerifier(edgeid.TokenConfig{Issuers: []string{is.URL}, Audience: "condaccess"})
	if err != nil {
		f.Fatal(err)
	}
	s := New(nil, DefaultHeaders)
	s.SetEdge(Edge{Tokens: tv, Devices: edgeid.NewDeviceCerts(dv), TrustedHops: 1})
	dev := ca.Issue(f, "dev-a", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	return s, is, dev
}

var ep = auth.Identity{Subject: "ep", Roles: []commonv1.Role{commonv1.Role_ROLE_ENFORCEMENT_POINT}}

// checkIdentity asserts what must hold whatever an enforcement point forwards.
func checkIdentity(t *testing.T, id identity, hadToken, hadCert bool) {
	t.Helper()
	if id.opts.UserProof == access.ProofAssertedByCaller || id.opts.DeviceProof == access.ProofAssertedByCaller {
		t.Fatalf("headers trusted on a strict edge: %+v", id.opts)
	}
	if id.opts.UserProof == access.ProofVerifiedToken && !hadToken {
		t.Fatalf("verified user without a token")
	}
	if id.opts.DeviceProof == access.ProofVerifiedCertificate && !hadCert {
		t.Fatalf("verified device without a certificate")
	}
	// A verified token leaves the user to Decide (its claim is resolved there).
	if id.opts.Block == nil && id.opts.TokenSubject == "" && (id.req.UserID == "" || len(id.req.UserID) > 128) {
		t.Fatalf("unblocked decision for user %q", id.req.UserID)
	}
	if id.opts.TokenSubject != "" && (id.req.UserID != "" || id.opts.UserProof != access.ProofVerifiedToken || len(id.opts.TokenSubject) > 128) {
		t.Fatalf("token subject %q with user %q, proof %v", id.opts.TokenSubject, id.req.UserID, id.opts.UserProof)
	}
	if len(id.req.DeviceID) > 128 || len(id.err) > maxIdentityErrMessage {
		t.Fatalf("unbounded identity: device %d bytes, error %d bytes", len(id.req.DeviceID), len(id.err))
	}
	if id.req.UserID != "" && id.opts.UserProof != access.ProofVerifiedToken {
		t.Fatalf("user %q without a proof", id.req.UserID)
	}
}

// FuzzAuthzHeaders feeds /authz header values (Authorization, the device certificate,
// X-Forwarded-For, forged identity headers) through the mapping and verification.
func FuzzAuthzHeaders(f *testing.F) {
	s, is, dev := fuzzEdge(f)
	good := is.Token(map[string]any{"sub": "alice", "aud": "condaccess"})
	f.Add("Bearer "+good, dev.Escaped, "203.0.113.9", "alice", "dev-a", "true")
	f.Add("Bearer "+is.NoneToken(map[string]any{"sub": "alice", "aud": "condaccess"}), "", "10.1.2.3, 203.0.113.9", "ceo", "dev-2", "1")
	f.Add("bearer x.y.z", "%zz", "not-an-ip", "", "", "")
	f.Add("Basic YWxpY2U6c2VjcmV0", "-----BEGIN%20CERTIFICATE-----%0A", ",,,", "", "", "")
	f.Fuzz(func(t *testing.T, authz, cert, xff, user, device, mfa string) {
		r := httptest.NewRequest(http.MethodGet, "/authz", nil)
		r.RemoteAddr = "127.0.0.1:40000"
		for k, v := range map[string]string{"Authorization": authz, DefaultCertHeader: cert, "X-Forwarded-For": xff,
			"x-user-id": user, "x-device-id": device, "x-mfa-done": mfa, "x-application-id": "payroll"} {
			if v != "" {
				r.Header.Set(k, v)
			}
		}
		f := forwardedFromHTTP(r, DefaultCertHeader)
		id := s.resolve(context.Background(), f, ep, time.Now())
		checkIdentity(t, id, strings.HasPrefix(strings.ToLower(authz), "bearer "), cert != "")
		if id.req.IP.IsValid() && !strings.Contains(xff, id.req.IP.String()) && !strings.Contains(xff, strings.TrimPrefix(id.req.IP.String(), "::ffff:")) {
			// The address must come from the trusted (rightmost) XFF entry.
			t.Fatalf("client IP %v not from XFF %q", id.req.IP, xff)
		}
	})
}

// FuzzCheckMapping feeds arbitrary Envoy CheckRequests (wire bytes) through the
// mapping and verification.
func FuzzCheckMapping(f *testing.F) {
	s, is, dev := fuzzEdge(f)
	good := is.Token(map[string]any{"sub": "alice", "aud": "condaccess"})
	for _, req := range []*authv3.CheckRequest{
		{Attributes: &authv3.AttributeContext{Source: &authv3.AttributeContext_Peer{Certificate: dev.Escaped},
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Headers: map[string]string{
				"authorization": "Bearer " + good, "x-application-id": "payroll", "x-envoy-external-address": "203.0.113.9"}}}}},
		{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Headers: map[string]string{
			"x-user-id": "ceo", "x-device-id": "dev-2", "x-mfa-done": "true", "x-application-id": "payroll", "x-forwarded-for": "10.1.2.3"}}}}},
		{},
	} {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var req authv3.CheckRequest
		if proto.Unmarshal(b, &req) != nil {
			return
		}
		fw := forwardedFromCheck(&req)
		id := s.resolve(context.Background(), fw, ep, time.Now())
		checkIdentity(t, id, strings.HasPrefix(strings.ToLower(fw.get("authorization")), "bearer "), fw.deviceCert != "")
	})
}
