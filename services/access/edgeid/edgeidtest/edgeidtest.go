// Package edgeidtest provides a test OIDC issuer (discovery, JWKS, key rotation) and a test device CA for the enforcement-point tests.
package edgeidtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Issuer is an OIDC issuer over HTTP on 127.0.0.1: discovery document and JWKS.
type Issuer struct {
	URL string
	srv *httptest.Server

	mu        sync.Mutex
	key       *ecdsa.PrivateKey
	kid       string
	published []jose.JSONWebKey
	n         int
	jwksHits  int
}

// NewIssuer starts an issuer with one signing key; it stops with the test.
func NewIssuer(t testing.TB) *Issuer {
	t.Helper()
	is := &Issuer{}
	is.rotate(false)
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"issuer": is.URL, "jwks_uri": is.URL + "/jwks", "authorization_endpoint": is.URL + "/auth",
			"token_endpoint": is.URL + "/token", "id_token_signing_alg_values_supported": []string{"ES256"},
		})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		is.mu.Lock()
		set := jose.JSONWebKeySet{Keys: append([]jose.JSONWebKey(nil), is.published...)}
		is.jwksHits++
		is.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(set)
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	is.srv = httptest.NewUnstartedServer(mux)
	is.srv.Listener.Close()
	is.srv.Listener = l
	is.srv.Start()
	is.URL = is.srv.URL
	t.Cleanup(is.srv.Close)
	return is
}

// Rotate replaces the signing key; the JWKS then publishes only the new key, so
// tokens signed with the old key stop verifying once the verifier refetches.
func (is *Issuer) Rotate() { is.rotate(true) }

// JWKSFetches counts the JWKS requests served.
func (is *Issuer) JWKSFetches() int {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.jwksHits
}

func (is *Issuer) rotate(drop bool) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	is.n++
	is.key, is.kid = k, fmt.Sprintf("key-%d", is.n)
	pub := jose.JSONWebKey{Key: k.Public(), KeyID: is.kid, Algorithm: string(jose.ES256), Use: "sig"}
	if drop {
		is.published = nil
	}
	is.published = append(is.published, pub)
}

// Token signs claims (iss defaults to the issuer, exp to an hour from now, iat to now).
func (is *Issuer) Token(claims map[string]any) string {
	is.mu.Lock()
	key, kid := is.key, is.kid
	is.mu.Unlock()
	return SignES256(key, kid, is.withDefaults(claims))
}

func (is *Issuer) withDefaults(claims map[string]any) map[string]any {
	c := map[string]any{"iss": is.URL, "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range claims {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

// ForeignToken signs claims like Token, with a key the issuer never published.
func (is *Issuer) ForeignToken(claims map[string]any) string {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	is.mu.Lock()
	kid := is.kid
	is.mu.Unlock()
	return SignES256(k, kid, is.withDefaults(claims))
}

// NoneToken is an unsigned token ("alg": "none") with the issuer's default claims.
func (is *Issuer) NoneToken(claims map[string]any) string {
	b, _ := json.Marshal(is.withDefaults(claims))
	enc := func(x []byte) string { return base64URL(x) }
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc(b) + "."
}

// SignES256 signs claims with key as a compact JWT with key id kid.
func SignES256(key crypto.Signer, kid string, claims map[string]any) string {
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		panic(err)
	}
	s, err := jwt.Signed(sig).Claims(claims).Serialize()
	if err != nil {
		panic(err)
	}
	return s
}

// DeviceCA is a device CA whose certificate is written to CertFile.
type DeviceCA struct {
	CertFile string
	// KeyFile holds the CA's PKCS#8 key (for a serve process that signs device
	// certificates with it).
	KeyFile string
	Cert    *x509.Certificate
	key     *ecdsa.PrivateKey
}

// NewDeviceCA creates a device CA in dir.
func NewDeviceCA(t testing.TB, dir, name string) *DeviceCA {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &DeviceCA{CertFile: filepath.Join(dir, name+".pem"), KeyFile: filepath.Join(dir, name+"-key.pem"), Cert: cert, key: k}
	if err := os.WriteFile(ca.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ca.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return ca
}

// DeviceCert is an issued device certificate.
type DeviceCert struct {
	Cert    *x509.Certificate
	PEM     []byte
	KeyPEM  []byte
	TLS     tls.Certificate
	Escaped string // URL-encoded PEM, as nginx's $ssl_client_escaped_cert
}

var serial = struct {
	sync.Mutex
	n int64
}{n: 100}

// Issue issues a client certificate with URI SAN spiffe://condaccess/device/<id>
// valid from notBefore to notAfter.
func (ca *DeviceCA) Issue(t testing.TB, deviceID string, notBefore, notAfter time.Time) *DeviceCert {
	t.Helper()
	return ca.IssueURIs(t, []string{"spiffe://condaccess/device/" + deviceID}, notBefore, notAfter)
}

// IssueURIs issues a client certificate with the given URI SANs.
func (ca *DeviceCA) IssueURIs(t testing.TB, uris []string, notBefore, notAfter time.Time) *DeviceCert {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial.Lock()
	serial.n++
	sn := serial.n
	serial.Unlock()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(sn), Subject: pkix.Name{CommonName: "device"}, NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, k.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kd, _ := x509.MarshalECPrivateKey(k)
	d := &DeviceCert{Cert: cert, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})}
	d.TLS, err = tls.X509KeyPair(d.PEM, d.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	d.Escaped = url.QueryEscape(string(d.PEM))
	return d
}

func base64URL(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
