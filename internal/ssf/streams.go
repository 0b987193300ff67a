package ssf

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/condaccess/condaccess/internal/audit"
)

// receiverConfig are the receiver-supplied members of a stream configuration.
type receiverConfig struct {
	StreamID        string    `json:"stream_id"`
	EventsRequested *[]string `json:"events_requested"`
	Delivery        *Delivery `json:"delivery"`
	Description     *string   `json:"description"`
	// Transmitter-supplied members may be sent back; they must match.
	Iss               *string   `json:"iss"`
	Aud               *Audience `json:"aud"`
	EventsDelivered   *[]string `json:"events_delivered"`
	InactivityTimeout *int      `json:"inactivity_timeout"`
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
	if in.InactivityTimeout != nil && *in.InactivityTimeout != t.inactivitySeconds() {
		return errors.New("inactivity_timeout is transmitter-supplied and cannot be changed")
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

// Audit resource types of the stream management API.
const (
	auditStreamType    = "ssf_stream"
	auditExclusionType = "ssf_subject_exclusion"
)

// auditStream is what the audit log records of a stream: its configuration as the
// receiver sees it (the push authorization header redacted) and its status.
type auditStream struct {
	Receiver string       `json:"receiver"`
	Config   StreamConfig `json:"config"`
	Status   string       `json:"status"`
	Reason   string       `json:"reason,omitempty"`
}

// auditView is st as the audit log records it (an untyped nil for none).
func (t *Transmitter) auditView(st *Stream) any {
	if st == nil {
		return nil
	}
	return auditStream{Receiver: st.Receiver, Config: t.public(st.Config), Status: st.Status, Reason: st.Reason}
}

// change is the audit record of an admin's change, nil for a receiver's (a receiver
// manages its own streams; that is no admin change).
func (t *Transmitter) change(c caller, typ, id string, before, after any) *audit.Change {
	if c.admin == "" {
		return nil
	}
	return &audit.Change{ResourceType: typ, ResourceID: id, Before: before, After: after}
}

// inactivitySeconds is the streams' inactivity_timeout in seconds (0: none).
func (t *Transmitter) inactivitySeconds() int {
	return int(t.cfg.InactivityTimeout / time.Second)
}

// public is the configuration as returned to the receiver: the push authorization
// header is a secret it gave us and is not echoed back; inactivity_timeout is the
// transmitter's current one.
func (t *Transmitter) public(c StreamConfig) StreamConfig {
	if c.Delivery.AuthorizationHeader != "" {
		c.Delivery.AuthorizationHeader = "(set)"
	}
	c.InactivityTimeout = t.inactivitySeconds()
	return c
}

func (t *Transmitter) handleCreate(w http.ResponseWriter, r *http.Request, c caller) {
	var in receiverConfig
	if err := decodeBody(r, &in); err != nil {
		httpError(w, http.StatusBadRequest, ErrCodeInvalidRequest, "body: "+err.Error())
		return
	}
	receiver := c.receiver
	if c.admin != "" {
		// An admin creates a stream for a registered receiver, named by aud.
		if in.Aud == nil || len(*in.Aud) != 1 {
			httpError(w, http.StatusBadRequest, ErrCodeInvalidRequest, "an admin names the stream's receiver in aud (one registered receiver)")
			return
		}
		ok, err := t.cfg.Store.ReceiverExists(r.Context(), (*in.Aud)[0])
		if err != nil {
			t.internal(w, r, err)
			return
		}
		if !ok {
			httpError(w, http.StatusBadRequest, ErrCodeInvalidRequest, "aud is not a registered receiver (condaccess ssf receivers add NAME)")
			return
		}
		receiver = (*in.Aud)[0]
	}
	cfg := StreamConfig{
		StreamID: newID(), Iss: t.cfg.Issuer, Aud: Audience{receiver},
		EventsSupported: SupportedEvents,
	}
	in.Iss, in.Aud, in.EventsDelivered, in.InactivityTimeout = nil, nil, nil, nil
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
	st := &Stream{Receiver: receiver, Config: cfg, Status: StatusEnabled}
	if err := t.cfg.Store.CreateStream(r.Context(), st, t.change(c, auditStreamType, cfg.StreamID, nil, t.auditView(st))); err != nil {
		t.internal(w, r, err)
		return
	}
	if c.admin != "" {
		t.log.InfoContext(r.Context(), "ssf: admin created a stream", "admin", c.admin, "receiver", receiver, "stream_id", cfg.StreamID)
	}
	t.notify()
	writeJSON(w, http.StatusCreated, t.public(cfg))
}

func (t *Transmitter) internal(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, ErrNotFound) {
		httpError(w, http.StatusNotFound, "not_found", "no such stream for this receiver")
		return
	}
	t.log.ErrorContext(r.Context(), "ssf: request failed", "path", r.URL.Path, "err", err)
	httpError(w, http.StatusInternalServerError, "internal", "internal error")
}

func (t *Transmitter) handleRead(w http.ResponseWriter, r *http.Request, c caller) {
	id := r.URL.Query().Get("stream_id")
	if id == "" {
		sts, err := t.cfg.Store.ListStreams(r.Context(), c.scope())
		if err != nil {
			t.internal(w, r, err)
			return
		}
		out := []StreamConfig{}
		for _, s := range sts {
			out = append(out, t.public(s.Config))
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	st, err := t.cfg.Store.GetStream(r.Context(), c.scope(), id)
	if err != nil {
		t.internal(w, r, err)
		return
	}
	t.touch(r.Context(), c, id)
	writeJSON(w, http.StatusOK, t.public(st.Config))
}

func (t *Transmitter) handleUpdate(replace bool) func(http.ResponseWriter, *http.Request, caller) {
	return func(w http.ResponseWriter, r *http.Request, c caller) {
		var in receiverConfig
		if err := decodeBody(r, &in); err != nil {
			httpError(w, http.StatusBadRequest, ErrCodeInvalidRequest, "body: "+err.Error())
			return
		}
		if in.StreamID == "" {
			httpError(w, http.StatusBadRequest, ErrCodeInvalidRequest, "stream_id is required")
			return
		}
		st, err := t.cfg.Store.GetStream(r.Context(), c.scope(), in.StreamID)
		if err != nil {
			t.internal(w, r, err)
			return
		}
		before := t.auditView(st)
		if err := t.apply(r.Context(), &st.Config, in, replace); err != nil {
			httpError(w, http.StatusBadRequest, ErrCodeInvalidRequest, err.Error())
			return
		}
		if err := t.cfg.Store.UpdateStream(r.Context(), st, nil, t.change(c, auditStreamType, st.Config.StreamID, before, t.auditView(st))); err != nil {
			t.internal(w, r, err)
			return
		}
		t.touch(r.Context(), c, st.Config.StreamID)
		if c.admin != "" {
			t.log.InfoContext(r.Context(), "ssf: admin updated a stream", "admin", c.admin, "receiver", st.Receiver, "stream_id", st.Config.StreamID)
		}
		t.notify()
		writeJSON(w, http.StatusOK, t.public(st.Config))
	}
}

func (t *Transmitter) handleDelete(w http.ResponseWriter, r *http.Request, c caller) {
	id := r.URL.Query().Get("stream_id")
	if id == "" {
		httpError(w, http.StatusBadRequest, ErrCodeInvalidRequest, "stream_id is required")
		return
	}
	var rec *audit.Change
	if c.admin != "" {
		st, err := t.cfg.Store.GetStream(r.Context(), c.scope(), id)
		if err != nil {
			t.internal(w, r, err)
			return
		}
		rec = t.change(c, auditStreamType, id, t.auditView(st), nil)
	}
	if err := t.cfg.Store.DeleteStream(r.Context(), c.scope(), id, rec); err != nil {
		t.internal(w, r, err)
		return
	}
	if c.admin != "" {
		t.log.InfoContext(r.Context(), "ssf: admin deleted a stream", "admin", c.admin, "stream_id", id)
	}
	t.notify()
	w.WriteHeader(http.StatusNoContent)
}

type streamStatus struct {
	StreamID string `json:"stream_id"`
	Status   string `json:"status"`
	Reason   string `json:"reason,omitempty"`
}

func (t *Transmitter) handleGetStatus(w http.ResponseWriter, r *http.Request, c caller) {
	st, err := t.cfg.Store.GetStream(r.Context(), c.scope(), r.URL.Query().Get("stream_id"))
	if err != nil {
		t.internal(w, r, err)
		return
	}
	t.touch(r.Context(), c, st.Config.StreamID)
	writeJSON(w, http.StatusOK, streamStatus{StreamID: st.Config.StreamID, Status: st.Status, Reason: st.Reason})
}

func (t *Transmitter) handleSetStatus(w http.ResponseWriter, r *http.Request, c caller) {
	var in streamStatus
	if err := decodeBody(r, &in); err != nil {
		httpError(w, http.StatusBadRequest, ErrCodeInvalidRequest, "body: "+err.Error())
		return
	}
	if !slices.Contains([]string{StatusEnabled, StatusPaused, StatusDisabled}, in.Status) || len(in.Reason) > 1024 {
		httpError(w, http.StatusBadRequest, ErrCodeInvalidRequest, "status must be enabled, paused or disabled (reason at most 1024 bytes)")
		return
	}
	st, err := t.cfg.Store.GetStream(r.Context(), c.scope(), in.StreamID)
	if err != nil {
		t.internal(w, r, err)
		return
	}
	changed := st.Status != in.Status
	before := t.auditView(st)
	st.Status, st.Reason = in.Status, in.Reason
	// The receiver is told of a status it did not ask for: an admin's change.
	var notice *Outgoing
	if c.admin != "" && changed {
		n, err := t.streamUpdated(st.Config, st.Status, st.Reason)
		if err != nil {
			t.internal(w, r, err)
			return
		}
		notice = &n
		t.log.InfoContext(r.Context(), "ssf: admin changed a stream's status", "admin", c.admin, "receiver", st.Receiver, "stream_id", st.Config.StreamID, "status", st.Status)
	}
	if err := t.cfg.Store.UpdateStream(r.Context(), st, notice, t.change(c, auditStreamType, st.Config.StreamID, before, t.auditView(st))); err != nil {
		t.internal(w, r, err)
		return
	}
	t.touch(r.Context(), c, st.Config.StreamID)
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

func (t *Transmitter) handleSubject(remove bool) func(http.ResponseWriter, *http.Request, caller) {
	return func(w http.ResponseWriter, r *http.Request, c caller) {
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
		// Adding re-includes a subject the receiver removed (every subject is in a
		// stream by default); the receiver vouches for it. An unverified subject
		// (verified: false) is refused rather than silently treated as verified.
		if !remove && in.Verified != nil && !*in.Verified {
			httpError(w, http.StatusBadRequest, ErrCodeInvalidRequest, "verified is false: this transmitter adds only subjects the receiver has verified")
			return
		}
		if _, err := t.cfg.Store.GetStream(r.Context(), c.scope(), in.StreamID); err != nil {
			t.internal(w, r, err)
			return
		}
		// Audited as the exclusion of the subject: removing creates it, adding deletes it.
		excl := map[string]any{"stream_id": in.StreamID, "subject": in.Subject}
		var rec *audit.Change
		if remove {
			rec = t.change(c, auditExclusionType, in.StreamID, nil, excl)
		} else {
			rec = t.change(c, auditExclusionType, in.StreamID, excl, nil)
		}
		if err := t.cfg.Store.SetSubjectExcluded(r.Context(), in.StreamID, in.Subject, remove, rec); err != nil {
			t.internal(w, r, err)
			return
		}
		t.touch(r.Context(), c, in.StreamID)
		if remove {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.WriteHeader(http.StatusOK)
	}
}

func (t *Transmitter) handleVerify(w http.ResponseWriter, r *http.Request, c caller) {
	var in struct {
		StreamID string `json:"stream_id"`
		State    string `json:"state"`
	}
	if err := decodeBody(r, &in); err != nil || len(in.State) > 1024 {
		httpError(w, http.StatusBadRequest, ErrCodeInvalidRequest, "body must be {stream_id, state (at most 1024 bytes)}")
		return
	}
	st, err := t.cfg.Store.GetStream(r.Context(), c.scope(), in.StreamID)
	if err != nil {
		t.internal(w, r, err)
		return
	}
	t.touch(r.Context(), c, in.StreamID)
	body := map[string]any{}
	if in.State != "" {
		body["state"] = in.State
	}
	out, err := t.sign(st.Config, EventVerification, &Subject{Format: "opaque", ID: st.Config.StreamID}, body, "")
	if err != nil {
		t.internal(w, r, err)
		return
	}
	res, err := t.cfg.Store.Enqueue(r.Context(), []Outgoing{out}, t.bound())
	if err != nil {
		t.internal(w, r, err)
		return
	}
	t.enqueued(r.Context(), res)
	if len(res.Dropped) > 0 {
		httpError(w, http.StatusTooManyRequests, "outbox_full", fmt.Sprintf("the stream holds %d unacknowledged SETs; acknowledge them first", t.cfg.MaxPending))
		return
	}
	t.notify()
	w.WriteHeader(http.StatusNoContent)
}
