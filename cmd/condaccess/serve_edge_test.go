package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/auth/authtest"
	"github.com/condaccess/condaccess/internal/server"
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

// TestAuthzBodyLinksToBlockedPage: the end user's 403 body links to the console's
// /blocked page on the HTTP address by default, to --access-help-url when it is set,
// always with the sign-in's reference and never with a policy name or reason.
func TestAuthzBodyLinksToBlockedPage(t *testing.T) {
	for _, tt := range []struct {
		name, helpURL string
		wantBase      func(httpAddr string) string
		wantSignInID  bool
	}{
		{"default: the console's end-user page", "", func(a string) string { return "http://" + a + "/blocked" }, false},
		{"--access-help-url wins", "https://help.example/why", func(string) string { return "https://help.example/why" }, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			facs := factories()
			fs := flag.NewFlagSet("serve", flag.ContinueOnError)
			for _, f := range facs {
				f.RegisterFlags(fs)
			}
			if err := fs.Set("access-help-url", tt.helpURL); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			s, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", dataDir: t.TempDir(),
				services: "risk,compliance,access", stopTimeout: 5 * time.Second, factories: facs}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Stop()
			req, _ := http.NewRequest(http.MethodGet, "http://"+s.HTTPAddr()+"/authz", nil)
			req.Header.Set("x-application-id", "payroll")
			req.Header.Set("x-user-id", "nobody") // development mode believes it: an unknown user, blocked
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			ref := resp.Header.Get("x-condaccess-sign-in-id")
			reason := resp.Header.Get("x-condaccess-reason")
			if resp.StatusCode != http.StatusForbidden || ref == "" || reason == "" {
				t.Fatalf("GET /authz = %d, sign-in %q, reason %q; want 403 with both", resp.StatusCode, ref, reason)
			}
			want := "Help: " + tt.wantBase(s.HTTPAddr()) + "?ref="
			if !strings.Contains(string(body), want) {
				t.Errorf("403 body lacks %q:\n%s", want, body)
			}
			// The external help page gets the sign-in id (the reference the help
			// desk searches for); the console's page an unguessable sealed one.
			if got := strings.Contains(string(body), want+url.QueryEscape(ref)+"\n"); got != tt.wantSignInID {
				t.Errorf("link carries the sign-in id: %v, want %v:\n%s", got, tt.wantSignInID, body)
			}
			if strings.Contains(string(body), reason) {
				t.Errorf("403 body shows the reason %s:\n%s", reason, body)
			}
		})
	}
}

// TestBlockedStatusRateLimited: the end user's lookup is open without a certificate,
// so a client trying references is limited by its address: after the burst, calls are
// RESOURCE_EXHAUSTED RATE_LIMITED (with RetryInfo), not answered.
func TestBlockedStatusRateLimited(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	if _, _, err := runCLI(t, "dev-certs", "--out", dir); err != nil {
		t.Fatal(err)
	}
	s, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", dataDir: t.TempDir(), services: "risk,compliance,access", stopTimeout: 5 * time.Second,
		tlsCert: filepath.Join(dir, "service.pem"), tlsKey: filepath.Join(dir, "service-key.pem"), tlsClientCA: filepath.Join(dir, "ca.pem")}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	pem, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost"}))) // no client certificate
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := accessv1.NewAccessServiceClient(conn)
	if _, err := client.ListSignIns(ctx, &accessv1.ListSignInsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("ListSignIns without a certificate = %v, want UNAUTHENTICATED", err)
	}
	for i := range BlockedPageBurst {
		if _, err := client.GetBlockedStatus(ctx, &accessv1.GetBlockedStatusRequest{Ref: fmt.Sprintf("guess-%d", i)}); status.Code(err) != codes.NotFound {
			t.Fatalf("guess %d = %v, want NOT_FOUND", i, err)
		}
	}
	_, err = client.GetBlockedStatus(ctx, &accessv1.GetBlockedStatusRequest{Ref: "one-more"})
	if status.Code(err) != codes.ResourceExhausted || apierr.Reason(err) != server.ReasonRateLimited {
		t.Fatalf("guess past the burst = %v, want RESOURCE_EXHAUSTED %s", err, server.ReasonRateLimited)
	}
	stream, err := client.WatchBlockedStatus(ctx, &accessv1.WatchBlockedStatusRequest{Ref: "one-more"})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("watch past the burst = %v, want RESOURCE_EXHAUSTED", err)
	}
	// Another address (127.0.0.2) has its own bucket.
	other, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost"})),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := accessv1.NewAccessServiceClient(other).GetBlockedStatus(ctx, &accessv1.GetBlockedStatusRequest{Ref: "guess"}); status.Code(err) != codes.NotFound {
		t.Errorf("from another address = %v, want NOT_FOUND (its own bucket)", err)
	}
}
