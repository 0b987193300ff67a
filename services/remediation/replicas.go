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
// unless another connection of the device (a newer one, on another replica) holds
// the record and is open: then c has been replaced, and it is ended as on a local
// reconnect (Next fails with ErrAborted). So an agent that moved to another replica
// is not marked disconnected by its old connection's end, and that old connection
// ends at its next recorded heartbeat. No clocks are compared.
func (s *Service) recordAgent(ctx context.Context, c *AgentConn, connected bool) error {
	c.mu.Lock()
	ag := &Agent{DeviceID: c.DeviceID, Version: c.hello.Version, Hostname: c.hello.Hostname, ConnectTime: c.connected,
		LastHeartbeat: c.heartbeat, DetectionRoots: c.hello.DetectionRoots, Connected: connected, ConnectionID: c.connID}
	c.mu.Unlock()
	replaced := false
	err := s.store.Update(ctx, func(tx Tx) error {
		replaced = false
		cur, err := tx.Agent(c.DeviceID)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if cur != nil && cur.Connected && cur.ConnectionID != c.connID {
			replaced = true
			return nil
		}
		return tx.PutAgent(ag)
	})
	if err == nil && replaced {
		s.mu.Lock()
		if s.conns[c.DeviceID] == c {
			delete(s.conns, c.DeviceID)
			close(c.replaced)
		}
		s.mu.Unlock()
	}
	return err
}
