package remediationstore_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/services/remediation"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestAgentHealthAcrossReplicas: with Config.Replicated, a replica lists an agent
// connected to another one with the health its recorded heartbeats imply; the
// heartbeats are recorded at most once per interval; when the agent moves to
// another replica, its old connection is ended as replaced at its next recorded
// heartbeat, and that connection's end does not mark the agent disconnected.
func TestAgentHealthAcrossReplicas(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	const every = time.Minute
	clk := &clock{t: time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC)}
	stA, stB := openPG(t, url), openPG(t, url)
	newSvc := func(st remediation.Store, replicated bool) *remediation.Service {
		return remediation.New(remediation.Config{Store: st, Risk: noRisk{}, HeartbeatInterval: every, Replicated: replicated, Now: clk.Now})
	}
	a, b := newSvc(stA, true), newSvc(stB, true)
	single := newSvc(stA, false)
	health := func(svc *remediation.Service) (remediation.AgentHealth, time.Time) {
		t.Helper()
		ags, _, err := svc.ListAgents(ctx, 10, "")
		if err != nil || len(ags) != 1 {
			t.Fatalf("ListAgents = %v, %v; want dev-1", ags, err)
		}
		return ags[0].Health, ags[0].LastHeartbeat
	}
	check := func(step string, svc *remediation.Service, want remediation.AgentHealth, wantBeat time.Time) {
		t.Helper()
		if got, beat := health(svc); got != want || (!wantBeat.IsZero() && !beat.Equal(wantBeat)) {
			t.Fatalf("%s: health %v, last heartbeat %v; want %v, %v", step, got, beat, want, wantBeat)
		}
	}
	t0 := clk.Now()
	onB, err := b.AgentConnect(ctx, remediation.AgentHello{DeviceID: "dev-1"})
	if err != nil {
		t.Fatal(err)
	}
	check("connected to the other replica", a, remediation.AgentHealthHealthy, t0)
	check("without Replicated, another replica's agent", single, remediation.AgentHealthDisconnected, time.Time{})
	clk.Add(4 * every)
	check("no heartbeat for 4 intervals", a, remediation.AgentHealthStale, t0)
	b.AgentHeartbeat(ctx, onB)
	t1 := clk.Now()
	check("after a heartbeat", a, remediation.AgentHealthHealthy, t1)
	clk.Add(every / 2)
	b.AgentHeartbeat(ctx, onB)
	check("a heartbeat within the interval is not recorded", a, remediation.AgentHealthHealthy, t1)

	// The agent reconnects to replica a. Its old connection on b is ended at its
	// next recorded heartbeat, and that changes nothing recorded.
	clk.Add(every)
	onA, err := a.AgentConnect(ctx, remediation.AgentHello{DeviceID: "dev-1"})
	if err != nil {
		t.Fatal(err)
	}
	t2 := clk.Now()
	clk.Add(every)
	select {
	case <-onB.Replaced():
		t.Fatal("the old connection ended before its next recorded heartbeat")
	default:
	}
	b.AgentHeartbeat(ctx, onB)
	select {
	case <-onB.Replaced():
	default:
		t.Fatal("the old connection was not ended as replaced at its recorded heartbeat")
	}
	if _, err := onB.Next(ctx); !errors.Is(err, remediation.ErrAborted) {
		t.Fatalf("old connection's Next = %v, want ErrAborted", err)
	}
	b.AgentDisconnect(ctx, onB)
	check("the old connection ended on the other replica", b, remediation.AgentHealthHealthy, t2)
	// The old connection's end, even recorded, yields to the newer open one.
	a.AgentHeartbeat(ctx, onA)
	check("the new connection's heartbeat", b, remediation.AgentHealthHealthy, clk.Now())
	a.AgentDisconnect(ctx, onA)
	check("the current connection ended", b, remediation.AgentHealthDisconnected, time.Time{})
}
