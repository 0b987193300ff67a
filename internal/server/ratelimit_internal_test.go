package server

import (
	"fmt"
	"testing"
)

// TestRateLimiterSweepsAmortized: with every bucket busy (none full, so a sweep frees
// nothing), new identities past maxBuckets cost one sweep per doubling of the map,
// not a scan of the whole map each (40,000 new busy keys: 2 sweeps, not 30,000); and
// idle buckets are still dropped once the count reaches the threshold.
func TestRateLimiterSweepsAmortized(t *testing.T) {
	r := newRateLimiter([]RateLimit{{Methods: []string{"/m"}, Rate: 0.001, Burst: 2}})
	busy := func(i int) {
		b := r.bucket(bucketKey{identity: fmt.Sprint("busy-", i)})
		b.Allow() // one token taken: not full, so not dropped
	}
	for i := range 4 * maxBuckets {
		busy(i)
	}
	if r.sweeps > 2 {
		t.Fatalf("%d sweeps for %d busy keys, want at most 2 (one per doubling past %d)", r.sweeps, 4*maxBuckets, maxBuckets)
	}
	if got := len(r.buckets); got != 4*maxBuckets {
		t.Fatalf("%d buckets kept, want every busy one (%d)", got, 4*maxBuckets)
	}

	idle := newRateLimiter([]RateLimit{{Methods: []string{"/m"}, Rate: 1000, Burst: 1}})
	for i := range maxBuckets + 1 {
		idle.bucket(bucketKey{identity: fmt.Sprint("idle-", i)}) // full: idle
	}
	if idle.sweeps != 1 || len(idle.buckets) != 1 {
		t.Fatalf("idle buckets: %d sweeps, %d kept; want 1 sweep keeping only the new key", idle.sweeps, len(idle.buckets))
	}
}
