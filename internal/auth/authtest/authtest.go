// Package authtest issues throwaway CA and role certificates for tests.
package authtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/devca"
)

// CA is a test certificate authority whose PEM certificate is at CertFile.
type CA struct {
	CertFile string
	cert     *x509.Certificate
	key      *ecdsa.PrivateKey
	dir      string
	serial   atomic.Int64
}

// NewCA creates a CA valid for one day and writes its certificate into t.TempDir().
func NewCA(t testing.TB) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "condaccess test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &CA{cert: cert, key: key, dir: t.TempDir()}
	ca.serial.Store(1)
	ca.CertFile = filepath.Join(ca.dir, "ca.pem")
	writePEM(t, ca.CertFile, "CERTIFICATE", der)
	return ca
}

// Issue writes a certificate and key for commonName with a role URI SAN per role,
// usable for both client and server authentication. The certificate is valid for
// "localhost", 127.0.0.1, ::1 and dnsNames.
func (ca *CA) Issue(t testing.TB, commonName string, roles []commonv1.Role, dnsNames ...string) (certFile, keyFile string) {
	t.Helper()
	var uris []string
	for _, r := range roles {
		uris = append(uris, auth.RoleURI(r))
	}
	return ca.IssueURIs(t, commonName, uris, dnsNames...)
}

// IssueURIs is Issue with the URI SANs given as strings (a service identity
// spiffe://condaccess/service/<name>, or a device URI that this CA must not make a
// device).
func (ca *CA) IssueURIs(t testing.TB, commonName string, uriSANs []string, dnsNames ...string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var uris []*url.URL
	for _, s := range uriSANs {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		uris = append(uris, u)
	}
	serial := ca.serial.Add(1)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: commonName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     append([]string{"localhost"}, dnsNames...),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		URIs:         uris,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(ca.dir, big.NewInt(serial).String())
	certFile, keyFile = base+"-cert.pem", base+"-key.pem"
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", keyDER)
	return certFile, keyFile
}

// ServerConfig issues a server certificate with ROLE_SERVICE and returns an mTLS
// auth.Config trusting this CA for clients.
func (ca *CA) ServerConfig(t testing.TB) auth.Config {
	t.Helper()
	cert, key := ca.Issue(t, "server", []commonv1.Role{commonv1.Role_ROLE_SERVICE})
	return auth.Config{CertFile: cert, KeyFile: key, ClientCAFile: ca.CertFile}
}

// ClientConfig issues a client certificate for commonName with roles and returns an
// mTLS auth.ClientConfig trusting this CA for servers.
func (ca *CA) ClientConfig(t testing.TB, commonName string, roles ...commonv1.Role) auth.ClientConfig {
	t.Helper()
	cert, key := ca.Issue(t, commonName, roles)
	return auth.ClientConfig{CAFile: ca.CertFile, CertFile: cert, KeyFile: key}
}

func writePEM(t testing.TB, file, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// DeviceCA is a device CA for tests: certificates it issues are device identities
// on a server configured with DeviceCAFile.
type DeviceCA struct {
	CA       *devca.CA
	CertFile string
	KeyFile  string
	dir      string
}

// NewDeviceCA generates a device CA into t.TempDir().
func NewDeviceCA(t testing.TB) *DeviceCA {
	t.Helper()
	dir := t.TempDir()
	d := &DeviceCA{CertFile: filepath.Join(dir, "device-ca.pem"), KeyFile: filepath.Join(dir, "device-ca-key.pem"), dir: dir}
	var err error
	if d.CA, err = devca.Generate(d.CertFile, d.KeyFile, "condaccess test device CA"); err != nil {
		t.Fatal(err)
	}
	return d
}

// Issue issues a device certificate for deviceID (generated key, valid from now for
// ttl) and returns its files.
func (d *DeviceCA) Issue(t testing.TB, deviceID string, ttl time.Duration) (certFile, keyFile string) {
	t.Helper()
	keyPEM, csrPEM, err := devca.NewCSR()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := devca.ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := d.CA.Issue(pub, deviceID, time.Now(), ttl)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(d.dir, deviceID+"-*")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	certFile, keyFile = f.Name()+"-cert.pem", f.Name()+"-key.pem"
	if err := os.WriteFile(certFile, iss.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// ClientConfig issues a device certificate for deviceID (valid one hour) and returns
// an mTLS auth.ClientConfig trusting server for the server certificate.
func (d *DeviceCA) ClientConfig(t testing.TB, server *CA, deviceID string) auth.ClientConfig {
	t.Helper()
	cert, key := d.Issue(t, deviceID, time.Hour)
	return auth.ClientConfig{CAFile: server.CertFile, CertFile: cert, KeyFile: key}
}
