package consumer_test

import (
	"sync"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/condaccess/condaccess/internal/consumer/consumertest"
)

// healthRecorder records the statuses a consumer reports.
type healthRecorder struct {
	mu sync.Mutex
	by map[string]healthpb.HealthCheckResponse_ServingStatus
}

func (h *healthRecorder) SetServingStatus(name string, st healthpb.HealthCheckResponse_ServingStatus) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.by[name] = st
}

func (h *healthRecorder) get(name string) healthpb.HealthCheckResponse_ServingStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.by[name]
}

func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestStuckStopsAtTheEventAndReportsIt: an event that cannot be applied stops the
// consumer at its revision (never skipped: nothing after it is applied), the status
// names the revision and cause, health reports NOT_SERVING for the configured name;
// once the event applies the consumer resumes and health returns to SERVING.
func TestStuckStopsAtTheEventAndReportsIt(t *testing.T) {
	src := consumertest.NewSource[ev]()
	s := newStore(t)
	h := &healthRecorder{by: map[string]healthpb.HealthCheckResponse_ServingStatus{}}
	cfg := s.config(src)
	cfg.Name = "stuck-test"
	cfg.Health, cfg.HealthName = h, "test.v1.Service"
	for i := range 5 {
		src.Append(ev{Key: string(rune('a' + i))})
	}
	s.mu.Lock()
	s.has = true // start from the stored cursor 0, not a resync
	s.failAt[3] = 1 << 30
	s.mu.Unlock()
	c, _ := start(t, cfg)

	waitCond(t, "the consumer to be stuck at 3", func() bool {
		st := c.Status()
		return st.Stuck && st.StuckRevision == 3
	})
	st := c.Status()
	if st.StuckCause == "" || st.StuckSince.IsZero() || st.Revision != 2 {
		t.Errorf("stuck status = %+v; want revision 2, a cause and a time", st)
	}
	if got := h.get("test.v1.Service"); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health while stuck = %v", got)
	}
	// Retried, never skipped: 4 and 5 wait behind 3.
	waitCond(t, "a few retries", func() bool { return c.Status().Reconnects >= 3 })
	if applied, _ := s.snapshot(); len(applied) != 2 {
		t.Fatalf("applied %v while stuck at 3", applied)
	}

	s.mu.Lock()
	s.failAt[3] = 0
	s.mu.Unlock()
	waitRev(t, c, 5)
	if applied, _ := s.snapshot(); len(applied) != 5 {
		t.Errorf("applied %v, want 1..5", applied)
	}
	if st := c.Status(); st.Stuck {
		t.Errorf("still stuck after applying: %+v", st)
	}
	if got := h.get("test.v1.Service"); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health after recovery = %v", got)
	}
}
