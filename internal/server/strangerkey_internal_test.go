package server

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc/peer"
)

// TestStrangerKeyIPv6Prefix: a caller without an identity (the end user's
// WatchBlockedStatus, GetBlockedStatus) is limited per client address. One IPv6
// client holds a whole /64 and can pick a new source address per connection, so
// keyed by the full address it would get a fresh share of watches for each: the
// key is the /64. IPv4 addresses (also IPv4-mapped ones) stay whole.
func TestStrangerKeyIPv6Prefix(t *testing.T) {
	key := func(ip string) string {
		ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}})
		return identityKey(ctx)
	}
	tests := []struct {
		name string
		a, b string
		same bool
	}{
		{"two addresses of one IPv6 /64 (the attack)", "2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:fffe", true},
		{"a random interface id in the same /64", "2001:db8:1:2::1", "2001:db8:1:2:8c3e:11ff:fe00:4a2b", true},
		{"two IPv6 /64s", "2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"two IPv4 addresses", "192.0.2.1", "192.0.2.2", false},
		{"IPv4 and its IPv4-mapped form", "192.0.2.1", "::ffff:192.0.2.1", true},
		{"two IPv4-mapped addresses", "::ffff:192.0.2.1", "::ffff:192.0.2.2", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ka, kb := key(tt.a), key(tt.b)
			if ka == "" || kb == "" {
				t.Fatalf("no key: %q, %q", ka, kb)
			}
			if (ka == kb) != tt.same {
				t.Errorf("identityKey(%s) = %q, identityKey(%s) = %q; same = %v, want %v", tt.a, ka, tt.b, kb, ka == kb, tt.same)
			}
		})
	}

	// The watch cap then holds for the whole /64: one address per watch is refused
	// past the cap.
	w := newWatchLimiter(3)
	for i, ip := range []string{"2001:db8::1", "2001:db8::2", "2001:db8::3", "2001:db8::4"} {
		got := w.acquire(connKey(peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 1}})))
		if want := i < 3; got != want {
			t.Errorf("watch %d from %s: acquired = %v, want %v", i+1, ip, got, want)
		}
	}
}
