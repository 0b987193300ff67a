package ssf

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"database/sql"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/condaccess/condaccess/internal/dbtx"
)

// PGKeyRing is the transmitter's signing key in the PostgreSQL store, shared by every
// replica: each signs with the current key and publishes the current and the previous
// one (as KeyRing does with files). It reads the keys again every refresh, so a
// rotation (RotatePGKey) reaches every replica within that.
type PGKeyRing struct {
	st      *Store
	refresh time.Duration

	mu        sync.Mutex
	loaded    time.Time
	curPEM    []byte
	prevPEM   []byte
	cur, prev *Signer
}

var _ Keys = (*PGKeyRing)(nil)

// OpenPGKeyRing loads the store's keys, generating (once, for every replica) the first
// key when there is none. st must be a PostgreSQL store.
func OpenPGKeyRing(ctx context.Context, st *Store) (*PGKeyRing, error) {
	if st.pg == nil {
		return nil, errors.New("ssf: the shared key ring needs the PostgreSQL store")
	}
	k := &PGKeyRing{st: st, refresh: 5 * time.Second}
	var have int
	if err := st.read.QueryRowContext(ctx, `SELECT count(*) FROM signing_keys WHERE slot = 'current'`).Scan(&have); err != nil {
		return nil, err
	}
	if have == 0 {
		b, err := newKeyPEM()
		if err != nil {
			return nil, err
		}
		// Two replicas starting together: the first insert wins, both use its key.
		if err := st.write(ctx, func(tx dbtx.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO signing_keys(slot, pem) VALUES ('current', $1) ON CONFLICT DO NOTHING`, b)
			return err
		}); err != nil {
			return nil, err
		}
	}
	if _, _, err := k.keys(ctx, true); err != nil {
		return nil, err
	}
	return k, nil
}

func newKeyPEM() ([]byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, keyBits)
	if err != nil {
		return nil, fmt.Errorf("ssf: generate signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// keys returns the current and previous signers, read again from the database once
// refresh has passed (or force).
func (k *PGKeyRing) keys(ctx context.Context, force bool) (cur, prev *Signer, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !force && k.cur != nil && time.Since(k.loaded) < k.refresh {
		return k.cur, k.prev, nil
	}
	var curPEM, prevPEM []byte
	rows, err := k.st.read.QueryContext(ctx, `SELECT slot, pem FROM signing_keys`)
	if err != nil {
		return k.cur, k.prev, fmt.Errorf("ssf: signing keys: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var slot string
		var b []byte
		if err := rows.Scan(&slot, &b); err != nil {
			return k.cur, k.prev, err
		}
		if slot == "current" {
			curPEM = b
		} else {
			prevPEM = b
		}
	}
	if err := rows.Err(); err != nil {
		return k.cur, k.prev, err
	}
	if curPEM == nil {
		return k.cur, k.prev, errors.New("ssf: no current signing key in the database")
	}
	if !bytes.Equal(curPEM, k.curPEM) {
		s, err := parseSigner("signing_keys current", curPEM)
		if err != nil {
			return k.cur, k.prev, err
		}
		k.cur, k.curPEM = s, curPEM
	}
	if prevPEM == nil {
		k.prev, k.prevPEM = nil, nil
	} else if !bytes.Equal(prevPEM, k.prevPEM) {
		s, err := parseSigner("signing_keys previous", prevPEM)
		if err != nil {
			return k.cur, k.prev, err
		}
		k.prev, k.prevPEM = s, prevPEM
	}
	k.loaded = time.Now()
	return k.cur, k.prev, nil
}

// Sign signs with the current key.
func (k *PGKeyRing) Sign(claims any) (string, error) {
	cur, _, err := k.keys(context.Background(), false)
	if err != nil {
		return "", err
	}
	return cur.Sign(claims)
}

// JWKS publishes the current key, then the previous one (the last good keys when the
// database does not answer).
func (k *PGKeyRing) JWKS() jose.JSONWebKeySet {
	cur, prev, _ := k.keys(context.Background(), false)
	if cur == nil {
		return jose.JSONWebKeySet{}
	}
	out := cur.JWKS()
	if prev != nil && prev.KeyID() != cur.KeyID() {
		out.Keys = append(out.Keys, prev.JWKS().Keys...)
	}
	return out
}

// RotatePGKey makes a new current key in the PostgreSQL store and keeps the old one as
// the previous key (the one before it is dropped), in one transaction.
func RotatePGKey(ctx context.Context, st *Store) (kid string, err error) {
	if st.pg == nil {
		return "", errors.New("ssf: RotatePGKey needs the PostgreSQL store")
	}
	b, err := newKeyPEM()
	if err != nil {
		return "", err
	}
	err = st.write(ctx, func(tx dbtx.Tx) error {
		var old []byte
		err := tx.QueryRowContext(ctx, `SELECT pem FROM signing_keys WHERE slot = 'current' FOR UPDATE`).Scan(&old)
		if errors.Is(err, sql.ErrNoRows) {
			return errors.New("ssf: no signing key to rotate")
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO signing_keys(slot, pem) VALUES ('previous', $1) ON CONFLICT (slot) DO UPDATE SET pem = excluded.pem`, old); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE signing_keys SET pem = $1 WHERE slot = 'current'`, b)
		return err
	})
	if err != nil {
		return "", err
	}
	s, err := parseSigner("new key", b)
	if err != nil {
		return "", err
	}
	return s.KeyID(), nil
}
