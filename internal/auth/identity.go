package auth

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/apierr"
)

// Kind is how a caller was authenticated.
type Kind int

// The kinds of caller.
const (
	// KindUnknown is the zero value: no identity.
	KindUnknown Kind = iota
	// KindDevelopment is every caller in insecure development mode (configuration,
	// never a certificate).
	KindDevelopment
	// KindRoleCertificate is a certificate from the role CA granting roles through
	// spiffe://condaccess/role/<role> URI SANs (admins, readers, enforcement points,
	// static non-device sensors).
	KindRoleCertificate
	// KindService is a certificate from the role CA naming a condaccess service with
	// spiffe://condaccess/service/<name>.
	KindService
	// KindDevice is a certificate from the device CA naming a device with
	// spiffe://condaccess/device/<id>.
	KindDevice
	// KindConsoleSession is a person signed in to the console with the OIDC issuer
	// (authorization code with PKCE); roles from --console-role-map. Only the HTTP
	// face sets it, on a request with a valid session cookie and the Connect header.
	KindConsoleSession
)

// String returns the kind's name, e.g. "device".
func (k Kind) String() string {
	switch k {
	case KindDevelopment:
		return "development"
	case KindRoleCertificate:
		return "role-certificate"
	case KindService:
		return "service"
	case KindDevice:
		return "device"
	case KindConsoleSession:
		return "console-session"
	}
	return "unknown"
}

// DeviceURIPrefix prefixes the URI SAN of a device certificate:
// spiffe://condaccess/device/<device_id>. It counts only on a certificate that
// chains to the device CA.
const DeviceURIPrefix = "spiffe://condaccess/device/"

// ServiceURIPrefix prefixes the URI SAN of a service certificate:
// spiffe://condaccess/service/<name>.
const ServiceURIPrefix = "spiffe://condaccess/service/"

// ServiceNames lists the condaccess services that may hold a service identity.
var ServiceNames = []string{"risk", "compliance", "access", "remediation"}

// Error reasons of the identity checks.
const (
	ReasonCertificateRevoked = "CERTIFICATE_REVOKED"
	ReasonCertificateExpired = "CERTIFICATE_EXPIRED"
	ReasonDeviceMismatch     = "DEVICE_MISMATCH"
	// ReasonCertificateSuperseded: a renewal with a device certificate issued before
	// the device's latest enrollment.
	ReasonCertificateSuperseded = "CERTIFICATE_SUPERSEDED"
	// ReasonRevocationStatusUnknown: the process does not know the current
	// revocations (its feed has not caught up, or is broken), so it accepts no
	// device certificate for now (fail closed; the device retries).
	ReasonRevocationStatusUnknown = "REVOCATION_STATUS_UNKNOWN"
)

// Typed errors of DeviceVerifier.Verify.
var (
	// ErrCertificateExpired: the certificate is outside its validity period.
	ErrCertificateExpired = errors.New("auth: certificate expired or not yet valid")
	// ErrCertificateRevoked: the device's identity was revoked after the certificate
	// was issued.
	ErrCertificateRevoked = errors.New("auth: device certificate revoked")
	// ErrNotDeviceCertificate: the chain does not verify against the device CA, or the
	// certificate carries no single valid device URI SAN.
	ErrNotDeviceCertificate = errors.New("auth: not a device certificate of this device CA")
	// ErrRevocationStatusUnknown: the process's revocation feed has not caught up (or
	// has gone silent), so no device certificate is accepted: fail closed.
	ErrRevocationStatusUnknown = errors.New("auth: device revocation status unknown here yet")
)

// DeviceURI returns the URI SAN of device id.
func DeviceURI(id string) string { return DeviceURIPrefix + id }

// ServiceURI returns the URI SAN of service name.
func ServiceURI(name string) string { return ServiceURIPrefix + name }

// ValidDeviceID reports whether id may appear in a device URI: 1 to 128 characters
// from [A-Za-z0-9._-], the ids the compliance service accepts.
func ValidDeviceID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// DeviceIDFromCert returns the device id of cert's spiffe://condaccess/device/<id>
// URI SAN. ok is false unless cert carries exactly one URI SAN, a valid device URI.
// It does not verify the certificate: only a certificate verified against the device
// CA (DeviceVerifier, or the server's handshake) is a device identity.
func DeviceIDFromCert(cert *x509.Certificate) (string, bool) {
	if cert == nil || len(cert.URIs) != 1 {
		return "", false
	}
	s := cert.URIs[0].String()
	id, ok := strings.CutPrefix(s, DeviceURIPrefix)
	if !ok || !ValidDeviceID(id) {
		return "", false
	}
	return id, true
}

func serviceFromURI(u *url.URL) (string, bool) {
	name, ok := strings.CutPrefix(u.String(), ServiceURIPrefix)
	if !ok {
		return "", false
	}
	for _, n := range ServiceNames {
		if n == name {
			return name, true
		}
	}
	return "", false
}

// RevocationChecker answers whether a device certificate was revoked.
type RevocationChecker interface {
	// Revoked reports whether device id's identity was revoked at or after issued
	// (the certificate's NotBefore).
	Revoked(deviceID string, issued time.Time) bool
}

// Revocations is the in-memory revocation set of device identities, fed by the
// compliance event stream (identity revoked / enrolled). It is safe for concurrent
// use. A revocation refuses every certificate of the device issued at or before it;
// a later enrollment issues certificates after it, which pass.
type Revocations struct {
	unknown  atomic.Bool // the feed is not current: refuse every device
	mu       sync.Mutex
	revoked  map[string]time.Time
	current  map[string]bool // the device's identity is revoked now (no later enrollment)
	watchers map[string]map[*revocationWatch]struct{}
}

type revocationWatch struct{ ch chan struct{} }

// NewRevocations returns an empty revocation set.
func NewRevocations() *Revocations {
	return &Revocations{revoked: map[string]time.Time{}, current: map[string]bool{}, watchers: map[string]map[*revocationWatch]struct{}{}}
}

// Revoke records that device id was revoked at at, and ends every Watch of it.
func (r *Revocations) Revoke(deviceID string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if prev, ok := r.revoked[deviceID]; !ok || at.After(prev) {
		r.revoked[deviceID] = at
	}
	r.current[deviceID] = true
	for w := range r.watchers[deviceID] {
		close(w.ch)
	}
	delete(r.watchers, deviceID)
}

// SetCurrent records whether the set is current (its feed caught up and is
// connected). A set that is not current refuses every device certificate
// (REVOCATION_STATUS_UNKNOWN). A new set is current (no feed: nothing to wait for);
// a process with a feed marks it not current until the feed caught up.
func (r *Revocations) SetCurrent(current bool) { r.unknown.Store(!current) }

// Current reports whether the set is current.
func (r *Revocations) Current() bool { return !r.unknown.Load() }

// Reissued records that device id holds a certificate issued after its last
// revocation (it enrolled again): IsRevoked is false again; certificates issued
// before the revocation stay refused.
func (r *Revocations) Reissued(deviceID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.current, deviceID)
}

// IsRevoked reports whether device id's identity is revoked now (access decisions
// for it are BLOCK).
func (r *Revocations) IsRevoked(deviceID string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.current[deviceID]
}

// Revoked implements RevocationChecker.
func (r *Revocations) Revoked(deviceID string, issued time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.revoked[deviceID]
	return ok && !issued.After(at)
}

// Watch returns a channel closed when device id is revoked, and a function that
// ends the watch.
func (r *Revocations) Watch(deviceID string) (<-chan struct{}, func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := &revocationWatch{ch: make(chan struct{})}
	if r.watchers[deviceID] == nil {
		r.watchers[deviceID] = map[*revocationWatch]struct{}{}
	}
	r.watchers[deviceID][w] = struct{}{}
	return w.ch, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.watchers[deviceID], w)
	}
}

// DeviceVerifier verifies device certificates: the chain must verify against the
// device CA pool for client authentication at the given time, the leaf must carry
// one device URI SAN, and the device must not have been revoked since the leaf was
// issued. The access service's edge uses it for device certificates forwarded by
// enforcement points; the gRPC server applies the same rules to its TLS peers.
type DeviceVerifier struct {
	// Roots is the device CA pool.
	Roots *x509.CertPool
	// Revocations, when set, refuses revoked devices.
	Revocations RevocationChecker
}

// Verify verifies chain (leaf first, then any intermediates) at now and returns the
// device id. Errors wrap ErrCertificateExpired, ErrNotDeviceCertificate or
// ErrCertificateRevoked.
func (v *DeviceVerifier) Verify(chain []*x509.Certificate, now time.Time) (string, error) {
	if len(chain) == 0 || chain[0] == nil || v.Roots == nil {
		return "", ErrNotDeviceCertificate
	}
	leaf := chain[0]
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return "", fmt.Errorf("%w: valid %s to %s", ErrCertificateExpired,
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: v.Roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return "", fmt.Errorf("%w: %v", ErrNotDeviceCertificate, err)
	}
	id, ok := DeviceIDFromCert(leaf)
	if !ok {
		return "", fmt.Errorf("%w: no single %s<id> URI SAN", ErrNotDeviceCertificate, DeviceURIPrefix)
	}
	if c, ok := v.Revocations.(interface{ Current() bool }); ok && !c.Current() {
		return "", fmt.Errorf("%w: device %s", ErrRevocationStatusUnknown, id)
	}
	if v.Revocations != nil && v.Revocations.Revoked(id, leaf.NotBefore) {
		return "", fmt.Errorf("%w: device %s", ErrCertificateRevoked, id)
	}
	return id, nil
}

// deviceIdentity is the identity of device id, from a certificate issued (NotBefore)
// at issued: the sensor role, bound to itself.
func deviceIdentity(id string, issued time.Time) Identity {
	return Identity{Kind: KindDevice, ID: id, Subject: DeviceURI(id), Roles: []commonv1.Role{commonv1.Role_ROLE_SENSOR}, Issued: issued}
}

// CheckDevice refuses a device identity acting for another device: a caller
// authenticated as device D may act only for D (PERMISSION_DENIED, reason
// DEVICE_MISMATCH). Other kinds pass; their roles were checked by the interceptor.
func CheckDevice(ctx context.Context, deviceID string) error {
	id, ok := FromContext(ctx)
	if !ok || id.Kind != KindDevice || id.ID == deviceID {
		return nil
	}
	return deviceMismatch(id, deviceID)
}

// RequireDevice admits only device deviceID itself (or development mode): what an
// agent channel needs. Anything else is PERMISSION_DENIED, reason DEVICE_MISMATCH.
func RequireDevice(ctx context.Context, deviceID string) error {
	id, ok := FromContext(ctx)
	if ok && (id.Kind == KindDevelopment || id.Kind == KindDevice && id.ID == deviceID) {
		return nil
	}
	return deviceMismatch(id, deviceID)
}

func deviceMismatch(id Identity, deviceID string) error {
	who := id.Kind.String()
	if id.ID != "" {
		who += " " + id.ID
	}
	return apierr.WithMetadata(codes.PermissionDenied, ReasonDeviceMismatch,
		fmt.Sprintf("the caller (%s) may not act for device %q", who, deviceID),
		map[string]string{"device_id": deviceID})
}
