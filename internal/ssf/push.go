package ssf

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/condaccess/condaccess/internal/lease"
)

// RunPush delivers the SETs of every push stream until ctx ends: one worker per stream
// sends its SETs in order (a paused or disabled stream only its Stream Updated SET),
// each until the receiver answers 202 (RFC 8935), with exponential backoff and the same
// signed SET (same jti) on every retry. What is not acknowledged stays in the store,
// so a restart resends it. With an inactivity timeout it also pauses idle streams.
func (t *Transmitter) RunPush(ctx context.Context) error {
	type worker struct {
		cfg    StreamConfig
		cancel context.CancelFunc
		done   chan struct{}
	}
	workers := map[string]*worker{}
	defer t.stop.Do(func() { close(t.stopped) })
	defer func() {
		for _, w := range workers {
			w.cancel()
			<-w.done
		}
	}()
	if t.cfg.InactivityTimeout > 0 {
		sweepDone := make(chan struct{})
		defer func() { <-sweepDone }()
		go func() {
			defer close(sweepDone)
			t.runSweep(ctx)
		}()
	}
	for {
		ch := t.wait()
		sts, err := t.cfg.Store.ListStreams(ctx, "")
		if err != nil && ctx.Err() == nil {
			t.log.ErrorContext(ctx, "ssf: list streams", "err", err)
		}
		want := map[string]StreamConfig{}
		for _, s := range sts {
			if s.Config.Delivery.Method == DeliveryPush {
				want[s.Config.StreamID] = s.Config
			}
		}
		for id, w := range workers {
			cfg, ok := want[id]
			finished := false
			select {
			case <-w.done:
				finished = true
			default:
			}
			if !ok || finished || cfg.Delivery != w.cfg.Delivery {
				w.cancel()
				<-w.done
				delete(workers, id)
			}
		}
		for id, cfg := range want {
			if _, ok := workers[id]; !ok {
				wctx, cancel := context.WithCancel(ctx)
				w := &worker{cfg: cfg, cancel: cancel, done: make(chan struct{})}
				workers[id] = w
				go func() {
					defer close(w.done)
					t.pushWorker(wctx, cfg)
				}()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ch:
		case <-time.After(5 * time.Second):
		}
	}
}

// pushWorker delivers one stream's SETs. A configuration change restarts it (the
// supervisor cancels workers of streams that change or go away).
func (t *Transmitter) pushWorker(ctx context.Context, cfg StreamConfig) {
	attempt := 0
	for ctx.Err() == nil {
		ch := t.wait()
		cur, err := t.cfg.Store.GetStream(ctx, "", cfg.StreamID)
		if err == nil && cur.Config.Delivery != cfg.Delivery {
			t.notify() // let the supervisor restart or stop us
			return
		}
		controlOnly := err != nil || cur.Status != StatusEnabled
		ps, _, err := t.cfg.Store.PendingSETs(ctx, cfg.StreamID, 1, controlOnly)
		if err != nil || len(ps) == 0 {
			select {
			case <-ctx.Done():
			case <-ch:
			case <-time.After(5 * time.Second):
			}
			continue
		}
		p := ps[0]
		ok, perm, err := t.push(ctx, cfg.Delivery, p.Token)
		switch {
		case ok || perm != nil:
			if perm != nil {
				t.count.add(ctx, "push_refused", 1)
			} else {
				t.count.add(ctx, "pushed", 1)
			}
			if perm != nil {
				t.log.WarnContext(ctx, "ssf: receiver refused a SET; dropped", "stream_id", cfg.StreamID, "jti", p.JTI, "err", perm)
			}
			if err := t.cfg.Store.Ack(ctx, cfg.StreamID, []string{p.JTI}); err != nil && ctx.Err() == nil {
				t.log.ErrorContext(ctx, "ssf: ack", "err", err)
				if errors.Is(err, lease.ErrFenced) {
					return // another replica leads: it delivers from now on
				}
			}
			attempt = 0
		default:
			if err := t.cfg.Store.RecordAttempt(ctx, p.JTI); errors.Is(err, lease.ErrFenced) {
				return // another replica leads: it delivers from now on
			}
			t.count.add(ctx, "push_failed", 1)
			d := t.cfg.MinBackoff << min(attempt, 20)
			if d > t.cfg.MaxBackoff || d <= 0 {
				d = t.cfg.MaxBackoff
			}
			d = d/2 + rand.N(d/2+1)
			attempt++
			t.log.WarnContext(ctx, "ssf: push failed, retrying", "stream_id", cfg.StreamID, "jti", p.JTI, "err", err, "backoff", d)
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
	}
}

// runSweep pauses idle streams (SweepInactive) until ctx ends, a few times per timeout.
func (t *Transmitter) runSweep(ctx context.Context) {
	every := min(max(t.cfg.InactivityTimeout/4, 100*time.Millisecond), time.Minute)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if _, err := t.SweepInactive(ctx); err != nil && ctx.Err() == nil {
			t.log.ErrorContext(ctx, "ssf: inactivity sweep", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// push POSTs one SET. ok: accepted (202). perm: the receiver rejected it with an RFC 8935
// error (400), which no retry will change. Otherwise err says why it should be retried.
func (t *Transmitter) push(ctx context.Context, d Delivery, token string) (ok bool, perm, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.EndpointURL, bytes.NewBufferString(token))
	if err != nil {
		return false, nil, err
	}
	req.Header.Set("Content-Type", "application/secevent+jwt")
	req.Header.Set("Accept", "application/json")
	if d.AuthorizationHeader != "" {
		req.Header.Set("Authorization", d.AuthorizationHeader)
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return false, nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch {
	case resp.StatusCode == http.StatusAccepted:
		return true, nil, nil
	case resp.StatusCode == http.StatusBadRequest:
		var e setError
		if json.Unmarshal(body, &e) == nil && e.Err != "" {
			return false, fmt.Errorf("%s: %s", e.Err, e.Description), nil
		}
		return false, nil, fmt.Errorf("receiver answered 400 without an RFC 8935 error")
	default:
		return false, nil, fmt.Errorf("receiver answered %s", resp.Status)
	}
}
