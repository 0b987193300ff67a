package edgeid

import (
	"crypto/x509"
	"fmt"
	"math/big"
	"time"

	"github.com/condaccess/condaccess/internal/auth"
)

// DeviceURIPrefix prefixes the URI SAN that names a device: spiffe://condaccess/device/<id>.
const DeviceURIPrefix = auth.DeviceURIPrefix

// DeviceCertVerifier verifies a device certificate chain (leaf first) and returns the
// device id it proves.
type DeviceCertVerifier interface {
	VerifyDeviceCertificate(chain []*x509.Certificate, now time.Time) (deviceID string, err error)
}

// X509DeviceVerifier verifies forwarded device certificates with the suite's one
// device-certificate check, auth.DeviceVerifier (device CA, client-auth usage, one
// device URI SAN, the process's revocation set), and asks Revoked (when set) about the
// certificate's serial as well.
type X509DeviceVerifier struct {
	v auth.DeviceVerifier
	// Revoked reports whether the certificate with this serial of this device is revoked.
	Revoked func(deviceID string, serial *big.Int) bool
}

// NewX509DeviceVerifier reads the device CA bundle (PEM) from caFile; revocations
// (may be nil) is the process's revocation set, fed by the compliance event stream.
func NewX509DeviceVerifier(caFile string, revocations auth.RevocationChecker, revoked func(deviceID string, serial *big.Int) bool) (*X509DeviceVerifier, error) {
	pool, err := auth.LoadDevicePool(caFile)
	if err != nil {
		return nil, fmt.Errorf("device CA: %w", err)
	}
	v := &X509DeviceVerifier{v: auth.DeviceVerifier{Roots: pool}, Revoked: revoked}
	if revocations != nil {
		v.v.Revocations = revocations
	}
	return v, nil
}

// VerifyDeviceCertificate implements DeviceCertVerifier.
func (v *X509DeviceVerifier) VerifyDeviceCertificate(chain []*x509.Certificate, now time.Time) (string, error) {
	id, err := v.v.Verify(chain, now)
	if err != nil {
		return "", err
	}
	if v.Revoked != nil && v.Revoked(id, chain[0].SerialNumber) {
		return "", fmt.Errorf("%w: certificate %s of device %s", auth.ErrCertificateRevoked, chain[0].SerialNumber, id)
	}
	return id, nil
}
