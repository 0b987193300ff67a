package edgeid

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Defaults of TokenConfig.
const (
	DefaultUserClaim = "sub"
	DefaultLeeway    = 60 * time.Second
	// MaxToken is the largest token accepted, in bytes.
	MaxToken = 16 << 10
	// MaxTokenGroups is the most groups a token's groups claim may hold.
	MaxTokenGroups = 1000
	// discoveryRetry is the least time between two discovery attempts of an issuer.
	discoveryRetry = 5 * time.Second
)

// DefaultMFAMethods are the amr values that satisfy MFA.
var DefaultMFAMethods = []string{"mfa", "hwk", "otp", "fido"}

// signingAlgs are the accepted JWS algorithms (asymmetric only; never "none" or HMAC).
var signingAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512,
	jose.PS256, jose.PS384, jose.PS512, jose.EdDSA}

// TokenConfig configures a TokenVerifier.
type TokenConfig struct {
	// Issuers are the accepted OIDC issuer URLs (discovery at <issuer>/.well-known/openid-configuration).
	Issuers []string
	// Audience is the required "aud" value of issuer tokens.
	Audience string
	// UserClaim names the claim whose value is the directory user id (default "sub").
	UserClaim string
	// GroupsClaim, when set, names a claim with the user's groups (Claims.Groups): a
	// JSON array of strings; a token whose claim is anything else, or holds more than
	// MaxTokenGroups entries, is refused (dropping groups could keep a policy from
	// applying).
	GroupsClaim string
	// MFAMethods are the amr values that satisfy MFA (default DefaultMFAMethods).
	MFAMethods []string
	// PomeriumJWKSURL, when set, verifies X-Pomerium-Jwt-Assertion with these keys.
	PomeriumJWKSURL string
	// PomeriumAudiences are the accepted "aud" values of Pomerium assertions: the
	// route hosts this enforcement point protects (required with PomeriumJWKSURL). An
	// assertion Pomerium made for another route (which its browser may have shown to
	// that route's application) is refused here.
	PomeriumAudiences []string
	// Leeway is the clock skew allowed on exp, nbf and iat (default 60 s).
	Leeway time.Duration
	// HTTPClient fetches discovery documents and keys (default http.DefaultClient).
	HTTPClient *http.Client
}

// Claims is what a verified token says about the user.
type Claims struct {
	// User is the value of the user claim: a directory user id or a user's
	// external id (resolved by the decision, see policyengine.Snapshot.ResolveTokenUser).
	User string
	// Groups are the groups claim's values that can be group ids (others are
	// dropped: no directory group has them); nil without TokenConfig.GroupsClaim.
	Groups []string
	MFA    bool
	Issuer string
	Expiry time.Time
}

// TokenVerifier verifies OIDC tokens (signature with the issuer's JWKS, which is
// fetched again when a token names a key it has not seen: key rotation without a
// restart; iss, aud, exp, nbf with leeway) and caches each verified token by its hash
// until it expires.
type TokenVerifier struct {
	cfg      TokenConfig
	ctx      context.Context // carries the HTTP client for go-oidc
	issuers  map[string]*issuer
	pomerium *oidc.RemoteKeySet

	mu    sync.RWMutex
	cache map[[32]byte]Claims
}

type issuer struct {
	url     string
	mu      sync.Mutex
	keys    *oidc.RemoteKeySet
	lastTry time.Time
	lastErr error
}

// NewTokenVerifier returns a verifier for cfg; discovery happens on first use (and is
// retried every few seconds while an issuer is unreachable).
func NewTokenVerifier(cfg TokenConfig) (*TokenVerifier, error) {
	if len(cfg.Issuers) > 0 && cfg.Audience == "" {
		return nil, errors.New("an OIDC audience is required with OIDC issuers")
	}
	if cfg.PomeriumJWKSURL != "" && len(cfg.PomeriumAudiences) == 0 {
		return nil, errors.New("a Pomerium audience (the protected routes' hosts) is required with a Pomerium JWKS URL")
	}
	if cfg.UserClaim == "" {
		cfg.UserClaim = DefaultUserClaim
	}
	if cfg.MFAMethods == nil {
		cfg.MFAMethods = DefaultMFAMethods
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = DefaultLeeway
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	v := &TokenVerifier{cfg: cfg, issuers: map[string]*issuer{}, cache: map[[32]byte]Claims{}}
	v.ctx = oidc.ClientContext(context.Background(), cfg.HTTPClient)
	for _, u := range cfg.Issuers {
		v.issuers[u] = &issuer{url: u}
	}
	if cfg.PomeriumJWKSURL != "" {
		v.pomerium = oidc.NewRemoteKeySet(v.ctx, cfg.PomeriumJWKSURL)
	}
	return v, nil
}

// Enabled reports whether any issuer (or Pomerium) is configured.
func (v *TokenVerifier) Enabled() bool { return v != nil && (len(v.issuers) > 0 || v.pomerium != nil) }

// Pomerium reports whether Pomerium assertions are verified.
func (v *TokenVerifier) Pomerium() bool { return v != nil && v.pomerium != nil }

func (is *issuer) keySet(ctx context.Context) (*oidc.RemoteKeySet, error) {
	is.mu.Lock()
	defer is.mu.Unlock()
	if is.keys != nil {
		return is.keys, nil
	}
	if time.Since(is.lastTry) < discoveryRetry && is.lastErr != nil {
		return nil, is.lastErr
	}
	is.lastTry = time.Now()
	p, err := oidc.NewProvider(ctx, is.url)
	if err != nil {
		is.lastErr = fmt.Errorf("issuer discovery: %w", err)
		return nil, is.lastErr
	}
	var doc struct {
		JWKS string `json:"jwks_uri"`
	}
	if err := p.Claims(&doc); err != nil || doc.JWKS == "" {
		is.lastErr = fmt.Errorf("issuer discovery: no jwks_uri")
		return nil, is.lastErr
	}
	is.keys = oidc.NewRemoteKeySet(ctx, doc.JWKS)
	return is.keys, nil
}

// Verify verifies an issuer token (Authorization: Bearer) or, with pomerium, a Pomerium
// assertion, at now.
func (v *TokenVerifier) Verify(ctx context.Context, raw string, pomerium bool, now time.Time) (Claims, error) {
	if len(raw) > MaxToken {
		return Claims{}, errors.New("token too large")
	}
	h := sha256.New()
	if pomerium {
		h.Write([]byte{1})
	} else {
		h.Write([]byte{0})
	}
	h.Write([]byte(raw))
	var key [32]byte
	h.Sum(key[:0])
	v.mu.RLock()
	c, ok := v.cache[key]
	v.mu.RUnlock()
	if ok && now.Before(c.Expiry.Add(v.cfg.Leeway)) {
		return c, nil
	}
	c, err := v.verify(raw, pomerium, now)
	if err != nil {
		return Claims{}, err
	}
	v.mu.Lock()
	if len(v.cache) >= maxCacheEntries {
		clear(v.cache)
	}
	v.cache[key] = c
	v.mu.Unlock()
	return c, nil
}

func (v *TokenVerifier) verify(raw string, pomerium bool, now time.Time) (Claims, error) {
	tok, err := jwt.ParseSigned(raw, signingAlgs)
	if err != nil {
		return Claims{}, fmt.Errorf("malformed token: %w", err)
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return Claims{}, fmt.Errorf("malformed token claims: %w", err)
	}
	var keys *oidc.RemoteKeySet
	expected := jwt.Expected{Time: now}
	if pomerium {
		if v.pomerium == nil {
			return Claims{}, errors.New("pomerium assertions are not accepted (no --pomerium-jwks-url)")
		}
		keys = v.pomerium
		expected.AnyAudience = jwt.Audience(v.cfg.PomeriumAudiences)
	} else {
		is, ok := v.issuers[unverified.Issuer]
		if !ok {
			return Claims{}, fmt.Errorf("issuer %q is not accepted", unverified.Issuer)
		}
		if keys, err = is.keySet(v.ctx); err != nil {
			return Claims{}, err
		}
		expected.Issuer = is.url
		expected.AnyAudience = jwt.Audience{v.cfg.Audience}
	}
	payload, err := keys.VerifySignature(v.ctx, raw)
	if err != nil {
		return Claims{}, fmt.Errorf("bad signature: %w", err)
	}
	var std jwt.Claims
	var rest map[string]json.RawMessage
	if err := json.Unmarshal(payload, &std); err != nil {
		return Claims{}, fmt.Errorf("malformed claims: %w", err)
	}
	if err := json.Unmarshal(payload, &rest); err != nil {
		return Claims{}, fmt.Errorf("malformed claims: %w", err)
	}
	if std.Expiry == nil {
		return Claims{}, errors.New("token has no exp")
	}
	if err := std.ValidateWithLeeway(expected, v.cfg.Leeway); err != nil {
		return Claims{}, err
	}
	out := Claims{Issuer: std.Issuer, Expiry: std.Expiry.Time()}
	if err := json.Unmarshal(rest[v.cfg.UserClaim], &out.User); err != nil || !validID(out.User) {
		return Claims{}, fmt.Errorf("claim %q is not a user id", v.cfg.UserClaim)
	}
	if v.cfg.GroupsClaim != "" && rest[v.cfg.GroupsClaim] != nil {
		var gs []string
		if err := json.Unmarshal(rest[v.cfg.GroupsClaim], &gs); err != nil {
			return Claims{}, fmt.Errorf("claim %q is not a list of strings", v.cfg.GroupsClaim)
		}
		if len(gs) > MaxTokenGroups {
			return Claims{}, fmt.Errorf("claim %q holds %d groups (at most %d)", v.cfg.GroupsClaim, len(gs), MaxTokenGroups)
		}
		for _, g := range gs {
			if validID(g) && !slices.Contains(out.Groups, g) {
				out.Groups = append(out.Groups, g)
			}
		}
	}
	var amr []string
	if rest["amr"] != nil {
		_ = json.Unmarshal(rest["amr"], &amr)
	}
	for _, m := range amr {
		if slices.Contains(v.cfg.MFAMethods, m) {
			out.MFA = true
			break
		}
	}
	return out, nil
}

// validID accepts the user ids and external ids of the contracts: 1-128 of
// [A-Za-z0-9._:@+|/=-] (user and group ids use no "|", "/" or "=").
func validID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._:@+|/=-", c) >= 0) {
			return false
		}
	}
	return true
}
