package ssf

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
)

// TrustedIssuer is a transmitter whose pushed SETs the receiver accepts.
type TrustedIssuer struct {
	Issuer string
	// JWKSURL is the issuer's key set; empty: discovered from the issuer's
	// /.well-known/ssf-configuration.
	JWKSURL string
}

// Signal is a verified signal about a device.
type Signal struct {
	// AlertID is derived from the issuer, jti and event type, so a resent SET names the same alert.
	AlertID  string
	DeviceID string
	// Source is the detection source (the issuer), Category the event type's alert category.
	Source, Category string
	// Severity is HIGH, MEDIUM or LOW; UNSPECIFIED means "back to normal": resolve.
	Severity    commonv1.Severity
	Title       string
	Description string
	Time        time.Time
}

// AlertSink turns signals into alerts on the risk service.
type AlertSink interface {
	// Apply reports s as an alert on its device, resolving the source's earlier alerts of
	// the same category; a back-to-normal signal (no severity) resolves every active
	// alert of the source on the device.
	Apply(ctx context.Context, s Signal) error
}

// ReceiverConfig configures a Receiver.
type ReceiverConfig struct {
	Issuers  []TrustedIssuer
	Audience string
	Store    *Store
	Sink     AlertSink
	Client   *http.Client
	// MaxAge bounds how old a SET's iat may be (default 1 h; push retries resend old SETs).
	MaxAge time.Duration
	Logger *slog.Logger
}

// Receiver accepts pushed SETs (RFC 8935) from trusted transmitters.
type Receiver struct {
	cfg     ReceiverConfig
	mu      sync.Mutex
	keys    map[string]jose.JSONWebKeySet
	fetched map[string]time.Time
	// Unknown counts acknowledged SETs of event types the receiver does not act on.
	Unknown atomic.Int64
	count   counter
}

// NewReceiver returns a receiver.
func NewReceiver(cfg ReceiverConfig) *Receiver {
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = time.Hour
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Receiver{cfg: cfg, keys: map[string]jose.JSONWebKeySet{}, fetched: map[string]time.Time{}, count: newInCounter()}
}

// Register mounts the push endpoint (POST /ssf/receiver) on mux.
func (rc *Receiver) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /ssf/receiver", rc.handlePush)
}

func (rc *Receiver) pushError(w http.ResponseWriter, err error) {
	rc.count.add(context.Background(), "refused", 1)
	var se *SETError
	if !errors.As(err, &se) {
		se = &SETError{Code: ErrCodeInvalidRequest, Description: err.Error()}
	}
	writeJSON(w, http.StatusBadRequest, map[string]string{"err": se.Code, "description": se.Description})
}

func (rc *Receiver) handlePush(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/secevent+jwt" {
		rc.pushError(w, setErr(ErrCodeInvalidRequest, "Content-Type must be application/secevent+jwt"))
		return
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		rc.pushError(w, setErr(ErrCodeInvalidRequest, "body: %v", err))
		return
	}
	tok := strings.TrimSpace(string(b))
	iss, err := rc.issuerOf(tok)
	if err != nil {
		rc.pushError(w, err)
		return
	}
	keys, err := rc.keySet(ctx, iss, false)
	if err != nil {
		rc.cfg.Logger.WarnContext(ctx, "ssf receiver: no keys for issuer", "iss", iss.Issuer, "err", err)
		rc.pushError(w, setErr(ErrCodeInvalidKey, "the issuer's keys are unavailable"))
		return
	}
	opts := VerifyOptions{Issuer: iss.Issuer, Audience: rc.cfg.Audience, Keys: keys, MaxAge: rc.cfg.MaxAge, Skew: time.Minute}
	c, err := VerifySET(tok, opts)
	var se *SETError
	if errors.As(err, &se) && se.Code == ErrCodeInvalidKey {
		// Perhaps the transmitter rotated its key: refetch (rate limited) and retry once.
		if opts.Keys, err = rc.keySet(ctx, iss, true); err == nil {
			c, err = VerifySET(tok, opts)
		}
	}
	if err != nil {
		rc.pushError(w, err)
		return
	}
	seen, err := rc.cfg.Store.Received(ctx, c.Iss, c.Jti)
	if err != nil {
		httpError(w, http.StatusInternalServerError, "internal", "store")
		return
	}
	if seen {
		rc.pushError(w, setErr(ErrCodeInvalidRequest, "jti %s was already received", c.Jti))
		return
	}
	for typ, raw := range c.Events {
		sig, ok, err := signalOf(c, typ, raw)
		if err != nil {
			rc.pushError(w, err)
			return
		}
		if !ok {
			rc.Unknown.Add(1)
			rc.count.add(ctx, "unknown_event", 1)
			rc.cfg.Logger.InfoContext(ctx, "ssf receiver: event acknowledged, not acted on", "iss", c.Iss, "jti", c.Jti, "type", typ)
			continue
		}
		if err := rc.cfg.Sink.Apply(ctx, sig); err != nil {
			if status.Code(errors.Unwrap(err)) == codes.InvalidArgument {
				rc.pushError(w, setErr(ErrCodeInvalidRequest, "the risk service refused the signal: %v", err))
				return
			}
			rc.cfg.Logger.ErrorContext(ctx, "ssf receiver: apply signal", "iss", c.Iss, "jti", c.Jti, "err", err)
			httpError(w, http.StatusServiceUnavailable, "unavailable", "the signal could not be applied; retry")
			return
		}
	}
	if _, err := rc.cfg.Store.MarkReceived(ctx, c.Iss, c.Jti); err != nil {
		httpError(w, http.StatusServiceUnavailable, "unavailable", "store")
		return
	}
	rc.count.add(ctx, "applied", 1)
	w.WriteHeader(http.StatusAccepted)
}

// issuerOf reads the unverified "iss" only to pick the trusted issuer whose keys verify the SET.
func (rc *Receiver) issuerOf(tok string) (TrustedIssuer, error) {
	jws, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.PS256})
	if err != nil {
		return TrustedIssuer{}, setErr(ErrCodeInvalidRequest, "not a signed JWT: %v", err)
	}
	var c struct {
		Iss string `json:"iss"`
	}
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &c); err != nil {
		return TrustedIssuer{}, setErr(ErrCodeInvalidRequest, "claims: %v", err)
	}
	for _, t := range rc.cfg.Issuers {
		if t.Issuer == c.Iss {
			return t, nil
		}
	}
	return TrustedIssuer{}, setErr(ErrCodeInvalidIssuer, "issuer %q is not trusted", c.Iss)
}

// keySet returns the issuer's JWKS, fetching it (at most every 30 s when refresh).
func (rc *Receiver) keySet(ctx context.Context, iss TrustedIssuer, refresh bool) (jose.JSONWebKeySet, error) {
	rc.mu.Lock()
	ks, ok := rc.keys[iss.Issuer]
	last := rc.fetched[iss.Issuer]
	rc.mu.Unlock()
	if ok && (!refresh || time.Since(last) < 30*time.Second) {
		return ks, nil
	}
	u := iss.JWKSURL
	if u == "" {
		var md Metadata
		if err := rc.getJSON(ctx, strings.TrimSuffix(iss.Issuer, "/")+"/.well-known/ssf-configuration", &md); err != nil {
			return ks, err
		}
		if md.Issuer != iss.Issuer || md.JWKSURI == "" {
			return ks, fmt.Errorf("ssf-configuration of %s names issuer %q and jwks_uri %q", iss.Issuer, md.Issuer, md.JWKSURI)
		}
		u = md.JWKSURI
	}
	var fresh jose.JSONWebKeySet
	if err := rc.getJSON(ctx, u, &fresh); err != nil {
		return ks, err
	}
	rc.mu.Lock()
	rc.keys[iss.Issuer], rc.fetched[iss.Issuer] = fresh, time.Now()
	rc.mu.Unlock()
	return fresh, nil
}

func (rc *Receiver) getJSON(ctx context.Context, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := rc.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v)
}

// signalOf maps a CAEP event to a device signal; ok is false for events not acted on.
func signalOf(c *Claims, typ string, raw json.RawMessage) (Signal, bool, error) {
	var body struct {
		CurrentStatus  string            `json:"current_status"`
		CurrentLevel   string            `json:"current_level"`
		Principal      string            `json:"principal"`
		ReasonAdmin    map[string]string `json:"reason_admin"`
		RiskReason     string            `json:"risk_reason"`
		EventTimestamp int64             `json:"event_timestamp"`
	}
	if typ != EventDeviceComplianceChange && typ != EventRiskLevelChange {
		return Signal{}, false, nil
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return Signal{}, false, setErr(ErrCodeInvalidRequest, "event %s: %v", typ, err)
	}
	device := ""
	switch {
	case c.SubID != nil && c.SubID.Device != nil && c.SubID.Device.Format == "opaque":
		device = c.SubID.Device.ID
	case c.SubID != nil && c.SubID.Format == "opaque" && body.Principal == "DEVICE":
		device = c.SubID.ID
	}
	if device == "" {
		return Signal{}, false, nil // not about a device we can name
	}
	if len(device) > 128 {
		return Signal{}, false, setErr(ErrCodeInvalidRequest, "device id longer than 128 bytes")
	}
	h := sha256.Sum256([]byte(c.Iss + "\x00" + c.Jti + "\x00" + typ))
	src := c.Iss
	if len(src) > 128 {
		src = src[:128]
	}
	s := Signal{AlertID: "ssf-" + hex.EncodeToString(h[:12]), DeviceID: device, Source: src, Description: truncate(body.ReasonAdmin["en"], 8192)}
	if body.EventTimestamp > 0 {
		s.Time = time.Unix(body.EventTimestamp, 0)
	}
	if typ == EventDeviceComplianceChange {
		s.Category = "ssf-device-compliance"
		switch body.CurrentStatus {
		case "not-compliant":
			s.Severity, s.Title = commonv1.Severity_SEVERITY_HIGH, "Device not compliant (Shared Signals)"
		case "compliant":
		default:
			return Signal{}, false, setErr(ErrCodeInvalidRequest, "current_status %q is not compliant or not-compliant", body.CurrentStatus)
		}
		return s, true, nil
	}
	s.Category = "ssf-risk-level"
	if s.Description == "" {
		s.Description = truncate(body.RiskReason, 8192)
	}
	switch body.CurrentLevel {
	case "HIGH":
		s.Severity, s.Title = commonv1.Severity_SEVERITY_HIGH, "High device risk (Shared Signals)"
	case "MEDIUM":
		s.Severity, s.Title = commonv1.Severity_SEVERITY_MEDIUM, "Medium device risk (Shared Signals)"
	case "LOW":
	default:
		return Signal{}, false, setErr(ErrCodeInvalidRequest, "current_level %q is not LOW, MEDIUM or HIGH", body.CurrentLevel)
	}
	return s, true, nil
}

// GRPCAlertSink applies signals through the risk service's RPCs.
type GRPCAlertSink struct {
	Client riskv1.RiskServiceClient
}

// Apply implements AlertSink.
func (g GRPCAlertSink) Apply(ctx context.Context, s Signal) error {
	tok := ""
	for {
		resp, err := g.Client.ListAlerts(ctx, &riskv1.ListAlertsRequest{DeviceId: s.DeviceID, PageSize: 1000, PageToken: tok})
		if err != nil {
			return fmt.Errorf("list alerts: %w", err)
		}
		for _, a := range resp.GetAlerts() {
			// Back to normal resolves every alert of the source on the device; a new
			// level supersedes the source's alerts of the same category.
			sameKind := s.Severity == commonv1.Severity_SEVERITY_UNSPECIFIED || a.GetCategory() == s.Category
			if a.GetDetectionSource() != s.Source || !sameKind || a.GetAlertId() == s.AlertID ||
				a.GetStatus() == riskv1.AlertStatus_ALERT_STATUS_RESOLVED {
				continue
			}
			_, err := g.Client.ResolveAlert(ctx, &riskv1.ResolveAlertRequest{
				AlertId: a.GetAlertId(), Classification: riskv1.AlertClassification_ALERT_CLASSIFICATION_TRUE_POSITIVE,
				Comment: "superseded by a later Shared Signals event from " + s.Source,
			})
			if err != nil {
				return fmt.Errorf("resolve alert %s: %w", a.GetAlertId(), err)
			}
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
	if s.Severity == commonv1.Severity_SEVERITY_UNSPECIFIED {
		return nil
	}
	a := &riskv1.Alert{
		AlertId: s.AlertID, DeviceId: s.DeviceID, Severity: s.Severity, Category: s.Category,
		Title: s.Title, Description: s.Description, DetectionSource: s.Source,
	}
	if !s.Time.IsZero() {
		a.DetectTime = timestamppb.New(s.Time)
	}
	if _, err := g.Client.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: a}); err != nil {
		return fmt.Errorf("report alert: %w", err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
