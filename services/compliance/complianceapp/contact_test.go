package complianceapp

import (
	"testing"
	"time"
)

// TestContactGate: a contact read from the database is used for risk_as_of only once
// the local log has seen the events committed before it; a newer contact waiting
// does not hold back an older one already covered; contacts never go backwards.
func TestContactGate(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	var g contactGate
	steps := []struct {
		name    string
		observe *contactAfter
		rev     int64
		want    time.Time
	}{
		{"nothing read yet", nil, 5, time.Time{}},
		{"contact ahead of the log is held back", &contactAfter{at(1), 10}, 9, time.Time{}},
		{"a newer one waits too", &contactAfter{at(2), 12}, 9, time.Time{}},
		{"the log reaches the first: released", nil, 10, at(1)},
		{"still short of the second", nil, 11, at(1)},
		{"an older contact read late is ignored", &contactAfter{at(0), 3}, 11, at(1)},
		{"the log reaches the second", nil, 12, at(2)},
		{"a contact read at the head the log has seen is released at once", &contactAfter{at(3), 12}, 12, at(3)},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if s.observe != nil {
				g.observe(s.observe.t, s.observe.head)
			}
			if got := g.asOf(s.rev); !got.Equal(s.want) {
				t.Fatalf("asOf(%d) = %v, want %v", s.rev, got, s.want)
			}
		})
	}
	// Bounded: a log that never catches up keeps at most maxPendingContacts waiting.
	for i := range 3 * maxPendingContacts {
		g.observe(at(10+i), int64(100+i))
	}
	if len(g.pending) != maxPendingContacts {
		t.Fatalf("%d contacts pending, want at most %d", len(g.pending), maxPendingContacts)
	}
	if got := g.asOf(1 << 40); !got.Equal(at(10 + 3*maxPendingContacts - 1)) {
		t.Fatalf("asOf after the log caught up = %v, want the newest contact", got)
	}
}
