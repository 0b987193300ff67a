package devca_test

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/devca"
)

func TestGenerateLoadIssue(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	ca, err := devca.Generate(cert, key, "test")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if _, err := devca.Load(cert, key); err != nil {
		t.Fatalf("Load: %v", err)
	}
	// A key that is not the CA's is refused.
	other := t.TempDir()
	if _, err := devca.Generate(filepath.Join(other, "ca.pem"), filepath.Join(other, "ca-key.pem"), "other"); err != nil {
		t.Fatal(err)
	}
	if _, err := devca.Load(cert, filepath.Join(other, "ca-key.pem")); err == nil {
		t.Error("Load accepted another CA's key")
	}

	_, csrPEM, err := devca.NewCSR()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := devca.ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, tt := range []struct {
		name, id string
		ttl      time.Duration
		ok       bool
	}{
		{"day", "dev-1", 24 * time.Hour, true},
		{"beyond the CA", "dev-1", 100 * 365 * 24 * time.Hour, true},
		{"id with a slash", "dev/1", time.Hour, false},
		{"empty id", "", time.Hour, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			iss, err := ca.Issue(pub, tt.id, now, tt.ttl)
			if (err == nil) != tt.ok {
				t.Fatalf("Issue = %v, want ok %v", err, tt.ok)
			}
			if !tt.ok {
				return
			}
			b, _ := pem.Decode(iss.CertPEM)
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if c.NotAfter.After(ca.Certificate().NotAfter) {
				t.Errorf("certificate outlives its CA: %v > %v", c.NotAfter, ca.Certificate().NotAfter)
			}
			pool := x509.NewCertPool()
			pool.AddCert(ca.Certificate())
			v := auth.DeviceVerifier{Roots: pool}
			if id, err := v.Verify([]*x509.Certificate{c}, now.Add(time.Minute)); err != nil || id != tt.id {
				t.Errorf("Verify = %q, %v", id, err)
			}
		})
	}
}

func TestParseCSRTrailingData(t *testing.T) {
	_, csrPEM, err := devca.NewCSR()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := devca.ParseCSR(append(csrPEM, []byte("more")...)); !errors.Is(err, devca.ErrBadCSR) {
		t.Errorf("ParseCSR with trailing data = %v, want ErrBadCSR", err)
	}
	if _, err := devca.ParseCSR(append(csrPEM, '\n')); err != nil {
		t.Errorf("ParseCSR with a trailing newline = %v", err)
	}
}
