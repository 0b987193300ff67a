package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/condaccess/condaccess/internal/httpface"
	"github.com/condaccess/condaccess/services/access/edgeid/edgeidtest"
)

// codeIssuer is an OIDC issuer with the authorization code flow: /auth issues a code
// for the user set by the test, bound to the PKCE challenge; /token gives the ID token
// only for the matching code_verifier, once.
type codeIssuer struct {
	URL    string
	key    *ecdsa.PrivateKey
	mu     sync.Mutex
	user   map[string]any // claims of the next sign-in (sub, groups)
	grants map[string]codeGrant
}

type codeGrant struct {
	challenge, nonce, clientID string
	claims                     map[string]any
}

func newCodeIssuer(t *testing.T) *codeIssuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	is := &codeIssuer{key: key, grants: map[string]codeGrant{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"issuer": is.URL, "jwks_uri": is.URL + "/jwks", "authorization_endpoint": is.URL + "/auth",
			"token_endpoint": is.URL + "/token", "id_token_signing_alg_values_supported": []string{"ES256"}})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	})
	mux.HandleFunc("/auth", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("nonce") == "" {
			http.Error(w, "authorization code with PKCE (S256) and a nonce required", http.StatusBadRequest)
			return
		}
		code := base64.RawURLEncoding.EncodeToString([]byte(q.Get("state") + "-code"))
		is.mu.Lock()
		is.grants[code] = codeGrant{challenge: q.Get("code_challenge"), nonce: q.Get("nonce"), clientID: q.Get("client_id"), claims: is.user}
		is.mu.Unlock()
		http.Redirect(w, r, q.Get("redirect_uri")+"?code="+url.QueryEscape(code)+"&state="+url.QueryEscape(q.Get("state")), http.StatusFound)
	})
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		is.mu.Lock()
		g, ok := is.grants[r.Form.Get("code")]
		delete(is.grants, r.Form.Get("code"))
		is.mu.Unlock()
		sum := sha256.Sum256([]byte(r.Form.Get("code_verifier")))
		if !ok || base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":"invalid_grant"}`)
			return
		}
		claims := map[string]any{"iss": is.URL, "aud": g.clientID, "nonce": g.nonce, "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()}
		for k, v := range g.claims {
			claims[k] = v
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 3600,
			"id_token": edgeidtest.SignES256(is.key, "k1", claims)})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	is.URL = srv.URL
	return is
}

// consoleSignIn plays a browser through the console's sign-in at base as the user
// with claims and returns its client (cookie jar) and the session cookie's
// Set-Cookie line.
func consoleSignIn(t *testing.T, is *codeIssuer, base string, pool *x509.CertPool, claims map[string]any) (*http.Client, string) {
	t.Helper()
	is.signInAs(claims)
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	next := base + httpface.LoginURL("/devices")
	var setCookie string
	for i := 0; i < 3; i++ {
		resp, err := c.Get(next)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound {
			t.Fatalf("GET %s = %d, want a redirect", next, resp.StatusCode)
		}
		for _, sc := range resp.Header.Values("Set-Cookie") {
			if strings.HasPrefix(sc, httpface.SessionCookie+"=") {
				setCookie = sc
			}
		}
		next = resp.Header.Get("Location")
		if !strings.HasPrefix(next, "http") {
			next = base + next
		}
	}
	if next != base+"/devices" || setCookie == "" {
		t.Fatalf("the flow ended at %s with session cookie %q, want /devices with a session", next, setCookie)
	}
	return c, setCookie
}

func (is *codeIssuer) signInAs(claims map[string]any) {
	is.mu.Lock()
	is.user = claims
	is.mu.Unlock()
}

// TestConsoleOIDCSignIn: outside development mode a person signs in to the console with
// the OIDC issuer (authorization code with PKCE); the session cookie is HttpOnly,
// Secure, SameSite=Strict; calls with it and the Connect header run with the roles
// the group maps to, attributed to the session's subject. Refused: a call without the
// Connect header (CSRF), a group without a role, a callback whose state is not this
// browser's, a machine role in the role map.
func TestConsoleOIDCSignIn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := httpface.ParseRoleMap("bots=sensor"); err == nil {
		t.Error("--console-role-map accepted a machine role")
	}
	is := newCodeIssuer(t)
	dir := t.TempDir()
	if _, _, err := runCLI(t, "dev-certs", "--out", dir); err != nil {
		t.Fatal(err)
	}
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
	s, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", dataDir: t.TempDir(),
		services: "risk,compliance,access,remediation", stopTimeout: 5 * time.Second, factories: facs,
		tlsCert: filepath.Join(dir, "service.pem"), tlsKey: filepath.Join(dir, "service-key.pem"), tlsClientCA: filepath.Join(dir, "ca.pem"),
		consoleClientID: "condaccess-console", consoleRoleMap: "admins=policy-admin,admins=secops-admin,staff-readers=reader",
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	base := "https://" + s.HTTPAddr()
	pem, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)

	signIn := func(t *testing.T, claims map[string]any) (*http.Client, string) {
		t.Helper()
		return consoleSignIn(t, is, base, pool, claims)
	}
	// call makes a Connect JSON call; connectHeader false plays a cross-site form post.
	call := func(t *testing.T, c *http.Client, method, body string, connectHeader bool) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+method, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if connectHeader {
			req.Header.Set("Connect-Protocol-Version", "1")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	const createUser = "/condaccess.access.v1.DirectoryService/CreateUser"
	const listAudit = "/condaccess.audit.v1.AuditService/ListAuditEvents"

	admin, setCookie := signIn(t, map[string]any{"sub": "alice", "groups": []any{"admins", "staff"}})
	for _, want := range []string{"HttpOnly", "Secure", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(setCookie, want) {
			t.Errorf("session cookie %q lacks %s", setCookie, want)
		}
	}
	reader, _ := signIn(t, map[string]any{"sub": "bob", "groups": []any{"staff-readers"}})
	nobody, _ := signIn(t, map[string]any{"sub": "carol", "groups": []any{"staff"}})
	stranger := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}

	for _, tt := range []struct {
		name          string
		client        *http.Client
		method, body  string
		connectHeader bool
		want          int
	}{
		{"admin session creates a user", admin, createUser, `{"user":{"userId":"u-by-alice","displayName":"A"}}`, true, http.StatusOK},
		{"admin session without the Connect header (CSRF)", admin, createUser, `{"user":{"userId":"u-csrf","displayName":"A"}}`, false, 0},
		{"reader session may read", reader, listAudit, `{}`, true, http.StatusOK},
		{"reader session may not create", reader, createUser, `{"user":{"userId":"u-by-bob","displayName":"B"}}`, true, http.StatusForbidden},
		{"session of a group without a role", nobody, listAudit, `{}`, true, http.StatusForbidden},
		{"no session", stranger, listAudit, `{}`, true, http.StatusUnauthorized},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := call(t, tt.client, tt.method, tt.body, tt.connectHeader)
			if tt.want == 0 {
				if got == http.StatusOK {
					t.Errorf("= %d, want a refusal", got)
				}
				return
			}
			if got != tt.want {
				t.Errorf("= %d, want %d", got, tt.want)
			}
		})
	}
	// Only the allowed creation happened, attributed to the session's subject.
	req, _ := http.NewRequest(http.MethodPost, base+listAudit, strings.NewReader(`{"resourceType":"user"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Connect-Protocol-Version", "1")
	resp, err := admin.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"u-by-alice"`) || !strings.Contains(string(b), `"oidc:alice"`) || strings.Contains(string(b), "u-csrf") || strings.Contains(string(b), "u-by-bob") {
		t.Errorf("audit of users = %s\nwant only u-by-alice, by oidc:alice", b)
	}

	// A callback whose state is not this browser's: refused, no session.
	jar, _ := cookiejar.New(nil)
	fresh := &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = fresh.Get(base + httpface.CallbackPath + "?code=stolen&state=guessed")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || strings.Contains(strings.Join(resp.Header.Values("Set-Cookie"), ";"), httpface.SessionCookie+"=") {
		t.Errorf("forged callback = %d %v, want 400 and no session", resp.StatusCode, resp.Header.Values("Set-Cookie"))
	}
}

// TestConsoleSignInBrowser: in Chromium without a client certificate, a console page
// says "not signed in" and links to sign-in; the link goes through the issuer and back
// to the same page, which then shows the devices (the session's reader role), live
// streams included.
func TestConsoleSignInBrowser(t *testing.T) {
	chromiumPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	is := newCodeIssuer(t)
	is.signInAs(map[string]any{"sub": "alice", "groups": []any{"soc"}})
	dir := t.TempDir()
	if _, _, err := runCLI(t, "dev-certs", "--out", dir); err != nil {
		t.Fatal(err)
	}
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
	s, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", dataDir: t.TempDir(),
		services: "risk,compliance,access,remediation", stopTimeout: 5 * time.Second, factories: facs,
		tlsCert: filepath.Join(dir, "service.pem"), tlsKey: filepath.Join(dir, "service-key.pem"), tlsClientCA: filepath.Join(dir, "ca.pem"),
		consoleClientID: "condaccess-console", consoleRoleMap: "soc=reader,soc=secops-admin",
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	setupFlow(t, ctx, dialCert(t, dir, s.GRPCAddr(), "admin"))

	tab := browser(t, ctx, chromedp.Flag("ignore-certificate-errors", true))
	if err := chromedp.Do(tab, chromedp.Navigate("https://"+s.HTTPAddr()+"/devices")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, 10*time.Second, `#sign-in`, "sign-in link")
	if err := chromedp.Do(tab, chromedp.Click(`#sign-in`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, 15*time.Second, `#devices tr[data-device="dev-1"]`, "devices after signing in")
	loc, err := chromedp.Run(tab, chromedp.Evaluate[string](`location.pathname`))
	if err != nil || loc != "/devices" {
		t.Errorf("after sign-in the page is %q (%v), want /devices", loc, err)
	}
	// The session cookie is not readable by scripts.
	if c, err := chromedp.Run(tab, chromedp.Evaluate[string](`document.cookie`)); err != nil || strings.Contains(c, "condaccess-session") {
		t.Errorf("document.cookie = %q (%v): the session cookie is readable by scripts", c, err)
	}
	// The header says who is signed in; the sign-out button ends the session: the
	// page says "not signed in" again and offers the sign-in link.
	waitFor(t, tab, 5*time.Second, `#sign-out`, "sign-out button")
	if who, err := chromedp.Run(tab, chromedp.Text(`#who`)); err != nil || who != "oidc:alice" {
		t.Errorf("signed in as %q (%v), want oidc:alice", who, err)
	}
	if err := chromedp.Do(tab, chromedp.Click(`#sign-out`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, 10*time.Second, `#sign-in`, "sign-in link after signing out")
	if n, err := chromedp.Run(tab, chromedp.Evaluate[int](`document.querySelectorAll("#sign-out").length`)); err != nil || n != 0 {
		t.Errorf("a sign-out button after signing out (%d, %v)", n, err)
	}
}

// TestConsoleSessionSurvivesRestart: a console session is a sealed cookie whose key
// is kept in the data directory, so it still works after serve restarts; signing out
// (POST /auth/logout with the Connect header) makes the old cookie refused, also after
// the next restart. Refused: a sign-out without the Connect header (cross-site form).
func TestConsoleSessionSurvivesRestart(t *testing.T) {
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
	dataDir := t.TempDir()
	start := func() *runningSuite {
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
		s, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", dataDir: dataDir,
			services: "risk,compliance,access,remediation", stopTimeout: 5 * time.Second, factories: facs,
			tlsCert: filepath.Join(dir, "service.pem"), tlsKey: filepath.Join(dir, "service-key.pem"), tlsClientCA: filepath.Join(dir, "ca.pem"),
			consoleClientID: "condaccess-console", consoleRoleMap: "admins=reader",
		}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := start()
	defer func() { s.Stop() }()
	_, setCookie := consoleSignIn(t, is, "https://"+s.HTTPAddr(), pool, map[string]any{"sub": "alice", "groups": []any{"admins"}})
	cookie, _, _ := strings.Cut(setCookie, ";")
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	// do sends the session cookie (and the Connect header when connect) to path.
	do := func(method, path string, connect bool) (int, string) {
		t.Helper()
		body := ""
		if method == http.MethodPost && strings.HasPrefix(path, "/condaccess.") {
			body = `{}`
		}
		req, _ := http.NewRequest(method, "https://"+s.HTTPAddr()+path, strings.NewReader(body))
		req.Header.Set("Cookie", cookie)
		req.Header.Set("Content-Type", "application/json")
		if connect {
			req.Header.Set("Connect-Protocol-Version", "1")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	const listAudit = "/condaccess.audit.v1.AuditService/ListAuditEvents"
	if code, body := do(http.MethodPost, listAudit, true); code != http.StatusOK {
		t.Fatalf("signed in, before the restart: %d %s", code, body)
	}

	s.Stop()
	s = start()
	if code, body := do(http.MethodPost, listAudit, true); code != http.StatusOK {
		t.Fatalf("after the restart: %d %s, want the session still valid", code, body)
	}
	if code, body := do(http.MethodGet, httpface.SessionPath, false); code != http.StatusOK || !strings.Contains(body, `"oidc:alice"`) || !strings.Contains(body, `"reader"`) {
		t.Errorf("GET %s = %d %s, want alice with reader", httpface.SessionPath, code, body)
	}
	if code, _ := do(http.MethodPost, httpface.LogoutPath, false); code != http.StatusForbidden {
		t.Errorf("sign-out without the Connect header (cross-site form) = %d, want 403", code)
	}
	if code, _ := do(http.MethodPost, listAudit, true); code != http.StatusOK {
		t.Fatalf("the refused sign-out ended the session: %d", code)
	}
	if code, _ := do(http.MethodPost, httpface.LogoutPath, true); code != http.StatusNoContent {
		t.Fatalf("sign-out = %d, want 204", code)
	}
	for _, when := range []string{"after sign-out", "after sign-out and a restart"} {
		if when != "after sign-out" {
			s.Stop()
			s = start()
		}
		if code, _ := do(http.MethodPost, listAudit, true); code != http.StatusUnauthorized {
			t.Errorf("%s: the old cookie = %d, want 401", when, code)
		}
		if code, _ := do(http.MethodGet, httpface.SessionPath, false); code != http.StatusUnauthorized {
			t.Errorf("%s: GET %s = %d, want 401", when, httpface.SessionPath, code)
		}
	}
}
