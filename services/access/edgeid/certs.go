package edgeid

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"
)

// MaxForwardedCert is the largest forwarded certificate (chain) accepted, in bytes.
const MaxForwardedCert = 16 << 10

// CertCacheTTL bounds how long a verified certificate is trusted without verifying it
// again, so that a revocation takes effect within it.
const CertCacheTTL = time.Second

// DeviceCerts verifies forwarded device certificates (URL-encoded PEM, as nginx's
// $ssl_client_escaped_cert and Envoy's attributes.source.certificate carry them) with
// a DeviceCertVerifier, caching each result by the certificate's hash for CertCacheTTL
// (never past the certificate's expiry).
type DeviceCerts struct {
	v     DeviceCertVerifier
	mu    sync.RWMutex
	cache map[[32]byte]certEntry
}

type certEntry struct {
	id    string
	until time.Time
}

const maxCacheEntries = 1 << 16

// NewDeviceCerts returns a DeviceCerts over v.
func NewDeviceCerts(v DeviceCertVerifier) *DeviceCerts {
	return &DeviceCerts{v: v, cache: map[[32]byte]certEntry{}}
}

// ParseForwardedCert decodes a URL-encoded PEM chain (leaf first).
func ParseForwardedCert(escaped string) ([]*x509.Certificate, error) {
	if len(escaped) > MaxForwardedCert {
		return nil, errors.New("forwarded certificate too large")
	}
	raw, err := url.QueryUnescape(escaped)
	if err != nil {
		return nil, fmt.Errorf("forwarded certificate: not URL-encoded: %w", err)
	}
	var chain []*x509.Certificate
	rest := []byte(raw)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("forwarded certificate: %w", err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, errors.New("forwarded certificate: no PEM certificate")
	}
	return chain, nil
}

// Verify returns the device id the forwarded certificate proves.
func (d *DeviceCerts) Verify(escaped string, now time.Time) (string, error) {
	key := sha256.Sum256([]byte(escaped))
	d.mu.RLock()
	e, ok := d.cache[key]
	d.mu.RUnlock()
	if ok && now.Before(e.until) {
		return e.id, nil
	}
	chain, err := ParseForwardedCert(escaped)
	if err != nil {
		return "", err
	}
	id, err := d.v.VerifyDeviceCertificate(chain, now)
	if err != nil {
		return "", err
	}
	until := now.Add(CertCacheTTL)
	if na := chain[0].NotAfter; na.Before(until) {
		until = na
	}
	d.mu.Lock()
	if len(d.cache) >= maxCacheEntries {
		clear(d.cache)
	}
	d.cache[key] = certEntry{id: id, until: until}
	d.mu.Unlock()
	return id, nil
}
