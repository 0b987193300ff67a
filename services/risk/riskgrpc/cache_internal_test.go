package riskgrpc

import (
	"strings"
	"testing"
	"time"

	"github.com/condaccess/condaccess/services/risk"
)

// TestEventCacheBytes: the decoded event cache never holds more than its byte cap,
// whatever the size of the events, and still serves every event.
func TestEventCacheBytes(t *testing.T) {
	const capBytes = 64 << 10
	s := New(Config{EventCacheBytes: capBytes})
	big := strings.Repeat("x", 20<<10)
	for rev := int64(1); rev <= 50; rev++ {
		payload, err := EncodeEvent(risk.Event{Time: time.Unix(rev, 0), TraceParent: big})
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.event(risk.StoredEvent{Revision: rev, Payload: payload})
		if err != nil || m.GetEvent().GetRevision() != rev {
			t.Fatalf("event %d = %v, %v", rev, m, err)
		}
		if got := s.CachedEventBytes(); got > capBytes {
			t.Fatalf("after event %d the cache holds %d bytes, cap %d", rev, got, capBytes)
		}
		// The newest event is cached (the oldest ones made room for it).
		if c := s.recent[rev%eventCacheSize]; c != m {
			t.Fatalf("event %d not cached", rev)
		}
	}
	if got := s.CachedEventBytes(); got == 0 {
		t.Error("nothing cached: the cap should leave room for a few events")
	}
}
