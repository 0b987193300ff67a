package ssf

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/auth"
)

// Stream statuses (SSF 1.0 section 8.1.2).
const (
	StatusEnabled  = "enabled"
	StatusPaused   = "paused"
	StatusDisabled = "disabled"
)

// MaxStreamsPerReceiver caps the streams one receiver may hold.
const MaxStreamsPerReceiver = 16

// maxBody caps every request body the transmitter and receiver read.
const maxBody = 64 << 10

// Delivery is a stream's delivery method.
type Delivery struct {
	Method              string `json:"method"`
	EndpointURL         string `json:"endpoint_url,omitempty"`
	AuthorizationHeader string `json:"authorization_header,omitempty"`
}

// StreamConfig is a stream's configuration (SSF 1.0 section 8.1.1).
type StreamConfig struct {
	StreamID                string   `json:"stream_id"`
	Iss                     string   `json:"iss"`
	Aud                     Audience `json:"aud"`
	EventsSupported         []string `json:"events_supported"`
	EventsRequested         []string `json:"events_requested"`
	EventsDelivered         []string `json:"events_delivered"`
	Delivery                Delivery `json:"delivery"`
	MinVerificationInterval int      `json:"min_verification_interval,omitempty"`
	Description             string   `json:"description,omitempty"`
	// InactivityTimeout is transmitter-supplied, in seconds (see Config).
	InactivityTimeout int `json:"inactivity_timeout,omitempty"`
}

// Config configures a Transmitter.
type Config struct {
	// Issuer is the transmitter's issuer URL (also the base of its endpoints), no trailing slash.
	Issuer string
	Store  *Store
	Signer Keys
	Logger *slog.Logger
	// Push decides which endpoint_url push delivery may use and connect to.
	Push PushGuard
	// MinBackoff and MaxBackoff bound push retries (default 200 ms and 1 min).
	MinBackoff, MaxBackoff time.Duration
	// PollWait is how long a long poll waits for events (default 25 s).
	PollWait time.Duration
	// MaxPending bounds each stream's outbox: a stream holding that many
	// unacknowledged SETs is paused and takes no more (0: DefaultMaxPending;
	// negative: no bound).
	MaxPending int
	// InactivityTimeout pauses an enabled stream whose receiver made no call about it
	// for that long (SSF inactivity_timeout; 0: never).
	InactivityTimeout time.Duration
	// AdminCertificates lets a verified client certificate with the secops-admin role
	// manage every receiver's streams (TLS mode; never the development identity).
	AdminCertificates bool
}

// DefaultMaxPending is the default bound of a stream's outbox.
const DefaultMaxPending = 10000

// Transmitter serves the SSF transmitter endpoints and delivers SETs.
type Transmitter struct {
	cfg    Config
	log    *slog.Logger
	client *http.Client // push delivery, through cfg.Push

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when SETs are enqueued or streams change
	stop    sync.Once
	stopped chan struct{} // closed when RunPush ends (the server is stopping): long polls return
	count   counter
	pauses  counter
}

// NewTransmitter returns a transmitter; Run delivers pushed SETs.
func NewTransmitter(cfg Config) *Transmitter {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(time.Minute, cfg.MinBackoff)
	}
	if cfg.PollWait <= 0 {
		cfg.PollWait = 25 * time.Second
	}
	if cfg.MaxPending == 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	cfg.Issuer = strings.TrimSuffix(cfg.Issuer, "/")
	return &Transmitter{cfg: cfg, log: cfg.Logger, client: cfg.Push.Client(10 * time.Second), changed: make(chan struct{}), stopped: make(chan struct{}), count: newOutCounter(), pauses: newPauseCounter()}
}

// notify wakes delivery workers and long polls.
func (t *Transmitter) notify() {
	t.mu.Lock()
	close(t.changed)
	t.changed = make(chan struct{})
	t.mu.Unlock()
}

func (t *Transmitter) wait() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.changed
}

// Metadata is the transmitter configuration (SSF 1.0 section 7.1).
type Metadata struct {
	SpecVersion              string              `json:"spec_version"`
	Issuer                   string              `json:"issuer"`
	JWKSURI                  string              `json:"jwks_uri"`
	DeliveryMethodsSupported []string            `json:"delivery_methods_supported"`
	ConfigurationEndpoint    string              `json:"configuration_endpoint"`
	StatusEndpoint           string              `json:"status_endpoint"`
	AddSubjectEndpoint       string              `json:"add_subject_endpoint"`
	RemoveSubjectEndpoint    string              `json:"remove_subject_endpoint"`
	VerificationEndpoint     string              `json:"verification_endpoint"`
	AuthorizationSchemes     []map[string]string `json:"authorization_schemes"`
	DefaultSubjects          string              `json:"default_subjects"`
}

// Metadata returns the transmitter's configuration metadata.
func (t *Transmitter) Metadata() Metadata {
	b := t.cfg.Issuer
	return Metadata{
		SpecVersion:              "1_0",
		Issuer:                   b,
		JWKSURI:                  b + "/ssf/jwks.json",
		DeliveryMethodsSupported: []string{DeliveryPush, DeliveryPoll},
		ConfigurationEndpoint:    b + "/ssf/stream",
		StatusEndpoint:           b + "/ssf/status",
		AddSubjectEndpoint:       b + "/ssf/subjects:add",
		RemoveSubjectEndpoint:    b + "/ssf/subjects:remove",
		VerificationEndpoint:     b + "/ssf/verify",
		AuthorizationSchemes:     t.authorizationSchemes(),
		DefaultSubjects:          "ALL",
	}
}

// authorizationSchemes: bearer tokens (RFC 6750) issued by `condaccess ssf receivers
// add`, and with TLS admin client certificates (RFC 8705's mutual TLS).
func (t *Transmitter) authorizationSchemes() []map[string]string {
	out := []map[string]string{{"spec_urn": "urn:ietf:rfc:6750"}}
	if t.cfg.AdminCertificates {
		out = append(out, map[string]string{"spec_urn": "urn:ietf:rfc:8705"})
	}
	return out
}

// Register mounts the transmitter's endpoints on mux.
func (t *Transmitter) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /.well-known/ssf-configuration", t.handleMetadata)
	mux.HandleFunc("GET /ssf/jwks.json", t.handleJWKS)
	mux.HandleFunc("POST /ssf/stream", t.authed(t.handleCreate, true))
	mux.HandleFunc("GET /ssf/stream", t.authed(t.handleRead, true))
	mux.HandleFunc("PATCH /ssf/stream", t.authed(t.handleUpdate(false), true))
	mux.HandleFunc("PUT /ssf/stream", t.authed(t.handleUpdate(true), true))
	mux.HandleFunc("DELETE /ssf/stream", t.authed(t.handleDelete, true))
	mux.HandleFunc("GET /ssf/status", t.authed(t.handleGetStatus, true))
	mux.HandleFunc("POST /ssf/status", t.authed(t.handleSetStatus, true))
	mux.HandleFunc("POST /ssf/subjects:add", t.authed(t.handleSubject(false), true))
	mux.HandleFunc("POST /ssf/subjects:remove", t.authed(t.handleSubject(true), true))
	mux.HandleFunc("POST /ssf/verify", t.authed(t.handleVerify, true))
	// Polling acknowledges, so it is the receiver's alone.
	mux.HandleFunc("POST /ssf/poll/{stream_id}", t.authed(t.handlePoll, false))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// httpError writes {"err": code, "description": ...}.
func httpError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"err": code, "description": desc})
}

func (t *Transmitter) handleMetadata(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, t.Metadata())
}

func (t *Transmitter) handleJWKS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/jwk-set+json")
	_ = json.NewEncoder(w).Encode(t.cfg.Signer.JWKS())
}

// caller is who calls a stream management endpoint: a receiver, by its bearer token,
// or an admin, by a client certificate.
type caller struct {
	// receiver is the receiver whose token was presented; empty for an admin, who
	// manages every receiver's streams.
	receiver string
	// admin is the admin certificate's subject (for logs); empty for a receiver.
	admin string
}

// scope is the receiver whose streams the caller reaches ("": every receiver's).
func (c caller) scope() string { return c.receiver }

// adminIdentity returns the verified client certificate identity of an admin
// (KindRoleCertificate with the secops-admin role). The development identity, console
// sessions (cookies, which another site can make a browser send) and certificates
// without the role are not admins here.
func (t *Transmitter) adminIdentity(r *http.Request) (auth.Identity, bool) {
	if !t.cfg.AdminCertificates {
		return auth.Identity{}, false
	}
	id, ok := auth.FromContext(r.Context())
	if !ok || id.Kind != auth.KindRoleCertificate || !id.HasRole(commonv1.Role_ROLE_SECOPS_ADMIN) {
		return auth.Identity{}, false
	}
	return id, true
}

// adminActor is the audit actor of an admin's call: the certificate's identity, the
// HTTP method and path, the client address and the trace id.
func adminActor(r *http.Request, id auth.Identity) audit.Actor {
	a := audit.Actor{Subject: id.Subject, Method: r.Method + " " + r.URL.Path, Peer: r.RemoteAddr}
	for _, role := range id.Roles {
		a.Roles = append(a.Roles, auth.RoleName(role))
	}
	if sc := trace.SpanContextFromContext(r.Context()); sc.HasTraceID() {
		a.TraceID = sc.TraceID().String()
	}
	return a
}

// authed resolves the caller: the receiver of a bearer token or, without an
// Authorization header and when adminOK, an admin certificate; 401 for anyone else.
func (t *Transmitter) authed(h func(w http.ResponseWriter, r *http.Request, c caller), adminOK bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			if id, ok := t.adminIdentity(r); ok {
				if !adminOK {
					httpError(w, http.StatusForbidden, ErrCodeAccessDenied, "polling acknowledges SETs: only the stream's receiver polls, with its bearer token")
					return
				}
				r.Body = http.MaxBytesReader(w, r.Body, maxBody)
				h(w, r.WithContext(audit.NewContext(r.Context(), adminActor(r, id))), caller{admin: id.Subject})
				return
			}
		}
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || tok == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ssf"`)
			httpError(w, http.StatusUnauthorized, ErrCodeAuthFailed, "a bearer token is required")
			return
		}
		name, err := t.cfg.Store.ReceiverByToken(r.Context(), tok)
		if errors.Is(err, ErrNotFound) || (err == nil && name == "") {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ssf", error="invalid_token"`)
			httpError(w, http.StatusUnauthorized, ErrCodeAuthFailed, "unknown bearer token")
			return
		}
		if err != nil {
			t.log.ErrorContext(r.Context(), "ssf: token lookup", "err", err)
			httpError(w, http.StatusInternalServerError, "internal", "token lookup failed")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		h(w, r, caller{receiver: name})
	}
}

// touch records a receiver's call about a stream: its inactivity timeout restarts.
// An admin's calls are not the receiver's activity.
func (t *Transmitter) touch(ctx context.Context, c caller, streamID string) {
	if c.receiver == "" {
		return
	}
	if err := t.cfg.Store.Touch(ctx, streamID); err != nil && ctx.Err() == nil {
		t.log.WarnContext(ctx, "ssf: record stream activity", "stream_id", streamID, "err", err)
	}
}

func decodeBody(r *http.Request, v any) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	if len(b) == 0 {
		return nil
	}
	return json.Unmarshal(b, v)
}

func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// NewToken returns a fresh receiver bearer token.
func NewToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// sign builds and signs one SET for a stream.
func (t *Transmitter) sign(cfg StreamConfig, eventType string, sub *Subject, body any, txn string) (Outgoing, error) {
	raw, err := json.Marshal(body)
	if err != nil {
		return Outgoing{}, err
	}
	c := Claims{
		Iss: t.cfg.Issuer, Jti: newID(), Iat: time.Now().Unix(), Aud: cfg.Aud, Txn: txn,
		SubID: sub, Events: map[string]json.RawMessage{eventType: raw},
	}
	tok, err := t.cfg.Signer.Sign(c)
	if err != nil {
		return Outgoing{}, err
	}
	return Outgoing{StreamID: cfg.StreamID, JTI: c.Jti, Token: tok}, nil
}

// streamsFor returns the streams that take eventType about sub.
func (t *Transmitter) streamsFor(ctx context.Context, eventType string, sub *Subject) ([]StreamConfig, error) {
	sts, err := t.cfg.Store.ListStreams(ctx, "")
	if err != nil {
		return nil, err
	}
	var out []StreamConfig
	for _, s := range sts {
		if s.Status == StatusDisabled || !slices.Contains(s.Config.EventsDelivered, eventType) {
			continue
		}
		ex, err := t.cfg.Store.Excluded(ctx, s.Config.StreamID, sub)
		if err != nil {
			return nil, err
		}
		if !ex {
			out = append(out, s.Config)
		}
	}
	return out, nil
}

// bound is the outbox bound every enqueue applies.
func (t *Transmitter) bound() Bound {
	return Bound{Max: max(t.cfg.MaxPending, 0), Notice: t.streamUpdated}
}

// streamUpdated signs the Stream Updated SET (SSF 1.0 section 8.1.5) that tells a
// stream's receiver of a status it did not ask for.
func (t *Transmitter) streamUpdated(cfg StreamConfig, status, reason string) (Outgoing, error) {
	body := map[string]any{"status": status}
	if reason != "" {
		body["reason"] = reason
	}
	return t.sign(cfg, EventStreamUpdated, &Subject{Format: "opaque", ID: cfg.StreamID}, body, "")
}

// enqueued counts what the outbox bound did: SETs a full stream did not take, and
// streams it paused.
func (t *Transmitter) enqueued(ctx context.Context, res EnqueueResult) {
	n := 0
	for _, d := range res.Dropped {
		n += d
	}
	t.count.add(ctx, "dropped_outbox_full", n)
	for _, id := range res.Paused {
		t.pauses.add(ctx, "outbox_full", 1)
		t.log.WarnContext(ctx, "ssf: stream paused: its receiver does not acknowledge", "stream_id", id, "max_pending", t.cfg.MaxPending)
	}
}

// SweepInactive pauses every enabled stream whose receiver made no call about it within
// the inactivity timeout, each with a Stream Updated SET; it returns how many.
func (t *Transmitter) SweepInactive(ctx context.Context) (int, error) {
	if t.cfg.InactivityTimeout <= 0 {
		return 0, nil
	}
	sts, err := t.cfg.Store.Inactive(ctx, time.Now().Add(-t.cfg.InactivityTimeout))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, st := range sts {
		st.Status = StatusPaused
		st.Reason = fmt.Sprintf("inactivity_timeout: no call from the receiver for %s; set the status to enabled to resume", t.cfg.InactivityTimeout)
		notice, err := t.streamUpdated(st.Config, st.Status, st.Reason)
		if err != nil {
			return n, err
		}
		if err := t.cfg.Store.UpdateStream(ctx, st, &notice, nil); err != nil && !errors.Is(err, ErrNotFound) {
			return n, err
		}
		t.pauses.add(ctx, "inactivity_timeout", 1)
		t.log.InfoContext(ctx, "ssf: stream paused for inactivity", "stream_id", st.Config.StreamID, "receiver", st.Receiver)
		n++
	}
	if n > 0 {
		t.notify()
	}
	return n, nil
}
