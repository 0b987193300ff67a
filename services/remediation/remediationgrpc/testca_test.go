package remediationgrpc_test

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
	"testing"
	"time"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/auth/authtest"
)

// testCA issues role certificates with arbitrary URI SANs (authtest's CA issues role
// URIs only) and, through its device CA, real device identities.
type testCA struct {
	t      *testing.T
	devCA  *authtest.DeviceCA
	dir    string
	file   string
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	serial int64
}

func newTestCA(t *testing.T) *testCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{t: t, dir: t.TempDir(), cert: cert, key: key, serial: 1, devCA: authtest.NewDeviceCA(t)}
	ca.file = filepath.Join(ca.dir, "ca.pem")
	ca.write(ca.file, "CERTIFICATE", der)
	return ca
}

func (ca *testCA) write(file, typ string, der []byte) {
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		ca.t.Fatal(err)
	}
}

// issue writes a certificate for cn with the URI SANs uris and the role URIs of roles.
func (ca *testCA) issue(cn string, uris []string, roles ...commonv1.Role) (certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	for _, r := range roles {
		uris = append(uris, auth.RoleURI(r))
	}
	var us []*url.URL
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			ca.t.Fatal(err)
		}
		us = append(us, u)
	}
	ca.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, URIs: us,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	base := filepath.Join(ca.dir, big.NewInt(ca.serial).String())
	ca.write(base+"-cert.pem", "CERTIFICATE", der)
	ca.write(base+"-key.pem", "PRIVATE KEY", keyDER)
	return base + "-cert.pem", base + "-key.pem"
}

func (ca *testCA) server() auth.Config {
	cert, key := ca.issue("server", nil, commonv1.Role_ROLE_SERVICE)
	return auth.Config{CertFile: cert, KeyFile: key, ClientCAFile: ca.file, DeviceCAFile: ca.devCA.CertFile}
}

// device returns the client configuration of deviceID's own identity: a certificate
// of the device CA (a role certificate with a device URI SAN is not a device).
func (ca *testCA) device(deviceID string) auth.ClientConfig {
	cert, key := ca.devCA.Issue(ca.t, deviceID, time.Hour)
	return auth.ClientConfig{CAFile: ca.file, CertFile: cert, KeyFile: key}
}

func (ca *testCA) client(cn string, uris []string, roles ...commonv1.Role) auth.ClientConfig {
	cert, key := ca.issue(cn, uris, roles...)
	return auth.ClientConfig{CAFile: ca.file, CertFile: cert, KeyFile: key}
}
