package ssf

import (
	"fmt"
	"net/http"
	"time"
)

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

func (t *Transmitter) handlePoll(w http.ResponseWriter, r *http.Request, c caller) {
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
	st, err := t.cfg.Store.GetStream(r.Context(), c.scope(), id)
	if err != nil {
		t.internal(w, r, err)
		return
	}
	if st.Config.Delivery.Method != DeliveryPoll {
		httpError(w, http.StatusBadRequest, ErrCodeInvalidRequest, "stream does not use poll delivery")
		return
	}
	t.touch(r.Context(), c, id)
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
		if maxEvents > 0 {
			// A paused or disabled stream delivers only its Stream Updated SET.
			ps, m, err := t.cfg.Store.PendingSETs(r.Context(), id, maxEvents, st.Status != StatusEnabled)
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
			if st, err = t.cfg.Store.GetStream(r.Context(), c.scope(), id); err != nil {
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
