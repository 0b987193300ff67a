package edgeid_test

import (
	"math/big"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/condaccess/condaccess/services/access/edgeid"
	"github.com/condaccess/condaccess/services/access/edgeid/edgeidtest"
)

func TestClientIP(t *testing.T) {
	peer := netip.MustParseAddr("192.0.2.7")
	for _, tt := range []struct {
		name string
		xff  []string
		hops int
		want string // "" = unknown
	}{
		{"no trusted hop: the peer, whatever XFF says", []string{"10.1.2.3"}, 0, "192.0.2.7"},
		{"one hop: the proxy's entry", []string{"203.0.113.9"}, 1, "203.0.113.9"},
		{"attack: a client entry left of the proxy's is not read", []string{"10.1.2.3, 203.0.113.9"}, 1, "203.0.113.9"},
		{"attack: a client header before the proxy's is not read", []string{"10.1.2.3", "203.0.113.9"}, 1, "203.0.113.9"},
		{"two hops across headers", []string{"198.51.100.1, 10.1.2.3", "203.0.113.9"}, 2, "10.1.2.3"},
		{"attack: no XFF with a trusted hop is unknown", nil, 1, ""},
		{"attack: fewer entries than hops is unknown", []string{"203.0.113.9"}, 2, ""},
		{"attack: unparsable entry is unknown, not skipped", []string{"10.1.2.3, not-an-ip"}, 1, ""},
		{"empty entry is unknown", []string{"10.1.2.3, "}, 1, ""},
		{"IPv4-mapped IPv6 is unmapped", []string{"::ffff:10.1.2.3"}, 1, "10.1.2.3"},
		{"IPv6", []string{" 2001:db8::1 "}, 1, "2001:db8::1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := edgeid.ClientIP(peer, tt.xff, tt.hops)
			if (tt.want == "" && got.IsValid()) || (tt.want != "" && got.String() != tt.want) {
				t.Errorf("ClientIP(%q, %d) = %v, want %q", tt.xff, tt.hops, got, tt.want)
			}
		})
	}
}

func TestDeviceCertificates(t *testing.T) {
	dir := t.TempDir()
	ca := edgeidtest.NewDeviceCA(t, dir, "device-ca")
	other := edgeidtest.NewDeviceCA(t, dir, "other-ca")
	now := time.Now()
	v, err := edgeid.NewX509DeviceVerifier(ca.CertFile, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	certs := edgeid.NewDeviceCerts(v)
	for _, tt := range []struct {
		name   string
		cert   *edgeidtest.DeviceCert
		wantID string // "" = refused
	}{
		{"valid", ca.Issue(t, "dev-1", now.Add(-time.Hour), now.Add(time.Hour)), "dev-1"},
		{"attack: another CA", other.Issue(t, "dev-1", now.Add(-time.Hour), now.Add(time.Hour)), ""},
		{"expired", ca.Issue(t, "dev-1", now.Add(-2*time.Hour), now.Add(-time.Hour)), ""},
		{"not yet valid", ca.Issue(t, "dev-1", now.Add(time.Hour), now.Add(2*time.Hour)), ""},
		{"attack: two device SANs", ca.IssueURIs(t, []string{"spiffe://condaccess/device/dev-1", "spiffe://condaccess/device/dev-2"}, now.Add(-time.Hour), now.Add(time.Hour)), ""},
		{"attack: malformed device id", ca.IssueURIs(t, []string{"spiffe://condaccess/device/dev-1/../ceo"}, now.Add(-time.Hour), now.Add(time.Hour)), ""},
		{"no device SAN", ca.IssueURIs(t, []string{"spiffe://condaccess/role/service"}, now.Add(-time.Hour), now.Add(time.Hour)), ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for range 2 { // the second time from the cache
				id, err := certs.Verify(tt.cert.Escaped, now)
				if id != tt.wantID || (tt.wantID == "") != (err != nil) {
					t.Fatalf("Verify = %q, %v; want %q", id, err, tt.wantID)
				}
			}
		})
	}
}

// TestRevocationReachesCachedCertificates: a verified certificate is cached for at
// most CertCacheTTL, so a revocation refuses it from then on.
func TestRevocationReachesCachedCertificates(t *testing.T) {
	ca := edgeidtest.NewDeviceCA(t, t.TempDir(), "device-ca")
	now := time.Now()
	cert := ca.Issue(t, "dev-1", now.Add(-time.Hour), now.Add(time.Hour))
	revoked := false
	v, err := edgeid.NewX509DeviceVerifier(ca.CertFile, nil, func(id string, _ *big.Int) bool { return revoked && id == "dev-1" })
	if err != nil {
		t.Fatal(err)
	}
	certs := edgeid.NewDeviceCerts(v)
	if _, err := certs.Verify(cert.Escaped, now); err != nil {
		t.Fatal(err)
	}
	revoked = true
	if _, err := certs.Verify(cert.Escaped, now.Add(edgeid.CertCacheTTL+time.Millisecond)); err == nil {
		t.Fatal("a revoked certificate was accepted after the cache bound")
	}
}

// TestTokens: issuer tokens and Pomerium assertions, each verified with its own keys.
func TestTokens(t *testing.T) {
	is := edgeidtest.NewIssuer(t)
	pom := edgeidtest.NewIssuer(t) // stands in for Pomerium's JWKS
	v, err := edgeid.NewTokenVerifier(edgeid.TokenConfig{Issuers: []string{is.URL}, Audience: "condaccess", GroupsClaim: "groups",
		PomeriumJWKSURL: pom.URL + "/jwks", PomeriumAudiences: []string{"apps.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	now := time.Now()
	for _, tt := range []struct {
		name     string
		raw      string
		pomerium bool
		wantUser string // "" = refused
		wantMFA  bool
		wantGrps []string
	}{
		{"issuer token", is.Token(map[string]any{"sub": "alice", "aud": "condaccess", "amr": []string{"hwk"}, "groups": []string{"finance"}}), false, "alice", true, []string{"finance"}},
		{"external-id style subject", is.Token(map[string]any{"sub": "auth0|5f3a/x=", "aud": "condaccess"}), false, "auth0|5f3a/x=", false, nil},
		{"groups that cannot be group ids dropped, duplicates once", is.Token(map[string]any{"sub": "alice", "aud": "condaccess",
			"groups": []string{"finance", "has space", "", "finance", "eng"}}), false, "alice", false, []string{"finance", "eng"}},
		{"attack: groups claim not a list of strings", is.Token(map[string]any{"sub": "alice", "aud": "condaccess", "groups": "finance"}), false, "", false, nil},
		{"attack: groups claim with a non-string", is.Token(map[string]any{"sub": "alice", "aud": "condaccess", "groups": []any{"finance", 7}}), false, "", false, nil},
		{"attack: more groups than allowed", is.Token(map[string]any{"sub": "alice", "aud": "condaccess", "groups": make([]string, edgeid.MaxTokenGroups+1)}), false, "", false, nil},
		{"issuer token without MFA", is.Token(map[string]any{"sub": "alice", "aud": []string{"other", "condaccess"}, "amr": []string{"pwd"}}), false, "alice", false, nil},
		{"pomerium assertion", pom.Token(map[string]any{"sub": "bob", "aud": "apps.example.com", "iss": "authenticate.example.com"}), true, "bob", false, nil},
		{"attack: pomerium assertion for another route", pom.Token(map[string]any{"sub": "bob", "aud": "wiki.example.com", "iss": "authenticate.example.com"}), true, "", false, nil},
		{"attack: pomerium assertion without aud", pom.Token(map[string]any{"sub": "bob", "iss": "authenticate.example.com"}), true, "", false, nil},
		{"attack: pomerium assertion as a bearer token", pom.Token(map[string]any{"sub": "bob", "aud": "condaccess", "iss": is.URL}), false, "", false, nil},
		{"attack: issuer token as a pomerium assertion", is.Token(map[string]any{"sub": "alice", "aud": "condaccess"}), true, "", false, nil},
		{"no exp", is.Token(map[string]any{"sub": "alice", "aud": "condaccess", "exp": nil}), false, "", false, nil},
		{"user claim not an id", is.Token(map[string]any{"sub": "alice smith", "aud": "condaccess"}), false, "", false, nil},
		{"no user claim", is.Token(map[string]any{"sub": nil, "aud": "condaccess"}), false, "", false, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Verify(ctx, tt.raw, tt.pomerium, now)
			if c.User != tt.wantUser || (tt.wantUser == "") != (err != nil) || c.MFA != tt.wantMFA || !slices.Equal(c.Groups, tt.wantGrps) {
				t.Fatalf("Verify = %+v, %v; want user %q mfa %v groups %q", c, err, tt.wantUser, tt.wantMFA, tt.wantGrps)
			}
		})
	}
	if _, err := edgeid.NewTokenVerifier(edgeid.TokenConfig{PomeriumJWKSURL: pom.URL + "/jwks"}); err == nil {
		t.Error("a Pomerium JWKS URL without an audience was accepted")
	}
	if _, err := edgeid.NewTokenVerifier(edgeid.TokenConfig{Issuers: []string{is.URL}}); err == nil {
		t.Error("an issuer without an audience was accepted")
	}
}
