package httpface

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/condaccess/condaccess/internal/auth"
)

// countingBody counts the bytes the handler reads of a request body.
type countingBody struct {
	n, size int
}

func (b *countingBody) Read(p []byte) (int, error) {
	if b.n >= b.size {
		return 0, io.EOF
	}
	k := min(len(p), b.size-b.n)
	for i := range p[:k] {
		p[i] = 'a'
	}
	b.n += k
	return k, nil
}

func (b *countingBody) Close() error { return nil }

// TestGuardRefusesStrangersBeforeReadingTheBody: outside development mode an RPC
// from a caller without a verified certificate is UNAUTHENTICATED, in the caller's
// protocol, without the body being read (vanguard would buffer up to 4 MiB of it per
// request before the gRPC interceptors refuse it; 60 such requests took a server from
// 53 MB to 810 MB). Console pages stay open; an authenticated caller passes.
func TestGuardRefusesStrangersBeforeReadingTheBody(t *testing.T) {
	reached := false
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached = true
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	})
	tests := []struct {
		name, method, path, contentType string
		identity                        bool
		want                            int
		wantReached                     bool
	}{
		{"Connect JSON without a certificate", http.MethodPost, "/condaccess.risk.v1.RiskService/GetDeviceRisk", "application/json", false, http.StatusUnauthorized, false},
		{"Connect proto without a certificate", http.MethodPost, "/condaccess.compliance.v1.DeviceIdentityService/EnrollDeviceIdentity", "application/proto", false, http.StatusUnauthorized, false},
		{"gRPC-Web without a certificate", http.MethodPost, "/condaccess.access.v1.AccessService/EvaluateAccess", "application/grpc-web+proto", false, http.StatusOK, false},
		{"unknown content type without a certificate", http.MethodPost, "/condaccess.risk.v1.RiskService/ListAlerts", "text/plain", false, http.StatusUnauthorized, false},
		{"with a certificate", http.MethodPost, "/condaccess.risk.v1.RiskService/GetDeviceRisk", "application/json", true, http.StatusNoContent, true},
		{"console page without a certificate", http.MethodGet, "/devices", "", false, http.StatusNoContent, true},
		{"REST without a certificate", http.MethodPost, "/v1/alerts", "application/json", false, http.StatusUnauthorized, false},
		{"the end user's blocked status without a certificate", http.MethodPost, "/condaccess.access.v1.AccessService/GetBlockedStatus", "application/json", false, http.StatusNoContent, true},
		{"the end user's blocked status over REST without a certificate", http.MethodGet, "/v1/blockedStatus", "", false, http.StatusNoContent, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reached = false
			body := &countingBody{size: 4 << 20}
			r := httptest.NewRequest(tt.method, tt.path, body)
			if tt.contentType != "" {
				r.Header.Set("Content-Type", tt.contentType)
				r.Header.Set("Connect-Protocol-Version", "1")
			}
			if tt.identity {
				r = r.WithContext(auth.NewContext(r.Context(), auth.Identity{Subject: "alice", Kind: auth.KindRoleCertificate}))
			}
			w := httptest.NewRecorder()
			guard(false, next).ServeHTTP(w, r)
			if w.Code != tt.want || reached != tt.wantReached {
				t.Fatalf("status %d, reached %v; want %d, %v (body %s)", w.Code, reached, tt.want, tt.wantReached, w.Body.String())
			}
			if !tt.wantReached {
				if body.n != 0 {
					t.Errorf("%d bytes of the body read before refusing", body.n)
				}
				if got := strings.ToLower(w.Body.String() + w.Header().Get("Grpc-Status") + w.Header().Get("Grpc-Message")); !strings.Contains(got, "unauthenticated") && w.Header().Get("Grpc-Status") != "16" {
					t.Errorf("refusal does not say unauthenticated: %q, headers %v", w.Body.String(), w.Header())
				}
			}
		})
	}
}

func TestGuard(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	tests := []struct {
		name     string
		insecure bool
		host     string
		origin   string
		want     int
	}{
		{"dev, loopback IPv4", true, "127.0.0.1:7480", "", http.StatusNoContent},
		{"dev, localhost", true, "localhost:7480", "http://localhost:7480", http.StatusNoContent},
		{"dev, loopback IPv6", true, "[::1]:7480", "", http.StatusNoContent},
		{"dev, rebinding name", true, "attacker.example:7480", "", http.StatusMisdirectedRequest},
		{"dev, rebinding name without port", true, "attacker.example", "", http.StatusMisdirectedRequest},
		{"dev, LAN address", true, "192.168.1.5:7480", "", http.StatusMisdirectedRequest},
		{"dev, cross-origin page", true, "127.0.0.1:7480", "http://attacker.example", http.StatusForbidden},
		{"dev, same host other port", true, "127.0.0.1:7480", "http://127.0.0.1:8080", http.StatusForbidden},
		{"dev, opaque origin", true, "127.0.0.1:7480", "null", http.StatusForbidden},
		{"TLS, any host name", false, "console.corp.example", "", http.StatusNoContent},
		{"TLS, same origin", false, "console.corp.example", "https://console.corp.example", http.StatusNoContent},
		{"TLS, cross-origin page", false, "console.corp.example", "https://attacker.example", http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/condaccess.risk.v1.RiskService/GetDeviceRisk", nil)
			if !tt.insecure {
				r = r.WithContext(auth.NewContext(r.Context(), auth.Identity{Subject: "alice", Kind: auth.KindRoleCertificate}))
			}
			r.Host = tt.host
			if tt.origin != "" {
				r.Header.Set("Origin", tt.origin)
			}
			w := httptest.NewRecorder()
			guard(tt.insecure, ok).ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Errorf("status = %d, want %d", w.Code, tt.want)
			}
		})
	}
}

func TestConsoleRoutes(t *testing.T) {
	h := Console()
	tests := []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/", 200},
		{http.MethodGet, "/devices", 200},
		{http.MethodGet, "/devices/dev-1", 200},
		{http.MethodGet, "/actions", 200},
		{http.MethodGet, "/blocked", 200},
		{http.MethodHead, "/signins", 200},
		{http.MethodGet, "/devices/", 404},
		{http.MethodGet, "/devices/a/b", 404},
		{http.MethodGet, "/assets/missing.js", 404},
		{http.MethodGet, "/assets/../../go.mod", 404},
		{http.MethodGet, "/index.html", 404},
		{http.MethodPost, "/", http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(tt.method, tt.path, nil))
			if w.Code != tt.want {
				t.Errorf("status = %d, want %d", w.Code, tt.want)
			}
			if tt.want == 200 && w.Header().Get("X-Frame-Options") != "DENY" {
				t.Errorf("X-Frame-Options = %q", w.Header().Get("X-Frame-Options"))
			}
		})
	}
}

// TestGuardCapsStrangersBodies: a caller without an identity that may reach an open
// method (the end user's blocked-status lookup) cannot make the server read more than
// StrangerBodyBytes of its body; an authenticated caller's body is not capped here.
func TestGuardCapsStrangersBodies(t *testing.T) {
	var readErr error
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, readErr = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	})
	for _, tt := range []struct {
		name     string
		identity bool
		wantCap  bool
	}{
		{"stranger", false, true},
		{"authenticated", true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			readErr = nil
			body := &countingBody{size: 4 << 20}
			r := httptest.NewRequest(http.MethodPost, "/condaccess.access.v1.AccessService/GetBlockedStatus", body)
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("Connect-Protocol-Version", "1")
			if tt.identity {
				r = r.WithContext(auth.NewContext(r.Context(), auth.Identity{Subject: "alice", Kind: auth.KindRoleCertificate}))
			}
			guard(false, next).ServeHTTP(httptest.NewRecorder(), r)
			if tt.wantCap {
				var tooBig *http.MaxBytesError
				if !errors.As(readErr, &tooBig) || body.n > StrangerBodyBytes+64<<10 {
					t.Fatalf("stranger's body: read %d bytes, error %v; want at most about %d and a MaxBytesError", body.n, readErr, StrangerBodyBytes)
				}
			} else if readErr != nil || body.n != 4<<20 {
				t.Fatalf("authenticated body: read %d bytes, error %v; want all 4 MiB", body.n, readErr)
			}
		})
	}
}
