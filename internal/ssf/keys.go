// Package ssf is the OpenID Shared Signals (CAEP) transmitter and receiver: signed SETs, stream management, push and poll delivery.
package ssf

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/go-jose/go-jose/v4"
)

// SETType is the JOSE "typ" of a Security Event Token (RFC 8417 section 2.3).
const SETType = "secevent+jwt"

// keyBits is the size of the generated RSA signing key.
const keyBits = 2048

// Signer signs SETs with the transmitter's RSA key (RS256).
type Signer struct {
	key    *rsa.PrivateKey
	kid    string
	signer jose.Signer
}

// LoadOrCreateSigner reads the PEM (PKCS #8) RSA key at path, or generates a 2048-bit
// key and writes it there (mode 0600) when the file does not exist.
func LoadOrCreateSigner(path string) (*Signer, error) {
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		key, err := rsa.GenerateKey(rand.Reader, keyBits)
		if err != nil {
			return nil, fmt.Errorf("ssf: generate signing key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, fmt.Errorf("ssf: write signing key: %w", err)
		}
		if err := os.Rename(tmp, path); err != nil {
			return nil, fmt.Errorf("ssf: write signing key: %w", err)
		}
		return NewSigner(key)
	case err != nil:
		return nil, fmt.Errorf("ssf: read signing key: %w", err)
	}
	return parseSigner(path, b)
}

// parseSigner parses a PEM (PKCS #8) RSA key read from path.
func parseSigner(path string, b []byte) (*Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("ssf: %s: no PEM block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ssf: %s: %w", path, err)
	}
	key, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("ssf: %s: not an RSA key", path)
	}
	return NewSigner(key)
}

// NewSigner returns a Signer for key; the key id is the key's RFC 7638 thumbprint.
func NewSigner(key *rsa.PrivateKey) (*Signer, error) {
	if key.N.BitLen() < keyBits {
		return nil, fmt.Errorf("ssf: signing key has %d bits, want at least %d", key.N.BitLen(), keyBits)
	}
	pub := jose.JSONWebKey{Key: &key.PublicKey, Algorithm: string(jose.RS256), Use: "sig"}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, err
	}
	kid := base64.RawURLEncoding.EncodeToString(tp)
	opts := (&jose.SignerOptions{}).WithType(SETType).WithHeader("kid", kid)
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, opts)
	if err != nil {
		return nil, err
	}
	return &Signer{key: key, kid: kid, signer: s}, nil
}

// KeyID is the "kid" of the signing key.
func (s *Signer) KeyID() string { return s.kid }

// JWKS is the public key set published at jwks_uri.
func (s *Signer) JWKS() jose.JSONWebKeySet {
	return jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key: &s.key.PublicKey, KeyID: s.kid, Algorithm: string(jose.RS256), Use: "sig",
	}}}
}

// Sign serialises claims as JSON and returns the compact JWS.
func (s *Signer) Sign(claims any) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	obj, err := s.signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return obj.CompactSerialize()
}
