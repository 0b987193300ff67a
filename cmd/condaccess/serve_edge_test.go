package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/condaccess/condaccess/internal/auth/authtest"
)

// TestServeAuthzOnUnixSocket: with mutual TLS configured, /authz on the HTTP listener
// refuses a caller without a certificate (401), while the --authz-addr unix socket
// treats its callers as enforcement points (the request is decided: 403 with a reason).
func TestServeAuthzOnUnixSocket(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ca := authtest.NewCA(t)
	cfg := ca.ServerConfig(t)
	sock := filepath.Join(t.TempDir(), "authz.sock")
	o := serveOptions{grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", dataDir: t.TempDir(), services: "risk,compliance,access,remediation",
		stopTimeout: 5 * time.Second, tlsCert: cfg.CertFile, tlsKey: cfg.KeyFile, tlsClientCA: cfg.ClientCAFile, authzAddr: "unix:" + sock}
	s, err := startSuite(ctx, o, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket %v %v, want mode 0660", fi, err)
	}

	pem, _ := os.ReadFile(ca.CertFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	httpsClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	unixClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	for _, tt := range []struct {
		name       string
		client     *http.Client
		url        string
		wantCode   int
		wantReason string
	}{
		{"HTTPS listener without a client certificate", httpsClient, "https://" + s.HTTPAddr() + "/authz", http.StatusUnauthorized, "UNAUTHENTICATED"},
		{"unix socket: an enforcement point, decided", unixClient, "http://unix/authz", http.StatusForbidden, "USER_TOKEN_MISSING"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, tt.url, nil)
			req.Header.Set("x-application-id", "payroll")
			req.Header.Set("x-user-id", "u-1") // not trusted: no --access-trust-headers
			resp, err := tt.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.wantCode || resp.Header.Get("x-condaccess-reason") != tt.wantReason {
				t.Errorf("GET /authz = %d %s, want %d %s", resp.StatusCode, resp.Header.Get("x-condaccess-reason"), tt.wantCode, tt.wantReason)
			}
		})
	}
}
