package compliance

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/condaccess/condaccess/internal/audit"
	"time"

	"github.com/condaccess/condaccess/internal/devca"
)

// Errors of the device identity operations.
var (
	// ErrEnrollmentTokenInvalid: the token is unknown, used or expired (one answer
	// for all three).
	ErrEnrollmentTokenInvalid = errors.New("enrollment token invalid")
	// ErrIdentityNotFound: the device never had an identity.
	ErrIdentityNotFound = errors.New("device has no identity")
	// ErrIdentityRevoked: the device's identity is revoked.
	ErrIdentityRevoked = errors.New("device identity revoked")
	// ErrCertificateSuperseded: the caller's certificate was issued before the
	// device's latest enrollment (the device enrolled again since): it may not renew.
	ErrCertificateSuperseded = errors.New("device certificate issued before the device's latest enrollment")
	// ErrNoDeviceCA: the service has no device CA configured.
	ErrNoDeviceCA = errors.New("no device CA configured")
)

// Defaults of the device identity operations.
const (
	DefaultEnrollmentTokenTTL = time.Hour
	MaxEnrollmentTokenTTL     = 7 * 24 * time.Hour
	DefaultDeviceCertTTL      = 24 * time.Hour
)

// IdentityState is the state of a device identity.
type IdentityState int32

// Identity states (the values of condaccess.compliance.v1.DeviceIdentityState).
const (
	IdentityStateUnspecified IdentityState = 0
	IdentityStateActive      IdentityState = 1
	IdentityStateRevoked     IdentityState = 2
)

// DeviceIdentity is a device's proven identity: its latest certificate and state.
type DeviceIdentity struct {
	DeviceID     string        `json:"device_id"`
	Serial       string        `json:"serial"`
	IssueTime    time.Time     `json:"issue_time"`
	ExpireTime   time.Time     `json:"expire_time"`
	State        IdentityState `json:"state"`
	RevokeTime   time.Time     `json:"revoke_time,omitzero"`
	RevokeReason string        `json:"revoke_reason,omitempty"`
	// EnrollTime is the NotBefore of the certificate of the latest enrollment: only
	// certificates issued at or after it renew (zero in records from before it was
	// kept: any certificate renews).
	EnrollTime time.Time `json:"enroll_time,omitzero"`
}

// EnrollmentToken is a stored enrollment token: only the SHA-256 of the token.
type EnrollmentToken struct {
	Hash       string    `json:"hash"`
	DeviceID   string    `json:"device_id"`
	ExpireTime time.Time `json:"expire_time"`
}

// IssuedCertificate is what enrollment and renewal return.
type IssuedCertificate struct {
	DeviceID    string
	CertPEM     []byte
	CABundlePEM []byte
	ExpireTime  time.Time
}

// IdentityConfig configures the device identity operations of a Service.
type IdentityConfig struct {
	// CA signs device certificates; nil refuses enrollment and renewal.
	CA *devca.CA
	// CABundlePEM is returned to devices: the CAs the servers' certificates chain to.
	CABundlePEM []byte
	// CertTTL is the device certificates' lifetime (default DefaultDeviceCertTTL).
	CertTTL time.Duration
}

// SetIdentityConfig sets the device CA and certificate lifetime; call before serving.
func (s *Service) SetIdentityConfig(c IdentityConfig) {
	if c.CertTTL <= 0 {
		c.CertTTL = DefaultDeviceCertTTL
	}
	s.idcfg = c
}

func tokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// CreateEnrollmentToken creates a single-use token for an enrolled, not retired
// device, valid ttl (default one hour). Only its hash is stored.
func (s *Service) CreateEnrollmentToken(ctx context.Context, deviceID string, ttl time.Duration) (string, time.Time, error) {
	if ttl == 0 {
		ttl = DefaultEnrollmentTokenTTL
	}
	if ttl < 0 || ttl > MaxEnrollmentTokenTTL {
		return "", time.Time{}, &InvalidError{Violations: []Violation{{Field: "ttl", Description: "must be between 0 (default 1h) and 7 days"}}}
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", time.Time{}, err
	}
	token := base64.RawURLEncoding.EncodeToString(raw[:])
	now := s.clock()
	exp := now.Add(ttl)
	err := s.update(ctx, func(tx Tx) error {
		d, err := tx.Device(ctx, deviceID)
		if err != nil {
			return err
		}
		if d.Retired {
			return fmt.Errorf("%w: %s", ErrDeviceRetired, deviceID)
		}
		if err := tx.PutEnrollmentToken(ctx, &EnrollmentToken{Hash: tokenHash(token), DeviceID: deviceID, ExpireTime: exp}); err != nil {
			return err
		}
		// The audit names the device and the expiry, never the token or its hash.
		return tx.Audit(ctx, audit.Change{ResourceType: AuditEnrollmentToken, ResourceID: deviceID,
			After: struct {
				DeviceID   string    `json:"device_id"`
				ExpireTime time.Time `json:"expire_time"`
			}{deviceID, exp}})
	})
	if err != nil {
		return "", time.Time{}, err
	}
	return token, exp, nil
}

// EnrollDeviceIdentity exchanges a token and a CSR for the device's certificate. The
// CSR is checked first (a bad CSR does not use the token); the token is deleted in
// the transaction that records the identity and its event.
func (s *Service) EnrollDeviceIdentity(ctx context.Context, token string, csrPEM []byte) (IssuedCertificate, error) {
	pub, err := devca.ParseCSR(csrPEM)
	if err != nil {
		return IssuedCertificate{}, &InvalidError{Violations: []Violation{{Field: "csr_pem", Description: err.Error()}}}
	}
	if s.idcfg.CA == nil {
		return IssuedCertificate{}, ErrNoDeviceCA
	}
	now := s.clock()
	var out IssuedCertificate
	err = s.update(ctx, func(tx Tx) error {
		t, err := tx.EnrollmentToken(ctx, tokenHash(token))
		if err != nil {
			return err
		}
		if t == nil || !now.Before(t.ExpireTime) {
			return ErrEnrollmentTokenInvalid
		}
		if err := tx.DeleteEnrollmentToken(ctx, t.Hash); err != nil {
			return err
		}
		d, err := tx.Device(ctx, t.DeviceID)
		if errors.Is(err, ErrDeviceNotFound) {
			return ErrEnrollmentTokenInvalid
		} else if err != nil {
			return err
		}
		if d.Retired {
			return fmt.Errorf("%w: %s", ErrDeviceRetired, d.ID)
		}
		out, err = s.issue(ctx, tx, d.ID, pub, now, time.Time{})
		return err
	})
	return out, err
}

// RenewDeviceCertificate issues a new certificate to device deviceID (the caller's
// authenticated identity, whose certificate was issued at issued) for a new key. A
// certificate issued before the device's latest enrollment does not renew
// (ErrCertificateSuperseded): enrolling a device again leaves its earlier keys, say a
// stolen one, only their remaining lifetime.
func (s *Service) RenewDeviceCertificate(ctx context.Context, deviceID string, issued time.Time, csrPEM []byte) (IssuedCertificate, error) {
	pub, err := devca.ParseCSR(csrPEM)
	if err != nil {
		return IssuedCertificate{}, &InvalidError{Violations: []Violation{{Field: "csr_pem", Description: err.Error()}}}
	}
	if s.idcfg.CA == nil {
		return IssuedCertificate{}, ErrNoDeviceCA
	}
	now := s.clock()
	var out IssuedCertificate
	err = s.update(ctx, func(tx Tx) error {
		id, err := tx.DeviceIdentity(ctx, deviceID)
		if err != nil {
			return err
		}
		if id == nil {
			return fmt.Errorf("%w: %s", ErrIdentityNotFound, deviceID)
		}
		if id.State == IdentityStateRevoked {
			return fmt.Errorf("%w: %s", ErrIdentityRevoked, deviceID)
		}
		if !id.EnrollTime.IsZero() && issued.Before(id.EnrollTime) {
			return fmt.Errorf("%w: %s enrolled at %s, the certificate was issued at %s", ErrCertificateSuperseded, deviceID,
				id.EnrollTime.Format(time.RFC3339), issued.UTC().Format(time.RFC3339))
		}
		d, err := tx.Device(ctx, deviceID)
		if err != nil {
			return err
		}
		if d.Retired {
			return fmt.Errorf("%w: %s", ErrDeviceRetired, deviceID)
		}
		out, err = s.issue(ctx, tx, deviceID, pub, now, id.EnrollTime)
		return err
	})
	return out, err
}

// issue signs a certificate and records the active identity and its event in tx.
// enrolled is the identity's enrollment time for a renewal, zero for an enrollment
// (this certificate's NotBefore becomes it).
func (s *Service) issue(ctx context.Context, tx Tx, deviceID string, pub *ecdsa.PublicKey, now, enrolled time.Time) (IssuedCertificate, error) {
	iss, err := s.idcfg.CA.Issue(pub, deviceID, now, s.idcfg.CertTTL)
	if err != nil {
		return IssuedCertificate{}, err
	}
	if enrolled.IsZero() {
		enrolled = iss.NotBefore
	}
	id := &DeviceIdentity{DeviceID: deviceID, Serial: iss.Serial, IssueTime: iss.NotBefore, ExpireTime: iss.NotAfter, State: IdentityStateActive, EnrollTime: enrolled}
	if err := tx.PutDeviceIdentity(ctx, id); err != nil {
		return IssuedCertificate{}, err
	}
	if err := s.appendEvent(ctx, tx, Event{IdentityChanged: id}, now); err != nil {
		return IssuedCertificate{}, err
	}
	bundle := s.idcfg.CABundlePEM
	if len(bundle) == 0 {
		bundle = s.idcfg.CA.CertPEM()
	}
	return IssuedCertificate{DeviceID: deviceID, CertPEM: iss.CertPEM, CABundlePEM: bundle, ExpireTime: iss.NotAfter}, nil
}

// RevokeDeviceIdentity revokes a device's identity: every certificate issued to it so
// far is refused from the event on.
func (s *Service) RevokeDeviceIdentity(ctx context.Context, deviceID, reason string) (*DeviceIdentity, error) {
	now := s.clock()
	var out *DeviceIdentity
	err := s.update(ctx, func(tx Tx) error {
		var err error
		out, err = s.revoke(ctx, tx, deviceID, reason, now)
		if err == nil && out == nil {
			err = fmt.Errorf("%w: %s", ErrIdentityNotFound, deviceID)
		}
		return err
	})
	return out, err
}

// revoke revokes deviceID's identity in tx; nil without an identity.
func (s *Service) revoke(ctx context.Context, tx Tx, deviceID, reason string, now time.Time) (*DeviceIdentity, error) {
	cur, err := tx.DeviceIdentity(ctx, deviceID)
	if err != nil || cur == nil {
		return nil, err
	}
	if cur.State == IdentityStateRevoked {
		return nil, fmt.Errorf("%w: %s (since %s)", ErrIdentityRevoked, deviceID, cur.RevokeTime.Format(time.RFC3339))
	}
	id := *cur
	id.State, id.RevokeTime, id.RevokeReason = IdentityStateRevoked, now, reason
	if err := tx.PutDeviceIdentity(ctx, &id); err != nil {
		return nil, err
	}
	if err := tx.Audit(ctx, audit.Change{ResourceType: AuditDeviceIdentity, ResourceID: deviceID, Before: cur, After: &id}); err != nil {
		return nil, err
	}
	if err := s.appendEvent(ctx, tx, Event{IdentityChanged: &id}, now); err != nil {
		return nil, err
	}
	return &id, nil
}

// ListDeviceIdentities lists identities by device id after after, at most limit.
func (s *Service) ListDeviceIdentities(ctx context.Context, after string, limit int) ([]*DeviceIdentity, error) {
	return s.st.ListDeviceIdentities(ctx, after, limit)
}
