package httpface

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/auth"
)

// Console sign-in paths and cookies.
const (
	LoginPath     = "/auth/login"
	CallbackPath  = "/auth/callback"
	LogoutPath    = "/auth/logout"
	SessionPath   = "/auth/session"
	SessionCookie = "__Host-condaccess-session"
	loginCookie   = "__Host-condaccess-login"
)

// LoginConfig configures the console's OIDC sign-in (authorization code with PKCE).
type LoginConfig struct {
	// Issuer is the OIDC issuer URL (--oidc-issuer).
	Issuer string
	// ClientID and ClientSecret are the console's client at the issuer; the ID token's
	// audience must be ClientID.
	ClientID, ClientSecret string
	// RedirectURL is <console base URL>/auth/callback, registered at the issuer.
	RedirectURL string
	// GroupsClaim names the ID token claim with the user's groups (--oidc-groups-claim).
	GroupsClaim string
	// RoleMap maps a group to the roles it grants (--console-role-map).
	RoleMap map[string][]commonv1.Role
	// SessionTTL bounds a session's life (default 8h).
	SessionTTL time.Duration
	// SessionKey is the 32-byte AES-256-GCM key that seals sessions into their cookie
	// (--console-session-key-file): every replica with the same key accepts them, and
	// they survive a restart.
	SessionKey []byte
	// SignOutsPath is the file that keeps signed-out session ids until they expire
	// ("" keeps them in memory only).
	SignOutsPath string
	// SignOuts, when set, keeps the sign-outs instead of SignOutsPath: every replica
	// on the same store refuses a signed-out session at once (--database-url).
	SignOuts SignOuts
	Logger   *slog.Logger
}

// ParseRoleMap parses --console-role-map: GROUP=ROLE,... (repeat a group for several
// roles). Only the roles of people may be granted: reader, policy-admin, secops-admin.
func ParseRoleMap(v string) (map[string][]commonv1.Role, error) {
	out := map[string][]commonv1.Role{}
	for _, pair := range strings.Split(v, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		group, name, ok := strings.Cut(pair, "=")
		if !ok || group == "" {
			return nil, fmt.Errorf("--console-role-map: %q is not GROUP=ROLE", pair)
		}
		role, ok := auth.ParseRole(name)
		switch {
		case !ok:
			return nil, fmt.Errorf("--console-role-map: unknown role %q", name)
		case role != commonv1.Role_ROLE_READER && role != commonv1.Role_ROLE_POLICY_ADMIN && role != commonv1.Role_ROLE_SECOPS_ADMIN:
			return nil, fmt.Errorf("--console-role-map: %q is a machine role; a console session may hold reader, policy-admin or secops-admin", name)
		}
		out[group] = append(out[group], role)
	}
	return out, nil
}

// Login is the console's OIDC sign-in and its sessions (sealed cookies).
type Login struct {
	cfg      LoginConfig
	oauth    oauth2.Config
	verifier *oidc.IDTokenVerifier
	sessions *sessions
}

// pendingLogin is a sign-in in progress, kept in the browser's __Host- login cookie
// (HttpOnly, Secure, 10 minutes) rather than on the server, so that starting
// sign-ins costs the server nothing. Tampering with it only breaks one's own
// sign-in: the state must match the callback, the verifier the code's challenge, the
// nonce the ID token, and next stays a local path.
type pendingLogin struct {
	State    string `json:"s"`
	Verifier string `json:"v"`
	Nonce    string `json:"n"`
	Next     string `json:"x"`
}

// NewLogin discovers the issuer and returns the sign-in.
func NewLogin(ctx context.Context, cfg LoginConfig) (*Login, error) {
	if cfg.ClientID == "" || cfg.RedirectURL == "" {
		return nil, errors.New("console sign-in needs a client id and a redirect URL")
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 8 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var ss *sessions
	var err error
	if cfg.SignOuts != nil {
		ss, err = newStoredSessions(cfg.SessionKey, cfg.SignOuts, cfg.Logger)
	} else {
		ss, err = newSessions(cfg.SessionKey, cfg.SignOutsPath)
	}
	if err != nil {
		return nil, fmt.Errorf("console sign-in: %w", err)
	}
	provider, err := oidc.NewProvider(ctx, cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("console sign-in: %w", err)
	}
	return &Login{cfg: cfg,
		oauth: oauth2.Config{ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, Endpoint: provider.Endpoint(),
			RedirectURL: cfg.RedirectURL, Scopes: []string{oidc.ScopeOpenID, "profile", "email"}},
		verifier: provider.Verifier(&oidc.Config{ClientID: cfg.ClientID}),
		sessions: ss}, nil
}

func random() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// Mount serves the sign-in paths on mux.
func (l *Login) Mount(mux *http.ServeMux) {
	mux.HandleFunc("GET "+LoginPath, l.login)
	mux.HandleFunc("GET "+CallbackPath, l.callback)
	mux.HandleFunc("POST "+LogoutPath, l.logout)
	mux.HandleFunc("GET "+SessionPath, l.session)
}

// localPath keeps next only when it is a path of this console (no open redirect).
func localPath(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.Contains(next, "\\") {
		return "/"
	}
	// A control character (a tab, say) is dropped by the browser before it resolves
	// the Location: "/\t/evil.example" would be "//evil.example", another host.
	// url.Parse refuses control characters; a path it reads with a scheme or host is
	// not ours either.
	if u, err := url.Parse(next); err != nil || u.Scheme != "" || u.Host != "" || strings.ContainsFunc(next, unicode.IsControl) {
		return "/"
	}
	return next
}

func (l *Login) login(w http.ResponseWriter, r *http.Request) {
	p := pendingLogin{State: random(), Verifier: oauth2.GenerateVerifier(), Nonce: random(), Next: localPath(r.URL.Query().Get("next"))}
	b, _ := json.Marshal(p)
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: base64.RawURLEncoding.EncodeToString(b), Path: "/", MaxAge: 600,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, l.oauth.AuthCodeURL(p.State, oidc.Nonce(p.Nonce), oauth2.S256ChallengeOption(p.Verifier)), http.StatusFound)
}

func (l *Login) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var p pendingLogin
	c, err := r.Cookie(loginCookie)
	if err == nil {
		if b, err2 := base64.RawURLEncoding.DecodeString(c.Value); err2 == nil {
			err = json.Unmarshal(b, &p)
		} else {
			err = err2
		}
	}
	if err != nil || p.State == "" || q.Get("state") != p.State {
		http.Error(w, "sign-in refused: the state does not match this browser's sign-in; sign in again", http.StatusBadRequest)
		return
	}
	// Single use.
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode})
	if e := q.Get("error"); e != "" {
		http.Error(w, "sign-in refused by the identity provider: "+e, http.StatusForbidden)
		return
	}
	tok, err := l.oauth.Exchange(r.Context(), q.Get("code"), oauth2.VerifierOption(p.Verifier))
	if err != nil {
		l.cfg.Logger.Warn("console sign-in: code exchange failed", "err", err)
		http.Error(w, "sign-in refused: the code exchange failed", http.StatusForbidden)
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := l.verifier.Verify(r.Context(), raw)
	if err != nil || idt.Nonce != p.Nonce {
		l.cfg.Logger.Warn("console sign-in: ID token refused", "err", err, "nonce_ok", err == nil && idt.Nonce == p.Nonce)
		http.Error(w, "sign-in refused: the ID token is not valid", http.StatusForbidden)
		return
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		http.Error(w, "sign-in refused: unreadable claims", http.StatusForbidden)
		return
	}
	id := auth.Identity{Kind: auth.KindConsoleSession, Subject: "oidc:" + idt.Subject, ID: idt.Subject, Roles: l.roles(claims)}
	sealed, err := l.sessions.seal(id, l.cfg.SessionTTL)
	if err != nil {
		http.Error(w, "sign-in failed: the session could not be sealed", http.StatusInternalServerError)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: sealed, Path: "/", MaxAge: int(l.cfg.SessionTTL / time.Second),
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, localPath(p.Next), http.StatusFound)
}

// roles maps the groups claim through the role map (no group: no role).
func (l *Login) roles(claims map[string]any) []commonv1.Role {
	var out []commonv1.Role
	groups, _ := claims[l.cfg.GroupsClaim].([]any)
	for _, g := range groups {
		name, _ := g.(string)
		for _, r := range l.cfg.RoleMap[name] {
			if !containsRole(out, r) {
				out = append(out, r)
			}
		}
	}
	return out
}

func containsRole(rs []commonv1.Role, r commonv1.Role) bool {
	for _, x := range rs {
		if x == r {
			return true
		}
	}
	return false
}

// logout signs the session out: its cookie is refused from now on, here and after a
// restart (with SignOuts: on every replica), until it would have expired. Like every state change it needs the
// Connect-Protocol-Version header (CSRF: a cross-site form cannot send it).
func (l *Login) logout(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Connect-Protocol-Version") == "" {
		http.Error(w, "sign-out refused: send the Connect-Protocol-Version header", http.StatusForbidden)
		return
	}
	if c, err := r.Cookie(SessionCookie); err == nil {
		if ss, ok := l.sessions.open(r.Context(), c.Value); ok {
			if err := l.sessions.revoke(r.Context(), ss); err != nil {
				l.cfg.Logger.Error("console sign-out not recorded", "err", err)
				http.Error(w, "sign-out failed: it could not be recorded", http.StatusInternalServerError)
				return
			}
		}
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
}

// session tells the console who is signed in ({"subject", "roles", "expires"}), or
// 401 without a valid session; the console shows the sign-out button from it.
func (l *Login) session(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	c, err := r.Cookie(SessionCookie)
	var ss sealedSession
	ok := err == nil
	if ok {
		ss, ok = l.sessions.open(r.Context(), c.Value)
	}
	if !ok {
		http.Error(w, "not signed in", http.StatusUnauthorized)
		return
	}
	roles := []string{}
	for _, ro := range ss.identity().Roles {
		roles = append(roles, auth.RoleName(ro))
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"subject": ss.identity().Subject, "roles": roles, "expires": time.Unix(ss.Expires, 0).UTC()})
}

// Wrap gives a request without a certificate identity the identity of its console
// session: only with a valid session cookie AND the Connect-Protocol-Version header,
// which a cross-site form cannot send and a cross-site script cannot send without a
// CORS preflight this server never grants (CSRF protection for every call).
func (l *Login) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := auth.FromContext(r.Context()); !ok && r.Header.Get("Connect-Protocol-Version") != "" {
			if c, err := r.Cookie(SessionCookie); err == nil {
				if ss, ok := l.sessions.open(r.Context(), c.Value); ok {
					// A call that outlives SessionRecheck (a server stream) ends once
					// the session is signed out, here or on another replica, or expires.
					ctx, cancel := context.WithCancel(r.Context())
					defer cancel()
					stop := l.sessions.follow(ctx, ss, SessionRecheck, cancel)
					defer stop()
					r = r.WithContext(auth.NewContext(ctx, ss.identity()))
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// SessionRecheck is how often a call made with a console session that is still
// running (a server stream: the console's live pages) checks that the session still
// holds; it is ended once the session is signed out or expired.
var SessionRecheck = 2 * time.Second

// LoginURL is the sign-in link for a page path.
func LoginURL(next string) string { return LoginPath + "?next=" + url.QueryEscape(localPath(next)) }
