package httpface

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

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
