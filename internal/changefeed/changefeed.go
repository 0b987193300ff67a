// Package changefeed turns a listing of small resources (id and etag) into a stream of changes: a snapshot, then each creation, change and deletion, woken by an in-process notifier and by a periodic re-read for other replicas' writes.
package changefeed

import (
	"context"
	"sync"
	"time"
)

// Notifier wakes everyone waiting when Notify is called. The zero value is ready.
type Notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

// Wait returns a channel closed at the next Notify.
func (n *Notifier) Wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

// Notify wakes the waiters.
func (n *Notifier) Notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}

// Defaults of Config.
const (
	DefaultPoll      = time.Second
	DefaultHeartbeat = 15 * time.Second
)

// Config configures Follow.
type Config struct {
	// Wake, when set, returns a channel closed at this process's next change.
	Wake func() <-chan struct{}
	// List returns every resource's etag by id.
	List func(ctx context.Context) (map[string]string, error)
	// Change sends a created or changed resource (deleted false) or a deleted one.
	Change func(id, etag string, deleted bool) error
	// Synced is sent after the first listing's resources.
	Synced func() error
	// Heartbeat is sent after Heartbeat of silence.
	Heartbeat func() error
	// Poll is how often the listing is read without a wake-up (other replicas' writes
	// on a shared database); default DefaultPoll. HeartbeatEvery defaults to
	// DefaultHeartbeat.
	Poll, HeartbeatEvery time.Duration
}

// Follow sends the current resources, Synced, then every difference between one
// listing and the next, until ctx ends (nil) or a callback fails (its error).
func Follow(ctx context.Context, cfg Config) error {
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.HeartbeatEvery <= 0 {
		cfg.HeartbeatEvery = DefaultHeartbeat
	}
	poll := time.NewTicker(cfg.Poll)
	defer poll.Stop()
	idle := time.NewTimer(cfg.HeartbeatEvery)
	defer idle.Stop()
	var prev map[string]string
	for {
		var wake <-chan struct{}
		if cfg.Wake != nil {
			wake = cfg.Wake() // before listing, so a change during the listing wakes the next round
		}
		cur, err := cfg.List(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		sent := false
		for id, etag := range cur {
			if old, ok := prev[id]; !ok || old != etag {
				if err := cfg.Change(id, etag, false); err != nil {
					return err
				}
				sent = true
			}
		}
		for id, etag := range prev {
			if _, ok := cur[id]; !ok {
				if err := cfg.Change(id, etag, true); err != nil {
					return err
				}
				sent = true
			}
		}
		if prev == nil && cfg.Synced != nil {
			if err := cfg.Synced(); err != nil {
				return err
			}
			sent = true
		}
		if sent {
			idle.Reset(cfg.HeartbeatEvery)
		}
		prev = cur
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-poll.C:
		case <-idle.C:
			if cfg.Heartbeat != nil {
				if err := cfg.Heartbeat(); err != nil {
					return err
				}
			}
			idle.Reset(cfg.HeartbeatEvery)
		}
	}
}
