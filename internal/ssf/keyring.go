package ssf

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/go-jose/go-jose/v4"
)

// Keys signs SETs and publishes the keys that verify them.
type Keys interface {
	Sign(claims any) (string, error)
	JWKS() jose.JSONWebKeySet
}

// Key files in a key ring's directory.
const (
	currentKeyFile  = "signing-key.pem"
	previousKeyFile = "signing-key.previous.pem"
)

// KeyRing is the transmitter's signing key in a directory, rotated with overlap: it signs
// with the current key and publishes the current and the previous one, so SETs signed
// before a rotation (still queued, or cached by a receiver) keep verifying. It notices a
// rotation by another process (`condaccess ssf rotate-key`) on its next use.
type KeyRing struct {
	dir string

	mu   sync.Mutex
	seen os.FileInfo
	cur  *Signer
	prev *Signer
}

// OpenKeyRing loads the keys in dir, generating the first key when there is none.
func OpenKeyRing(dir string) (*KeyRing, error) {
	if _, err := LoadOrCreateSigner(filepath.Join(dir, currentKeyFile)); err != nil {
		return nil, err
	}
	k := &KeyRing{dir: dir}
	if err := k.reload(); err != nil {
		return nil, err
	}
	return k, nil
}

// reload reads the key files again when the current one was replaced.
func (k *KeyRing) reload() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	fi, err := os.Stat(filepath.Join(k.dir, currentKeyFile))
	if err != nil {
		return fmt.Errorf("ssf: signing key: %w", err)
	}
	if k.seen != nil && os.SameFile(k.seen, fi) && k.seen.ModTime().Equal(fi.ModTime()) {
		return nil
	}
	cur, err := readSigner(filepath.Join(k.dir, currentKeyFile))
	if err != nil {
		return err
	}
	prev, err := readSigner(filepath.Join(k.dir, previousKeyFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	k.seen, k.cur, k.prev = fi, cur, prev
	return nil
}

func readSigner(path string) (*Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseSigner(path, b)
}

func (k *KeyRing) keys() (cur, prev *Signer, err error) {
	if err := k.reload(); err != nil {
		return nil, nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cur, k.prev, nil
}

// Sign signs with the current key.
func (k *KeyRing) Sign(claims any) (string, error) {
	cur, _, err := k.keys()
	if err != nil {
		return "", err
	}
	return cur.Sign(claims)
}

// JWKS publishes the current key, then the previous one.
func (k *KeyRing) JWKS() jose.JSONWebKeySet {
	cur, prev, err := k.keys()
	if err != nil {
		k.mu.Lock()
		cur, prev = k.cur, k.prev // the last good keys
		k.mu.Unlock()
	}
	out := cur.JWKS()
	if prev != nil && prev.KeyID() != cur.KeyID() {
		out.Keys = append(out.Keys, prev.JWKS().Keys...)
	}
	return out
}

// RotateKey makes a new current key in dir and keeps the old one as the previous key
// (the one before it is dropped). The current key file exists at every step.
func RotateKey(dir string) (kid string, err error) {
	cur := filepath.Join(dir, currentKeyFile)
	old, err := os.ReadFile(cur)
	if err != nil {
		return "", fmt.Errorf("ssf: no signing key to rotate: %w", err)
	}
	key, err := rsa.GenerateKey(rand.Reader, keyBits)
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", err
	}
	if err := writeAtomic(filepath.Join(dir, previousKeyFile), old); err != nil {
		return "", err
	}
	if err := writeAtomic(cur, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
		return "", err
	}
	s, err := NewSigner(key)
	if err != nil {
		return "", err
	}
	return s.KeyID(), nil
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
