package auth

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"time"
)

// fileStamp identifies a version of a file (modification time and size).
type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size()}, nil
}

// keyMaterial is a certificate and key, and optionally a CA bundle, read from files
// and read again when one of them changes, so that rotated certificates (written
// over the old files, as cert-manager or a renewal job does) take effect on the next
// handshake without a restart. Established connections keep the certificates they
// were made with.
//
// A change that does not load (a key that does not match the certificate while the
// files are being replaced, a CA file without a certificate) keeps the previous,
// working material; the next handshake tries again.
type keyMaterial struct {
	certFile, keyFile, caFile, deviceCAFile string

	mu     sync.Mutex
	stamps [4]fileStamp
	cert   *tls.Certificate
	pool   *x509.CertPool
}

// loadKeyMaterial reads the files once; an error here is fatal (start-up).
// deviceCAFile, optional, is added to the CA pool.
func loadKeyMaterial(certFile, keyFile, caFile, deviceCAFile string) (*keyMaterial, error) {
	k := &keyMaterial{certFile: certFile, keyFile: keyFile, caFile: caFile, deviceCAFile: deviceCAFile}
	stamps, err := k.stat()
	if err != nil {
		return nil, err
	}
	if err := k.load(stamps); err != nil {
		return nil, err
	}
	return k, nil
}

func (k *keyMaterial) stat() ([4]fileStamp, error) {
	var s [4]fileStamp
	for i, f := range []string{k.certFile, k.keyFile, k.caFile, k.deviceCAFile} {
		if f == "" {
			continue
		}
		st, err := stampOf(f)
		if err != nil {
			return s, fmt.Errorf("auth: %w", err)
		}
		s[i] = st
	}
	return s, nil
}

// load reads the files and, when they load, makes them current. k.mu is held (or k
// is not shared yet).
func (k *keyMaterial) load(stamps [4]fileStamp) error {
	cert, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		return fmt.Errorf("auth: load key pair %s: %w", k.certFile, err)
	}
	var pool *x509.CertPool
	if k.caFile != "" {
		if pool, err = loadPool(k.caFile); err != nil {
			return err
		}
		if k.deviceCAFile != "" {
			certs, err := loadCerts(k.deviceCAFile)
			if err != nil {
				return err
			}
			for _, c := range certs {
				pool.AddCert(c)
			}
		}
	}
	k.cert, k.pool, k.stamps = &cert, pool, stamps
	return nil
}

// current returns the certificate and CA pool, reloading the files first if any
// of them changed since they were last loaded.
func (k *keyMaterial) current() (*tls.Certificate, *x509.CertPool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if stamps, err := k.stat(); err == nil && stamps != k.stamps {
		_ = k.load(stamps) // on failure the previous material stays (see keyMaterial)
	}
	return k.cert, k.pool
}

// serverTLSConfig is the server's TLS configuration: TLS 1.3, a client certificate
// chaining to the CA bundle verified when given, certificate and CA bundle read again on the
// first handshake after either changes.
func serverTLSConfig(k *keyMaterial) *tls.Config {
	base := &tls.Config{
		// Requested, verified when given, not required: EnrollDeviceIdentity is
		// called before the device has a certificate; the Authorizer refuses
		// every other method without one.
		ClientAuth: tls.VerifyClientCertIfGiven,
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"h2"}, // gRPC's ALPN (the per-handshake config replaces the outer one)
	}
	cfg := base.Clone()
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cert, pool := k.current()
		c := base.Clone()
		c.Certificates = []tls.Certificate{*cert}
		c.ClientCAs = pool
		return c, nil
	}
	return cfg
}
