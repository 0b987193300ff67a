package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/condaccess/condaccess/internal/httpface"
	"github.com/condaccess/condaccess/internal/pgtest"
)

// TestConsoleSessionsAcrossReplicas: two serves on one PostgreSQL database
// (--database-url), neither given a key file. A person signs in on A; the cookie works
// on B (the sealing key is the database's); signing out on A makes B refuse the cookie
// at once (the sign-out is in the database, not in A's data directory), while another
// session of the same person, made on B, still works on A.
func TestConsoleSessionsAcrossReplicas(t *testing.T) {
	url := pgtest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	is := newCodeIssuer(t)
	dir := t.TempDir()
	if _, _, err := runCLI(t, "dev-certs", "--out", dir); err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	start := func(dataDir string) *runningSuite {
		t.Helper()
		facs := factories()
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		for _, f := range facs {
			f.RegisterFlags(fs)
		}
		for k, v := range map[string]string{"oidc-issuer": is.URL, "oidc-audience": "condaccess", "oidc-groups-claim": "groups"} {
			if err := fs.Set(k, v); err != nil {
				t.Fatal(err)
			}
		}
		s, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", dataDir: dataDir, databaseURL: url,
			services: "risk,compliance,access", stopTimeout: 5 * time.Second, factories: facs, leaseDuration: time.Second,
			tlsCert: filepath.Join(dir, "service.pem"), tlsKey: filepath.Join(dir, "service-key.pem"), tlsClientCA: filepath.Join(dir, "ca.pem"),
			consoleClientID: "condaccess-console", consoleRoleMap: "admins=reader,admins=policy-admin",
		}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Stop() })
		return s
	}
	dirA := t.TempDir()
	a, b := start(dirA), start(t.TempDir())
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	// do sends cookie to path on s (with the Connect header, as the console does).
	do := func(s *runningSuite, method, path, cookie string) int {
		t.Helper()
		body := ""
		if strings.HasPrefix(path, "/condaccess.") {
			body = `{}`
		}
		req, _ := http.NewRequest(method, "https://"+s.HTTPAddr()+path, strings.NewReader(body))
		req.Header.Set("Cookie", cookie)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Connect-Protocol-Version", "1")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	cookieOf := func(setCookie string) string { c, _, _ := strings.Cut(setCookie, ";"); return c }
	const listAudit = "/condaccess.audit.v1.AuditService/ListAuditEvents"
	alice := map[string]any{"sub": "alice", "groups": []any{"admins"}}
	_, sc := consoleSignIn(t, is, "https://"+a.HTTPAddr(), pool, alice)
	onA := cookieOf(sc)
	_, sc = consoleSignIn(t, is, "https://"+b.HTTPAddr(), pool, alice)
	onB := cookieOf(sc)

	check := func(when string, rows []struct {
		name   string
		s      *runningSuite
		cookie string
		want   int
	}) {
		t.Helper()
		for _, tt := range rows {
			t.Run(when+"/"+tt.name, func(t *testing.T) {
				if got := do(tt.s, http.MethodPost, listAudit, tt.cookie); got != tt.want {
					t.Errorf("call = %d, want %d", got, tt.want)
				}
				if got := do(tt.s, http.MethodGet, httpface.SessionPath, tt.cookie); got != tt.want {
					t.Errorf("GET %s = %d, want %d", httpface.SessionPath, got, tt.want)
				}
			})
		}
	}
	type row = struct {
		name   string
		s      *runningSuite
		cookie string
		want   int
	}
	check("signed in", []row{
		{"A's cookie on A", a, onA, http.StatusOK},
		{"A's cookie on B", b, onA, http.StatusOK},
		{"B's cookie on A", a, onB, http.StatusOK},
	})
	// Live pages: a WatchSignIns stream on B with each session (Connect streaming).
	streamClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	watch := func(s *runningSuite, cookie string) *bufio.Reader {
		t.Helper()
		msg := []byte(`{}`)
		env := append([]byte{0, 0, 0, 0, byte(len(msg))}, msg...)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+s.HTTPAddr()+"/condaccess.access.v1.AccessService/WatchSignIns", bytes.NewReader(env))
		req.Header.Set("Cookie", cookie)
		req.Header.Set("Content-Type", "application/connect+json")
		req.Header.Set("Connect-Protocol-Version", "1")
		resp, err := streamClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("WatchSignIns = %d", resp.StatusCode)
		}
		return bufio.NewReader(resp.Body)
	}
	// next reads the next envelope: its payload, or "" with end true at the stream's end
	// (an end-of-stream envelope or the body closed).
	next := func(r *bufio.Reader) (payload string, end bool) {
		var h [5]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return "", true
		}
		b := make([]byte, binary.BigEndian.Uint32(h[1:]))
		if _, err := io.ReadFull(r, b); err != nil || h[0]&2 != 0 {
			return string(b), true
		}
		return string(b), false
	}
	liveA, liveB := watch(b, onA), watch(b, onB)
	for _, r := range []*bufio.Reader{liveA, liveB} {
		if m, end := next(r); end || !strings.Contains(m, "heartbeat") {
			t.Fatalf("first message %q (end %v), want a heartbeat", m, end)
		}
	}
	signedOut := time.Now()
	if got := do(a, http.MethodPost, httpface.LogoutPath, onA); got != http.StatusNoContent {
		t.Fatalf("sign-out on A = %d, want 204", got)
	}
	// At once: no wait, no retry.
	check("signed out on A", []row{
		{"A's cookie on B", b, onA, http.StatusUnauthorized},
		{"A's cookie on A", a, onA, http.StatusUnauthorized},
		{"B's cookie (another session) on A", a, onB, http.StatusOK},
	})
	// The stream of the signed-out session on B ends (within SessionRecheck); the
	// other session's stream goes on and gets the next sign-in.
	for {
		m, end := next(liveA)
		if end {
			break
		}
		if strings.Contains(m, "signIn") {
			t.Fatalf("the signed-out session's stream sent %s", m)
		}
	}
	if d := time.Since(signedOut); d > httpface.SessionRecheck+5*time.Second {
		t.Errorf("the signed-out session's stream ended %v after the sign-out", d)
	} else {
		t.Logf("the signed-out session's stream on B ended %v after the sign-out on A", d)
	}
	req, _ := http.NewRequest(http.MethodPost, "https://"+b.HTTPAddr()+"/condaccess.access.v1.AccessService/EvaluateAccess",
		strings.NewReader(`{"userId":"u-9","deviceId":"dev-9","applicationId":"wiki"}`))
	req.Header.Set("Cookie", onB)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Connect-Protocol-Version", "1")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("EvaluateAccess with B's session = %d", resp.StatusCode)
	}
	for {
		m, end := next(liveB)
		if end {
			t.Fatal("the stream of the session still signed in ended")
		}
		if strings.Contains(m, "signIn") {
			if !strings.Contains(m, `"u-9"`) {
				t.Errorf("B's stream sent %s, want u-9's sign-in", m)
			}
			break
		}
	}
	// The key and the sign-out are in the database, not in A's data directory.
	for _, f := range []string{"console-signouts", "console-session.key"} {
		if _, err := os.Stat(filepath.Join(dirA, f)); err == nil {
			t.Errorf("with --database-url %s was written to A's data directory", f)
		}
	}
}
