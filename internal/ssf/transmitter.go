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
}

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
	cfg.Issuer = strings.TrimSuffix(cfg.Issuer, "/")
	return &Transmitter{cfg: cfg, log: cfg.Logger, client: cfg.Push.Client(10 * time.Second), changed: make(chan struct{}), stopped: make(chan struct{}), count: newOutCounter()}
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
		// Bearer tokens (RFC 6750) issued by `condaccess ssf receivers add`.
		AuthorizationSchemes: []map[string]string{{"spec_urn": "urn:ietf:rfc:6750"}},
		DefaultSubjects:      "ALL",
	}
}

// Register mounts the transmitter's endpoints on mux.
func (t *Transmitter) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /.well-known/ssf-configuration", t.handleMetadata)
	mux.HandleFunc("GET /ssf/jwks.json", t.handleJWKS)
	mux.HandleFunc("POST /ssf/stream", t.authed(t.handleCreate))
	mux.HandleFunc("GET /ssf/stream", t.authed(t.handleRead))
	mux.HandleFunc("PATCH /ssf/stream", t.authed(t.handleUpdate(false)))
	mux.HandleFunc("PUT /ssf/stream", t.authed(t.handleUpdate(true)))
	mux.HandleFunc("DELETE /ssf/stream", t.authed(t.handleDelete))
	mux.HandleFunc("GET /ssf/status", t.authed(t.handleGetStatus))
	mux.HandleFunc("POST /ssf/status", t.authed(t.handleSetStatus))
	mux.HandleFunc("POST /ssf/subjects:add", t.authed(t.handleSubject(false)))
	mux.HandleFunc("POST /ssf/subjects:remove", t.authed(t.handleSubject(true)))
	mux.HandleFunc("POST /ssf/verify", t.authed(t.handleVerify))
	mux.HandleFunc("POST /ssf/poll/{stream_id}", t.authed(t.handlePoll))
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

// authed resolves the bearer token to a receiver; 401 without a valid one.
func (t *Transmitter) authed(h func(w http.ResponseWriter, r *http.Request, receiver string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || tok == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ssf"`)
			httpError(w, http.StatusUnauthorized, ErrCodeAuthFailed, "a bearer token is required")
			return
		}
		name, err := t.cfg.Store.ReceiverByToken(r.Context(), tok)
		if errors.Is(err, ErrNotFound) {
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
		h(w, r, name)
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

// receiverConfig are the receiver-supplied members of a stream configuration.
type receiverConfig struct {
	StreamID        string    `json:"stream_id"`
	EventsRequested *[]string `json:"events_requested"`
	Delivery        *Delivery `json:"delivery"`
	Description     *string   `json:"description"`
	// Transmitter-supplied members may be sent back; they must match.
	Iss             *string   `json:"iss"`
	Aud             *Audience `json:"aud"`
	EventsDelivered *[]string `json:"events_delivered"`
}

// apply sets the receiver-supplied members on cfg (replace: missing ones reset).
func (t *Transmitter) apply(ctx context.Context, cfg *StreamConfig, in receiverConfig, replace bool) error {
	if in.Iss != nil && *in.Iss != cfg.Iss {
		return errors.New("iss does not match the transmitter's")
	}
	if in.Aud != nil && !slices.Equal(*in.Aud, cfg.Aud) {
		return errors.New("aud cannot be changed")
	}
	if in.EventsDelivered != nil && !slices.Equal(*in.EventsDelivered, cfg.EventsDelivered) {
		return errors.New("events_delivered does not match the transmitter's value")
	}
	if in.EventsRequested != nil || replace {
		var req []string
		if in.EventsRequested != nil {
			req = *in.EventsRequested
		}
		if len(req) > 64 {
			return errors.New("events_requested has more than 64 entries")
		}
		cfg.EventsRequested = req
	}
	if in.Description != nil || replace {
		d := ""
		if in.Description != nil {
			d = *in.Description
		}
		if len(d) > 1024 {
			return errors.New("description is longer than 1024 bytes")
		}
		cfg.Description = d
	}
	if in.Delivery != nil || replace {
		d := Delivery{Method: DeliveryPoll}
		if in.Delivery != nil {
			d = *in.Delivery
		}
		switch d.Method {
		case DeliveryPush:
			if d.EndpointURL == "" || len(d.EndpointURL) > 2048 {
				return errors.New("push delivery needs an endpoint_url of at most 2048 bytes")
			}
			if err := t.cfg.Push.CheckURL(ctx, d.EndpointURL); err != nil {
				return err
			}
			if len(d.AuthorizationHeader) > 4096 {
				return errors.New("authorization_header is too long")
			}
		case DeliveryPoll, "":
			d = Delivery{Method: DeliveryPoll, EndpointURL: t.cfg.Issuer + "/ssf/poll/" + cfg.StreamID}
		default:
			return fmt.Errorf("delivery method %q is not supported", d.Method)
		}
		cfg.Delivery = d
	}
	cfg.EventsDelivered = nil
	for _, e := range SupportedEvents {
		if slices.Contains(cfg.EventsRequested, e) {
			cfg.EventsDelivered = append(cfg.EventsDelivered, e)
		}
	}
	return nil
}

// public is the configuration as returned to the receiver: the push authorization
// header is a secret it gave us and is not echoed back.
func public(c StreamConfig) StreamConfig {
	if c.Delivery.AuthorizationHeader != "" {
		c.Delivery.AuthorizationHeader = "(set)"
	}
	return c
}

func (t *Transmitter) handleCreate(w http.ResponseWriter, r *http.Request, receiver string) {
	var in receiverConfig
	if err := decodeBody(r, &in); err != nil {
		httpError(w, http.StatusBadRequest, ErrCodeInvalidRequest, "body: "+err.Error())
		return
	}
	cfg := StreamConfig{
		StreamID: newID(), Iss: t.cfg.Issuer, Aud: Audience{receiver},
		EventsSupported: SupportedEvents,
	}
	in.Iss, in.Aud, in.EventsDelivered = nil, nil, nil
	if err := t.apply(r.Context(), &cfg, in, true); err != nil {
		httpError(w, http.StatusBadRequest, ErrCodeInvalidRequest, err.Error())
		return
	}
	existing, err := t.cfg.Store.ListStreams(r.Context(), receiver)
	if err != nil {
		t.internal(w, r, err)
		return
	}
	if len(existing) >= MaxStreamsPerReceiver {
		httpError(w, http.StatusConflict, "too_many_streams", fmt.Sprintf("a receiver has at most %d streams; update or delete one", MaxStreamsPerReceiver))
		return
	}
	if err := t.cfg.Store.CreateStream(r.Context(), &Stream{Receiver: receiver, Config: cfg, Status: StatusEnabled}); err != nil {
		t.internal(w, r, err)
		return
	}
	t.notify()
	writeJSON(w, http.StatusCreated, public(cfg))
}

func (t *Transmitter) internal(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, ErrNotFound) {
		httpError(w, http.StatusNotFound, "not_found", "no such stream for this receiver")
		return
	}
	t.log.ErrorContext(r.Context(), "ssf: request failed", "path", r.URL.Path, "err", err)
	httpError(w, http.StatusInternalServerError, "internal", "internal error")
}

func (t *Transmitter) handleRead(w http.ResponseWriter, r *http.Request, receiver string) {
	id := r.URL.Query().Get("stream_id")
	if id == "" {
		sts, err := t.cfg.Store.ListStreams(r.Context(), receiver)
		if err != nil {
			t.internal(w, r, err)
			return
		}
		out := []StreamConfig{}
		for _, s := range sts {
			out = append(out, public(s.Config))
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	st, err := t.cfg.Store.GetStream(r.Context(), receiver, id)
	if err != nil {
		t.internal(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, public(st.Config))
}

func (t *Transmitter) handleUpdate(replace bool) func(http.ResponseWriter, *http.Request, string) {
	return func(w http.ResponseWriter, r *http.Request, receiver string) {
		var in receiverConfig
		if err := decodeBody(r, &in); err != nil {
			httpError(w, http.StatusBadRequest, ErrCodeInvalidRequest, "body: "+err.Error())
			return
		}
		if in.StreamID == "" {
			httpError(w, http.StatusBadRequest, ErrCodeInvalidRequest, "stream_id is required")
			return
		}
		st, err := t.cfg.Store.GetStream(r.Context(), receiver, in.StreamID)
		if err != nil {
			t.internal(w, r, err)
			return
		}
		if err := t.apply(r.Context(), &st.Config, in, replace); err != nil {
			httpError(w, http.StatusBadRequest, ErrCodeInvalidRequest, err.Error())
			return
		}
		if err := t.cfg.Store.UpdateStream(r.Context(), st); err != nil {
			t.internal(w, r, err)
			return
		}
		t.notify()
		writeJSON(w, http.StatusOK, public(st.Config))
	}
}

func (t *Transmitter) handleDelete(w http.ResponseWriter, r *http.Request, receiver string) {
	id := r.URL.Query().Get("stream_id")
	if id == "" {
		httpError(w, http.StatusBadRequest, ErrCodeInvalidRequest, "stream_id is required")
		return
	}
	if err := t.cfg.Store.DeleteStream(r.Context(), receiver, id); err != nil {
		t.internal(w, r, err)
		return
	}
	t.notify()
	w.WriteHeader(http.StatusNoContent)
}

type streamStatus struct {
	StreamID string `json:"stream_id"`
	Status   string `json:"status"`
	Reason   string `json:"reason,omitempty"`
}

func (t *Transmitter) handleGetStatus(w http.ResponseWriter, r *http.Request, receiver string) {
	st, err := t.cfg.Store.GetStream(r.Context(), receiver, r.URL.Query().Get("stream_id"))
	if err != nil {
		t.internal(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, streamStatus{StreamID: st.Config.StreamID, Status: st.Status, Reason: st.Reason})
}

func (t *Transmitter) handleSetStatus(w http.ResponseWriter, r *http.Request, receiver string) {
	var in streamStatus
	if err := decodeBody(r, &in); err != nil {
		httpError(w, http.StatusBadRequest, ErrCodeInvalidRequest, "body: "+err.Error())
		return
	}
	if !slices.Contains([]string{StatusEnabled, StatusPaused, StatusDisabled}, in.Status) || len(in.Reason) > 1024 {
		httpError(w, http.StatusBadRequest, ErrCodeInvalidRequest, "status must be enabled, paused or disabled (reason at most 1024 bytes)")
		return
	}
	st, err := t.cfg.Store.GetStream(r.Context(), receiver, in.StreamID)
	if err != nil {
		t.internal(w, r, err)
		return
	}
	st.Status, st.Reason = in.Status, in.Reason
	if err := t.cfg.Store.UpdateStream(r.Context(), st); err != nil {
		t.internal(w, r, err)
		return
	}
	t.notify()
	writeJSON(w, http.StatusOK, streamStatus{StreamID: st.Config.StreamID, Status: st.Status, Reason: st.Reason})
}

func validSubject(s *Subject) bool {
	if s == nil {
		return false
	}
	if s.Format == "complex" {
		ms := s.members()
		if len(ms) == 0 {
			return false
		}
		for _, m := range ms {
			if m.Format == "complex" || !validSubject(m) {
				return false
			}
		}
		return true
	}
	switch s.Format {
	case "opaque":
		return s.ID != "" && len(s.ID) <= 256
	case "iss_sub":
		return s.Iss != "" && s.Sub != "" && len(s.Iss)+len(s.Sub) <= 1024
	case "email":
		return strings.Contains(s.Email, "@") && len(s.Email) <= 320
	}
	return false
}

func (t *Transmitter) handleSubject(remove bool) func(http.ResponseWriter, *http.Request, string) {
	return func(w http.ResponseWriter, r *http.Request, receiver string) {
		var in struct {
			StreamID string   `json:"stream_id"`
			Subject  *Subject `json:"subject"`
			Verified *bool    `json:"verified"`
		}
		if err := decodeBody(r, &in); err != nil {
			httpError(w, http.StatusBadRequest, ErrCodeInvalidRequest, "body: "+err.Error())
			return
		}
		if !validSubject(in.Subject) {
			httpError(w, http.StatusBadRequest, ErrCodeInvalidRequest, "subject must be an opaque, iss_sub, email or complex subject")
			return
		}
		if _, err := t.cfg.Store.GetStream(r.Context(), receiver, in.StreamID); err != nil {
			t.internal(w, r, err)
			return
		}
		if err := t.cfg.Store.SetSubjectExcluded(r.Context(), in.StreamID, in.Subject, remove); err != nil {
			t.internal(w, r, err)
			return
		}
		if remove {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.WriteHeader(http.StatusOK)
	}
}

func (t *Transmitter) handleVerify(w http.ResponseWriter, r *http.Request, receiver string) {
	var in struct {
		StreamID string `json:"stream_id"`
		State    string `json:"state"`
	}
	if err := decodeBody(r, &in); err != nil || len(in.State) > 1024 {
		httpError(w, http.StatusBadRequest, ErrCodeInvalidRequest, "body must be {stream_id, state (at most 1024 bytes)}")
		return
	}
	st, err := t.cfg.Store.GetStream(r.Context(), receiver, in.StreamID)
	if err != nil {
		t.internal(w, r, err)
		return
	}
	body := map[string]any{}
	if in.State != "" {
		body["state"] = in.State
	}
	out, err := t.sign(st.Config, EventVerification, &Subject{Format: "opaque", ID: st.Config.StreamID}, body, "")
	if err != nil {
		t.internal(w, r, err)
		return
	}
	if err := t.cfg.Store.Enqueue(r.Context(), []Outgoing{out}); err != nil {
		t.internal(w, r, err)
		return
	}
	t.notify()
	w.WriteHeader(http.StatusNoContent)
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

// pollRequest is an RFC 8936 poll request; snake_case spellings are accepted too.
type pollRequest struct {
	MaxEvents         *int                `json:"maxEvents"`
	MaxEventsSnake    *int                `json:"max_events"`
	ReturnImmediately *bool               `json:"returnImmediately"`
	ReturnImmSnake    *bool               `json:"return_immediately"`
	Ack               []string            `json:"ack"`
	SetErrs           map[string]setError `json:"setErrs"`
	SetErrsSnake      map[string]setError `json:"set_errs"`
}

type setError struct {
	Err         string `json:"err"`
	Description string `json:"description"`
}

// maxPoll caps maxEvents.
const maxPoll = 1000

func (t *Transmitter) handlePoll(w http.ResponseWriter, r *http.Request, receiver string) {
	id := r.PathValue("stream_id")
	var in pollRequest
	if err := decodeBody(r, &in); err != nil {
		httpError(w, http.StatusBadRequest, ErrCodeInvalidRequest, "body: "+err.Error())
		return
	}
	maxEvents := 100
	for _, p := range []*int{in.MaxEvents, in.MaxEventsSnake} {
		if p != nil {
			maxEvents = *p
		}
	}
	if maxEvents < 0 || maxEvents > maxPoll || len(in.Ack) > maxPoll {
		httpError(w, http.StatusBadRequest, ErrCodeInvalidRequest, fmt.Sprintf("maxEvents must be 0..%d and ack at most %d entries", maxPoll, maxPoll))
		return
	}
	immediate := false
	for _, p := range []*bool{in.ReturnImmediately, in.ReturnImmSnake} {
		if p != nil {
			immediate = *p
		}
	}
	errs := in.SetErrs
	if errs == nil {
		errs = in.SetErrsSnake
	}
	st, err := t.cfg.Store.GetStream(r.Context(), receiver, id)
	if err != nil {
		t.internal(w, r, err)
		return
	}
	if st.Config.Delivery.Method != DeliveryPoll {
		httpError(w, http.StatusBadRequest, ErrCodeInvalidRequest, "stream does not use poll delivery")
		return
	}
	done := append([]string(nil), in.Ack...)
	for jti, e := range errs {
		t.log.WarnContext(r.Context(), "ssf: receiver refused a SET", "stream_id", id, "jti", jti, "err", e.Err, "description", e.Description)
		done = append(done, jti)
	}
	if err := t.cfg.Store.Ack(r.Context(), id, done); err != nil {
		t.internal(w, r, err)
		return
	}
	t.count.add(r.Context(), "polled_ack", len(in.Ack))
	t.count.add(r.Context(), "polled_error", len(errs))
	deadline := time.NewTimer(t.cfg.PollWait)
	defer deadline.Stop()
	for {
		ch := t.wait()
		sets := map[string]string{}
		more := false
		if maxEvents > 0 && st.Status == StatusEnabled {
			ps, m, err := t.cfg.Store.PendingSETs(r.Context(), id, maxEvents)
			if err != nil {
				t.internal(w, r, err)
				return
			}
			for _, p := range ps {
				sets[p.JTI] = p.Token
			}
			more = m
		}
		if len(sets) > 0 || immediate || maxEvents == 0 {
			writeJSON(w, http.StatusOK, map[string]any{"sets": sets, "moreAvailable": more})
			return
		}
		select {
		case <-ch:
			if st, err = t.cfg.Store.GetStream(r.Context(), receiver, id); err != nil {
				t.internal(w, r, err)
				return
			}
		case <-deadline.C:
			immediate = true
		case <-t.stopped:
			immediate = true
		case <-r.Context().Done():
			return
		}
	}
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
