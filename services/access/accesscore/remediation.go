package accesscore

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
)

// Remediation is, for the end user's page, what happens to a threat on a device
// (values as in accessv1.BlockedRemediation).
type Remediation int

// The remediation states.
const (
	// RemediationUnknown: the remediation service's state is not known (no feed, or
	// the feed is broken).
	RemediationUnknown Remediation = iota
	RemediationAutomatic
	RemediationWaitingForApproval
	RemediationNone
	RemediationDone
)

// remediationDoneFor is how long a device whose investigation remediated everything
// counts as DONE (its alerts are being resolved and its risk and compliance follow);
// after that, a threat still blocking it has nothing removing it.
const remediationDoneFor = 10 * time.Minute

// remediations is the per-device remediation state, in memory: the feed's snapshot
// rebuilds it on every (re)connection, so it needs no cursor and no store.
type remediations struct {
	mu     sync.Mutex
	synced bool
	states map[string]remediationEntry
}

type remediationEntry struct {
	state Remediation
	since time.Time
}

func fromDeviceRemediation(st remediationv1.DeviceRemediationState) Remediation {
	switch st {
	case remediationv1.DeviceRemediationState_DEVICE_REMEDIATION_STATE_RUNNING:
		return RemediationAutomatic
	case remediationv1.DeviceRemediationState_DEVICE_REMEDIATION_STATE_PENDING_APPROVAL:
		return RemediationWaitingForApproval
	case remediationv1.DeviceRemediationState_DEVICE_REMEDIATION_STATE_REMEDIATED:
		return RemediationDone
	}
	return RemediationNone
}

// setRemediations replaces every device's state (a snapshot: devices not in it have
// no open investigation) and marks the view synced.
func (s *Service) setRemediations(states map[string]Remediation) {
	now := s.now()
	m := make(map[string]remediationEntry, len(states))
	for id, st := range states {
		if st != RemediationNone {
			m[id] = remediationEntry{state: st, since: now}
		}
	}
	s.remediations.mu.Lock()
	// A DONE state is not in the snapshot (it lists open investigations): keep the
	// recent ones.
	for id, e := range s.remediations.states {
		if _, ok := m[id]; !ok && e.state == RemediationDone && now.Sub(e.since) < remediationDoneFor {
			m[id] = e
		}
	}
	s.remediations.states, s.remediations.synced = m, true
	s.remediations.mu.Unlock()
	s.changes.notify()
}

// setRemediation records one device's new state.
func (s *Service) setRemediation(deviceID string, st Remediation) {
	now := s.now()
	s.remediations.mu.Lock()
	if st == RemediationNone {
		delete(s.remediations.states, deviceID)
	} else {
		if s.remediations.states == nil {
			s.remediations.states = map[string]remediationEntry{}
		}
		s.remediations.states[deviceID] = remediationEntry{state: st, since: now}
	}
	// Forget DONE states past their time so that the map holds only open and recent
	// investigations.
	for id, e := range s.remediations.states {
		if e.state == RemediationDone && now.Sub(e.since) >= remediationDoneFor {
			delete(s.remediations.states, id)
		}
	}
	s.remediations.mu.Unlock()
	s.changes.notify()
}

// remediationLost marks the view unknown (the feed broke).
func (s *Service) remediationLost() {
	s.remediations.mu.Lock()
	changed := s.remediations.synced
	s.remediations.synced = false
	s.remediations.mu.Unlock()
	if changed {
		s.changes.notify()
	}
}

// Remediation returns the device's remediation state.
func (s *Service) Remediation(deviceID string) Remediation {
	s.remediations.mu.Lock()
	defer s.remediations.mu.Unlock()
	if !s.remediations.synced {
		return RemediationUnknown
	}
	e, ok := s.remediations.states[deviceID]
	if !ok || (e.state == RemediationDone && s.now().Sub(e.since) >= remediationDoneFor) {
		return RemediationNone
	}
	return e.state
}

// RunRemediationFeed follows the remediation service's WatchDeviceRemediations until
// ctx ends: each (re)connection's snapshot replaces the view, each change updates
// it and wakes the end users' pages. While the stream is broken the state is
// unknown (the page then says nothing about remediation); it reconnects with
// jittered backoff (50 ms to 5 s). beforeWatch, when set, runs before each attempt
// (pass the connection's ResetConnectBackoff).
func (s *Service) RunRemediationFeed(ctx context.Context, client remediationv1.RemediationServiceClient, beforeWatch func()) {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		if beforeWatch != nil {
			beforeWatch()
		}
		synced, err := s.followRemediations(ctx, client)
		s.remediationLost()
		if ctx.Err() != nil {
			return
		}
		if synced {
			backoff = 50 * time.Millisecond
		}
		s.log.Warn("remediation feed broken; the end user's page does not say whether remediation runs until it is back", "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff/2 + rand.N(backoff/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// followRemediations runs one stream; synced reports whether it got past the snapshot.
func (s *Service) followRemediations(ctx context.Context, client remediationv1.RemediationServiceClient) (synced bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.WatchDeviceRemediations(ctx, &remediationv1.WatchDeviceRemediationsRequest{})
	if err != nil {
		return false, err
	}
	snapshot := map[string]Remediation{}
	for {
		m, err := stream.Recv()
		if err != nil {
			return synced, err
		}
		switch {
		case m.GetSynced() && !synced:
			s.setRemediations(snapshot)
			snapshot, synced = nil, true
		case m.GetDevice() != nil && m.GetDevice().GetDeviceId() != "":
			d := m.GetDevice()
			if synced {
				s.setRemediation(d.GetDeviceId(), fromDeviceRemediation(d.GetState()))
			} else {
				snapshot[d.GetDeviceId()] = fromDeviceRemediation(d.GetState())
			}
		}
	}
}
