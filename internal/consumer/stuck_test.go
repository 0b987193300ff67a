package consumer_test

import (
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

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

// TestUndeliverableEventIsStuck: a Recv error that says the next event cannot be
// received (over the client's receive limit: RESOURCE_EXHAUSTED without details, or
// not decodable: INTERNAL) marks the consumer stuck at the next revision; a broken
// connection or a server's own limit (RESOURCE_EXHAUSTED with an ErrorInfo) does not.
func TestUndeliverableEventIsStuck(t *testing.T) {
	tooMany, _ := status.New(codes.ResourceExhausted, "too many watches").WithDetails(&errdetails.ErrorInfo{Reason: "TOO_MANY_WATCHES"})
	tests := []struct {
		name      string
		err       error
		wantStuck bool
	}{
		{"over the receive limit", status.Error(codes.ResourceExhausted, "grpc: received message larger than max (15728839 vs. 4194304)"), true},
		{"not decodable", status.Error(codes.Internal, "grpc: failed to unmarshal the received message"), true},
		{"connection broken", unavailable, false},
		{"server limit with ErrorInfo", tooMany.Err(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := consumertest.NewSource[ev]()
			s := newStore(t)
			src.Append(ev{Key: "a"})
			src.Append(ev{Key: "b"})
			c, _ := start(t, s.config(src))
			waitRev(t, c, 2)
			// The revision may come from the initial listing before the watch is open;
			// a Disconnect then would reach no stream.
			waitCond(t, "the watch to be open", func() bool { return len(src.Watches()) >= 1 })
			src.Disconnect(tt.err)
			waitCond(t, "the consumer to reconnect", func() bool { return c.Status().Reconnects >= 1 })
			st := c.Status()
			if st.Stuck != tt.wantStuck {
				t.Fatalf("stuck = %v, want %v (%+v)", st.Stuck, tt.wantStuck, st)
			}
			if tt.wantStuck && st.StuckRevision != 3 {
				t.Errorf("stuck at %d, want 3", st.StuckRevision)
			}
		})
	}
}
