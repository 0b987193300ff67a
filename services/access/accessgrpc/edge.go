package accessgrpc

import (
	"context"
	"net/netip"
	"strings"
	"time"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/services/access"
	"github.com/condaccess/condaccess/services/access/accesscore"
	"github.com/condaccess/condaccess/services/access/edgeid"
	pe "github.com/condaccess/condaccess/services/access/policyengine"
)

// Reason codes of identities the enforcement points could not prove.
const (
	// ReasonUserTokenMissing: no user token, and the caller may not assert the user.
	ReasonUserTokenMissing = "USER_TOKEN_MISSING"
	// ReasonUserTokenInvalid: a token failed verification (signature, issuer,
	// audience, lifetime, algorithm, user claim).
	ReasonUserTokenInvalid = "USER_TOKEN_INVALID"
	// ReasonDeviceCertificateInvalid: a forwarded device certificate failed
	// verification (chain, validity, revocation, device SAN).
	ReasonDeviceCertificateInvalid = "DEVICE_CERTIFICATE_INVALID"
)

// Default header names of the forwarded credentials.
const (
	DefaultCertHeader     = "X-SSL-Client-Cert"
	PomeriumHeader        = "X-Pomerium-Jwt-Assertion"
	EnvoyExternalAddrHdr  = "x-envoy-external-address"
	forwardedForHeader    = "X-Forwarded-For"
	authorizationHeader   = "Authorization"
	bearerPrefix          = "bearer "
	maxIdentityErrMessage = 256
)

// Edge says what the enforcement points (/authz and Envoy's Check) trust.
type Edge struct {
	// Dev is development mode: every caller may assert the user, device and MFA in
	// headers (an unauthenticated /authz caller counts as "dev").
	Dev bool
	// TrustHeaders lets an authenticated enforcement point assert the user, device
	// and MFA in headers when it forwards no token or certificate.
	TrustHeaders bool
	// TrustedHops is the number of proxies whose X-Forwarded-For entries are trusted
	// (edgeid.ClientIP); at Check, more than 0 reads x-envoy-external-address.
	TrustedHops int
	// Tokens verifies bearer tokens and Pomerium assertions; nil accepts none.
	Tokens *edgeid.TokenVerifier
	// Devices verifies forwarded device certificates; nil accepts none.
	Devices *edgeid.DeviceCerts
	// CertHeader is the /authz header with the URL-encoded PEM device certificate
	// (default X-SSL-Client-Cert).
	CertHeader string
	// HelpURL, when set, is linked from the 403 body as HelpURL?ref=<sign-in id>.
	HelpURL string
	// ConsoleURL, when HelpURL is empty and it returns a base URL, links the 403 body to
	// the console's end-user page: <base>/blocked?ref=<sign-in id>.
	ConsoleURL func() string
	// BlockedRefs seals the reference of the console's end-user page link and opens it
	// in GetBlockedStatus/WatchBlockedStatus; nil: no such link, and every reference
	// is NOT_FOUND.
	BlockedRefs *accesscore.BlockedRefs
	// BlockedDetail is how much the end-user page may show (default CATEGORY).
	BlockedDetail accessv1.BlockedDetail
}

// SetEdge configures the enforcement points; call it before serving.
func (s *Server) SetEdge(e Edge) {
	if e.CertHeader == "" {
		e.CertHeader = DefaultCertHeader
	}
	s.edge = e
}

// forwarded is what an enforcement point sent about one request, before verification.
type forwarded struct {
	get        func(string) string // request header (case-insensitive)
	peer       netip.Addr          // the connection's peer (the proxy, or Envoy's downstream)
	xff        []string            // X-Forwarded-For values
	check      bool                // Envoy Check (else /authz)
	deviceCert string              // URL-encoded PEM
	app        string              // the application set by the proxy's configuration (Check's context_extensions), if any
}

// identity is what the edge made of a request: the engine request and how each
// identity was proven.
type identity struct {
	req    pe.Request
	opts   accesscore.DecideOptions
	caller string // the enforcement point
	err    string // why a presented credential was refused
}

func (s *Server) callerOf(ctx context.Context) (auth.Identity, bool) {
	id, ok := auth.FromContext(ctx)
	if !ok && s.edge.Dev {
		return auth.Identity{Subject: auth.DevSubject, Roles: auth.AllRoles()}, true
	}
	return id, ok
}

func mayAssert(e *Edge, caller auth.Identity) bool {
	return e.Dev || (e.TrustHeaders && caller.HasRole(commonv1.Role_ROLE_ENFORCEMENT_POINT))
}

func clip(s string) string {
	if len(s) > maxIdentityErrMessage {
		return s[:maxIdentityErrMessage]
	}
	return s
}

// resolve verifies what f forwards. Precedence of the refusals: an invalid token, an
// invalid certificate, then a missing user.
func (s *Server) resolve(ctx context.Context, f *forwarded, caller auth.Identity, now time.Time) identity {
	e := &s.edge
	var id identity
	id.caller = caller.Subject
	id.req.AppID = f.app
	if id.req.AppID == "" {
		id.req.AppID = f.get(s.headers.Application)
	}
	trusted := mayAssert(e, caller)

	// User.
	var tokenErr, certErr string
	raw, pomerium := "", false
	if e.Tokens.Pomerium() {
		raw, pomerium = f.get(PomeriumHeader), true
	}
	if raw == "" && e.Tokens.Enabled() {
		if a := f.get(authorizationHeader); len(a) > len(bearerPrefix) && strings.EqualFold(a[:len(bearerPrefix)], bearerPrefix) {
			raw, pomerium = strings.TrimSpace(a[len(bearerPrefix):]), false
		}
	}
	switch {
	case raw != "":
		c, err := e.Tokens.Verify(ctx, raw, pomerium, now)
		if err != nil {
			id.opts.UserProof, tokenErr = access.ProofNone, "user token: "+err.Error()
			break
		}
		// The claim is resolved to a directory user by Decide (external id first).
		id.opts.TokenSubject, id.opts.TokenIssuer, id.opts.TokenGroups = c.User, c.Issuer, c.Groups
		id.req.MFADone, id.opts.UserProof = c.MFA, access.ProofVerifiedToken
	case trusted && f.get(s.headers.User) != "":
		id.req.UserID, id.opts.UserProof = f.get(s.headers.User), access.ProofAssertedByCaller
		if s.headers.MFA != "" {
			id.req.MFADone = truthy(f.get(s.headers.MFA))
		}
	default:
		id.opts.UserProof = access.ProofNone
	}

	// Device.
	switch {
	case f.deviceCert != "" && e.Devices != nil:
		dev, err := e.Devices.Verify(f.deviceCert, now)
		if err != nil {
			id.opts.DeviceProof, certErr = access.ProofNone, "device certificate: "+err.Error()
			break
		}
		id.req.DeviceID, id.opts.DeviceProof = dev, access.ProofVerifiedCertificate
	case trusted && f.get(s.headers.Device) != "":
		id.req.DeviceID, id.opts.DeviceProof = f.get(s.headers.Device), access.ProofAssertedByCaller
	default:
		id.opts.DeviceProof = access.ProofNone
	}

	switch {
	case tokenErr != "":
		id.err = clip(tokenErr)
		id.opts.Block = &pe.Reason{Code: ReasonUserTokenInvalid, Message: "the user's token failed verification"}
	case certErr != "":
		id.err = clip(certErr)
		id.opts.Block = &pe.Reason{Code: ReasonDeviceCertificateInvalid, Message: "the device certificate failed verification"}
	case id.req.UserID == "" && id.opts.TokenSubject == "":
		id.opts.Block = &pe.Reason{Code: ReasonUserTokenMissing, Message: "no verified user token was presented"}
	}
	if len(id.req.UserID) > 128 || len(id.req.DeviceID) > 128 {
		id.req.UserID, id.req.DeviceID = clipID(id.req.UserID), clipID(id.req.DeviceID)
		if id.opts.Block == nil {
			id.opts.Block = &pe.Reason{Code: ReasonInvalidRequest, Message: "user or device id longer than 128 characters"}
		}
	}

	// Client IP.
	switch {
	case f.check && e.TrustedHops > 0:
		if a, err := netip.ParseAddr(strings.TrimSpace(f.get(EnvoyExternalAddrHdr))); err == nil {
			id.req.IP = a.Unmap()
		}
	default:
		id.req.IP = edgeid.ClientIP(f.peer, f.xff, e.TrustedHops)
	}
	return id
}

func clipID(s string) string {
	if len(s) > 128 {
		return s[:128]
	}
	return s
}
