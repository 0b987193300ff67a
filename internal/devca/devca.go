// Package devca is the device certificate authority: it loads or generates the device CA and issues short-lived device certificates for certificate signing requests whose key was generated on the device.
package devca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/condaccess/condaccess/internal/auth"
)

// ErrBadCSR is returned for a certificate signing request that does not parse, is
// not signed by its own key, has a key other than ECDSA P-256, or asks for a name.
var ErrBadCSR = errors.New("devca: bad certificate signing request")

// CA signs device certificates.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
}

// Load reads the device CA certificate and its private key (PEM).
func Load(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("devca: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("devca: %w", err)
	}
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("devca: no PEM certificate in %s", certFile)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("devca: %s: %w", certFile, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("devca: %s is not a CA certificate", certFile)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, fmt.Errorf("devca: no PEM key in %s", keyFile)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		if ek, err2 := x509.ParseECPrivateKey(kb.Bytes); err2 == nil {
			k = ek
		} else {
			return nil, fmt.Errorf("devca: %s: %w", keyFile, err)
		}
	}
	signer, ok := k.(crypto.Signer)
	if !ok || !publicKeysEqual(signer.Public(), cert.PublicKey) {
		return nil, fmt.Errorf("devca: the key in %s does not match %s", keyFile, certFile)
	}
	return &CA{cert: cert, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cb.Bytes}), key: signer}, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// Generate creates a new device CA (ECDSA P-256, valid ten years) and writes it to
// certFile and keyFile (mode 0600).
func Generate(certFile, keyFile, commonName string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
		return nil, err
	}
	if err := WriteFileAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return nil, err
	}
	if err := WriteFileAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	return Load(certFile, keyFile)
}

// WriteFileAtomic writes data to a temporary file beside name and renames it over
// name, so that a reader sees the old or the new content, never half of it.
func WriteFileAtomic(name string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), name)
}

// CertPEM is the CA certificate, PEM.
func (ca *CA) CertPEM() []byte { return ca.certPEM }

// Certificate is the CA certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// ParseCSR parses and checks a PEM certificate signing request: signed by its own
// ECDSA P-256 key, asking for no subject, no SAN and no extension. It returns the
// public key. Errors wrap ErrBadCSR.
func ParseCSR(csrPEM []byte) (*ecdsa.PublicKey, error) {
	b, rest := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: no PEM CERTIFICATE REQUEST block", ErrBadCSR)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("%w: data after the CERTIFICATE REQUEST block", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrBadCSR, err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: the key must be ECDSA P-256", ErrBadCSR)
	}
	if len(csr.Subject.Names) > 0 || len(csr.DNSNames) > 0 || len(csr.EmailAddresses) > 0 ||
		len(csr.IPAddresses) > 0 || len(csr.URIs) > 0 || len(csr.Extensions) > 0 {
		return nil, fmt.Errorf("%w: the request must ask for no name (no subject, no SAN, no extension): "+
			"the certificate names the enrolled device", ErrBadCSR)
	}
	return pub, nil
}

// Issued is a device certificate.
type Issued struct {
	CertPEM     []byte
	Serial      string // lower-case hex
	NotBefore   time.Time
	NotAfter    time.Time
	DeviceID    string
	CABundlePEM []byte
}

// Issue signs a certificate for pub naming device id with only the URI SAN
// spiffe://condaccess/device/<id>, valid from now (to the second) for ttl, for
// client authentication.
func (ca *CA) Issue(pub *ecdsa.PublicKey, deviceID string, now time.Time, ttl time.Duration) (Issued, error) {
	if !auth.ValidDeviceID(deviceID) {
		return Issued{}, fmt.Errorf("devca: device id %q cannot appear in a certificate", deviceID)
	}
	u, err := url.Parse(auth.DeviceURI(deviceID))
	if err != nil {
		return Issued{}, err
	}
	serial, err := randomSerial()
	if err != nil {
		return Issued{}, err
	}
	nb := now.UTC().Truncate(time.Second)
	na := nb.Add(ttl)
	if na.After(ca.cert.NotAfter) {
		na = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    nb,
		NotAfter:     na,
		URIs:         []*url.URL{u},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return Issued{}, fmt.Errorf("devca: sign: %w", err)
	}
	return Issued{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Serial:  fmt.Sprintf("%x", serial), NotBefore: nb, NotAfter: na, DeviceID: deviceID,
	}, nil
}

func randomSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}

// NewCSR generates an ECDSA P-256 key and a certificate signing request asking for
// no name: what a device sends to enroll or renew. It returns the PEM key and CSR.
func NewCSR() (keyPEM, csrPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}
