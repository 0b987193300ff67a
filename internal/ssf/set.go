package ssf

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Event type URIs (CAEP 1.0 and SSF 1.0).
const (
	EventDeviceComplianceChange = "https://schemas.openid.net/secevent/caep/event-type/device-compliance-change"
	EventSessionRevoked         = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
	EventRiskLevelChange        = "https://schemas.openid.net/secevent/caep/event-type/risk-level-change"
	EventVerification           = "https://schemas.openid.net/secevent/ssf/event-type/verification"
	EventStreamUpdated          = "https://schemas.openid.net/secevent/ssf/event-type/stream-updated"
)

// Delivery method URIs.
const (
	DeliveryPush = "urn:ietf:rfc:8935"
	DeliveryPoll = "urn:ietf:rfc:8936"
)

// SupportedEvents are the CAEP events this transmitter emits.
var SupportedEvents = []string{EventDeviceComplianceChange, EventSessionRevoked, EventRiskLevelChange}

// Subject is a subject identifier (RFC 9493) or an SSF complex subject. Only the members
// condaccess uses are modelled.
type Subject struct {
	Format string `json:"format"`
	// Simple subject members.
	ID    string `json:"id,omitempty"`
	Iss   string `json:"iss,omitempty"`
	Sub   string `json:"sub,omitempty"`
	Email string `json:"email,omitempty"`
	// Complex subject members.
	User    *Subject `json:"user,omitempty"`
	Device  *Subject `json:"device,omitempty"`
	Session *Subject `json:"session,omitempty"`
}

// members returns the simple subjects inside s (s itself when simple).
func (s *Subject) members() []*Subject {
	if s == nil {
		return nil
	}
	if s.Format != "complex" {
		return []*Subject{s}
	}
	var out []*Subject
	for _, m := range []*Subject{s.User, s.Device, s.Session} {
		if m != nil {
			out = append(out, m)
		}
	}
	return out
}

// key is a canonical string for a simple subject.
func (s *Subject) key() string {
	b, _ := json.Marshal(Subject{Format: s.Format, ID: s.ID, Iss: s.Iss, Sub: s.Sub, Email: s.Email})
	return string(b)
}

// Audience is the "aud" claim: a string or an array of strings.
type Audience []string

// MarshalJSON writes one audience as a string.
func (a Audience) MarshalJSON() ([]byte, error) {
	if len(a) == 1 {
		return json.Marshal(a[0])
	}
	return json.Marshal([]string(a))
}

// UnmarshalJSON accepts a string or an array of strings.
func (a *Audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = Audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("aud is neither a string nor an array of strings")
	}
	*a = many
	return nil
}

// Claims are the claims of an SSF SET (no "sub", no "exp": SSF 1.0 section 4.1).
type Claims struct {
	Iss    string                     `json:"iss"`
	Jti    string                     `json:"jti"`
	Iat    int64                      `json:"iat"`
	Aud    Audience                   `json:"aud"`
	Txn    string                     `json:"txn,omitempty"`
	SubID  *Subject                   `json:"sub_id"`
	Events map[string]json.RawMessage `json:"events"`
}

// Verification failures, as RFC 8935 section 2.3 error codes.
const (
	ErrCodeInvalidRequest = "invalid_request"
	ErrCodeInvalidKey     = "invalid_key"
	ErrCodeInvalidIssuer  = "invalid_issuer"
	ErrCodeInvalidAud     = "invalid_audience"
	ErrCodeAuthFailed     = "authentication_failed"
	ErrCodeAccessDenied   = "access_denied"
)

// SETError is a refused SET with its RFC 8935 error code.
type SETError struct {
	Code        string
	Description string
}

func (e *SETError) Error() string { return e.Code + ": " + e.Description }

func setErr(code, format string, args ...any) error {
	return &SETError{Code: code, Description: fmt.Sprintf(format, args...)}
}

// VerifyOptions say what a SET must satisfy.
type VerifyOptions struct {
	Issuer   string
	Audience string
	Keys     jose.JSONWebKeySet
	// MaxAge bounds how old "iat" may be; Skew how far in the future.
	MaxAge, Skew time.Duration
	Now          time.Time
}

// VerifySET checks a compact SET's type, signature (RS256 or ES256, key by "kid" from
// the set), issuer, audience and "iat", and returns its claims.
func VerifySET(token string, o VerifyOptions) (*Claims, error) {
	jws, err := jose.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.PS256})
	if err != nil {
		return nil, setErr(ErrCodeInvalidRequest, "not a signed JWT: %v", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, setErr(ErrCodeInvalidRequest, "want exactly one signature")
	}
	h := jws.Signatures[0].Header
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != SETType && typ != "application/"+SETType {
		return nil, setErr(ErrCodeInvalidRequest, "JOSE typ %q is not %s", typ, SETType)
	}
	keys := o.Keys.Key(h.KeyID)
	if h.KeyID == "" {
		keys = o.Keys.Keys
	}
	if len(keys) == 0 {
		return nil, setErr(ErrCodeInvalidKey, "no key %q in the issuer's JWKS", h.KeyID)
	}
	var payload []byte
	for _, k := range keys {
		if payload, err = jws.Verify(k); err == nil {
			break
		}
	}
	if err != nil {
		return nil, setErr(ErrCodeInvalidKey, "signature does not verify")
	}
	var c Claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, setErr(ErrCodeInvalidRequest, "claims: %v", err)
	}
	var extra map[string]json.RawMessage
	_ = json.Unmarshal(payload, &extra)
	if _, ok := extra["sub"]; ok {
		return nil, setErr(ErrCodeInvalidRequest, "an SSF SET carries no sub claim")
	}
	if _, ok := extra["exp"]; ok {
		return nil, setErr(ErrCodeInvalidRequest, "an SSF SET carries no exp claim")
	}
	if c.Iss != o.Issuer {
		return nil, setErr(ErrCodeInvalidIssuer, "iss %q is not %q", c.Iss, o.Issuer)
	}
	if !slices.Contains(c.Aud, o.Audience) {
		return nil, setErr(ErrCodeInvalidAud, "aud does not name %q", o.Audience)
	}
	if c.Jti == "" || len(c.Jti) > 256 {
		return nil, setErr(ErrCodeInvalidRequest, "jti missing or too long")
	}
	if len(c.Events) == 0 {
		return nil, setErr(ErrCodeInvalidRequest, "no events")
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	iat := time.Unix(c.Iat, 0)
	if c.Iat == 0 || now.Sub(iat) > o.MaxAge || iat.Sub(now) > o.Skew {
		return nil, setErr(ErrCodeInvalidRequest, "iat %d is outside the accepted window", c.Iat)
	}
	return &c, nil
}
