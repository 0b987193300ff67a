package remediation

import (
	"context"
	"errors"
)

// Change is one event of the store's log as a replica needs it: which action (or
// investigation) changed, and into what state. Replicas of the service on one
// database learn of each other's changes by watching the log and calling Observe.
type Change struct {
	// ActionID, DeviceID and ActionState describe an action's change (ActionID empty
	// for an investigation's).
	ActionID    string
	DeviceID    string
	ActionState ActionState
	// InvestigationState is an investigation's new state (for an investigation's change).
	InvestigationState InvestigationState
}

// Observe applies a change committed by any replica (this one included) to what this
// replica does in memory: a QUEUED action of an agent connected here is queued on its
// connection (sent once per connection, so the push after this replica's own commit
// and its event never send it twice); a change that sets a deadline (an approval's
// expiry, a result's timeout) wakes the timers; a remediated investigation wakes the
// alert resolver. The timers and the resolver run on the lease's holder only (Run),
// so this is how a deadline or resolution committed on another replica reaches them.
func (s *Service) Observe(ctx context.Context, c Change) error {
	if c.ActionID == "" {
		if c.InvestigationState == StateRemediated {
			kick(s.resolveKick)
		}
		return nil
	}
	if c.ActionState == ActionStatePendingApproval || c.ActionState == ActionStateSent {
		kick(s.timerKick)
	}
	if c.ActionState != ActionStateQueued || !s.connected(c.DeviceID) {
		return nil
	}
	// The event's copy may be stale by now: send the action as stored.
	a, err := s.store.GetAction(ctx, c.ActionID)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if a.State == ActionStateQueued && a.DeviceID == c.DeviceID {
		s.push(a)
	}
	return nil
}

// Redeliver queues every QUEUED or SENT action of each agent connected here on its
// connection again (each is sent at most once per connection): for a replica that
// lost its watch of the log and so may have missed changes.
func (s *Service) Redeliver(ctx context.Context) error {
	s.mu.Lock()
	conns := make([]*AgentConn, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		pending, err := s.store.DeviceActions(ctx, c.DeviceID, ActionStateQueued, ActionStateSent)
		if err != nil {
			return err
		}
		for _, a := range pending {
			c.push(a)
		}
	}
	return nil
}

func (s *Service) connected(deviceID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[deviceID] != nil
}

// recordAgent stores connection c's agent record (connected or, at its end, not),
// unless a newer connection of the device (on another replica) has recorded its
// own since: an old connection's end must not mark the device's agent disconnected.
func (s *Service) recordAgent(ctx context.Context, c *AgentConn, connected bool) error {
	c.mu.Lock()
	ag := &Agent{DeviceID: c.DeviceID, Version: c.hello.Version, Hostname: c.hello.Hostname, ConnectTime: c.connected,
		LastHeartbeat: c.heartbeat, DetectionRoots: c.hello.DetectionRoots, Connected: connected}
	c.mu.Unlock()
	return s.store.Update(ctx, func(tx Tx) error {
		cur, err := tx.Agent(c.DeviceID)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if cur != nil && cur.ConnectTime.After(ag.ConnectTime) {
			return nil
		}
		return tx.PutAgent(ag)
	})
}
