package edgeid

import (
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"time"
)

// DeviceURIPrefix prefixes the URI SAN that names a device: spiffe://condaccess/device/<id>.
const DeviceURIPrefix = "spiffe://condaccess/device/"

// DeviceCertVerifier verifies a device certificate chain (leaf first) and returns the
// device id it proves. The identity work's auth.DeviceVerifier implements it too.
type DeviceCertVerifier interface {
	VerifyDeviceCertificate(chain []*x509.Certificate, now time.Time) (deviceID string, err error)
}

// X509DeviceVerifier verifies device certificates with crypto/x509 against the device CA
// and asks Revoked (when set) whether the device identity was revoked.
type X509DeviceVerifier struct {
	roots *x509.CertPool
	// Revoked reports whether the certificate with this serial of this device is revoked.
	Revoked func(deviceID string, serial *big.Int) bool
}

// NewX509DeviceVerifier reads the device CA bundle (PEM) from caFile.
func NewX509DeviceVerifier(caFile string, revoked func(deviceID string, serial *big.Int) bool) (*X509DeviceVerifier, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("device CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("device CA: no PEM certificate in %s", caFile)
	}
	return &X509DeviceVerifier{roots: pool, Revoked: revoked}, nil
}

// VerifyDeviceCertificate implements DeviceCertVerifier: the leaf must chain to the
// device CA at now, allow client authentication, carry exactly one device URI SAN, and
// not be revoked.
func (v *X509DeviceVerifier) VerifyDeviceCertificate(chain []*x509.Certificate, now time.Time) (string, error) {
	if len(chain) == 0 {
		return "", errors.New("no certificate")
	}
	leaf := chain[0]
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: v.roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return "", err
	}
	id, err := DeviceIDFromCert(leaf)
	if err != nil {
		return "", err
	}
	if v.Revoked != nil && v.Revoked(id, leaf.SerialNumber) {
		return "", fmt.Errorf("certificate %s of device %s is revoked", leaf.SerialNumber, id)
	}
	return id, nil
}

// DeviceIDFromCert returns the device id of the certificate's only
// spiffe://condaccess/device/<id> URI SAN.
func DeviceIDFromCert(c *x509.Certificate) (string, error) {
	id := ""
	for _, u := range c.URIs {
		s := u.String()
		if !strings.HasPrefix(s, DeviceURIPrefix) {
			continue
		}
		if id != "" {
			return "", errors.New("more than one device URI SAN")
		}
		id = strings.TrimPrefix(s, DeviceURIPrefix)
	}
	if id == "" {
		return "", errors.New("no " + DeviceURIPrefix + "<id> URI SAN")
	}
	if !validID(id) {
		return "", fmt.Errorf("malformed device id in URI SAN")
	}
	return id, nil
}

// validID accepts the device and user ids of the contracts: 1-128 of [A-Za-z0-9._:@+-].
func validID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._:@+-", c) >= 0) {
			return false
		}
	}
	return true
}
