package server

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	grpctap "google.golang.org/grpc/tap"
)

// TestStrangerKeyIPv6Prefix: a caller without an identity (the end user's
// WatchBlockedStatus, GetBlockedStatus) is limited per client address. One IPv6
// client holds a whole /64 and can pick a new source address per connection, so
// keyed by the full address it would get a fresh share of watches for each; and a
// /48 is given free by tunnel brokers, so keyed by the /64 one attacker had 65,536
// shares: the key is the /48. IPv4 addresses (also IPv4-mapped ones) stay whole.
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
		{"two /64s of one IPv6 /48 (a tunnel broker's free /48)", "2001:db8:1:2::1", "2001:db8:1:ffff::1", true},
		{"two IPv6 /48s", "2001:db8:1:2::1", "2001:db8:2:2::1", false},
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

	// The watch cap then holds for the whole /48: one /64 per watch is refused past
	// the cap.
	w := newWatchLimiter(3)
	for i, ip := range []string{"2001:db8::1", "2001:db8:0:1::2", "2001:db8:0:2::3", "2001:db8:0:3::4"} {
		got := w.acquire(connKey(peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 1}})))
		if want := i < 3; got != want {
			t.Errorf("watch %d from %s: acquired = %v, want %v", i+1, ip, got, want)
		}
	}
}

// TestStrangerStreamsPerIPv6Prefix: the open-method streams of callers without a
// certificate (EnrollDeviceIdentity, GetBlockedStatus, WatchBlockedStatus, health)
// are capped per host (MaxStrangerStreamsPerHost) inside a total
// (MaxStrangerStreams). A WatchBlockedStatus stream holds its slot as long as it
// stays open, so with the per-host cap keyed by the full IPv6 address one client
// rotating through its /64 (or through the /64s of its /48) would hold the whole
// total and refuse every device's enrollment. The /48 is one host.
func TestStrangerStreamsPerIPv6Prefix(t *testing.T) {
	const method = "/condaccess.access.v1.AccessService/WatchBlockedStatus"
	tests := []struct {
		name  string
		addrs func(i int) string
	}{
		{"one IPv6 /64, a new address per stream", func(i int) string { return fmt.Sprintf("2001:db8:7:7::%x", i+1) }},
		{"one IPv6 /48, a new /64 per stream", func(i int) string { return fmt.Sprintf("2001:db8:7:%x::1", i+1) }},
		{"one IPv4 address", func(int) string { return "192.0.2.7" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tap := refuseStrangers(false)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			open := 0
			var last error
			for i := 0; i < MaxStrangerStreams; i++ {
				pctx := peer.NewContext(ctx, &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(tt.addrs(i)), Port: 40000 + i}})
				if _, err := tap(pctx, &grpctap.Info{FullMethodName: method}); err != nil {
					last = err
					continue
				}
				open++
			}
			if open != MaxStrangerStreamsPerHost {
				t.Fatalf("%d streams admitted from one host, want %d (MaxStrangerStreamsPerHost)", open, MaxStrangerStreamsPerHost)
			}
			if got := status.Code(last); got != codes.ResourceExhausted {
				t.Fatalf("refusal: %v, want RESOURCE_EXHAUSTED", last)
			}
			// Another host still gets in: the attacker did not use up the total.
			other := peer.NewContext(ctx, &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP("198.51.100.9"), Port: 1}})
			if _, err := tap(other, &grpctap.Info{FullMethodName: "/condaccess.compliance.v1.DeviceIdentityService/EnrollDeviceIdentity"}); err != nil {
				t.Fatalf("another host's enrollment: %v, want admitted", err)
			}
		})
	}
}

// TestStrangerWatchesDoNotStarveEnrollment: the end user's WatchBlockedStatus streams
// stay open and keep their stranger slot all along. Eight hosts holding eight each
// took the whole MaxStrangerStreams pool, and every device's EnrollDeviceIdentity
// (and every certificate-less health probe) was then refused, for as long as the
// watches stayed open. Watches have a pool of their own.
func TestStrangerWatchesDoNotStarveEnrollment(t *testing.T) {
	const (
		watch  = "/condaccess.access.v1.AccessService/WatchBlockedStatus"
		enroll = "/condaccess.compliance.v1.DeviceIdentityService/EnrollDeviceIdentity"
		health = "/grpc.health.v1.Health/Check"
	)
	tap := refuseStrangers(false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	from := func(ip string) context.Context {
		return peer.NewContext(ctx, &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}})
	}
	held := 0
	for h := 0; held < MaxStrangerStreams; h++ {
		for i := 0; i < MaxStrangerStreamsPerHost; i++ {
			if _, err := tap(from(fmt.Sprintf("203.0.113.%d", h+1)), &grpctap.Info{FullMethodName: watch}); err != nil {
				t.Fatalf("watch %d from host %d: %v", i, h, err)
			}
			held++
		}
	}
	// The watch pool is full: one more watch, from a fresh host, is refused.
	if _, err := tap(from("203.0.113.200"), &grpctap.Info{FullMethodName: watch}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("watch past the pool: %v, want RESOURCE_EXHAUSTED", err)
	}
	for _, m := range []string{enroll, health} {
		if _, err := tap(from("198.51.100.1"), &grpctap.Info{FullMethodName: m}); err != nil {
			t.Errorf("%s while strangers hold %d watches: %v, want admitted", m, held, err)
		}
	}
	// Unary open calls still have their own caps (that host holds two calls already).
	for i := 2; i < MaxStrangerStreamsPerHost; i++ {
		if _, err := tap(from("198.51.100.1"), &grpctap.Info{FullMethodName: enroll}); err != nil {
			t.Fatalf("enrollment %d: %v", i, err)
		}
	}
	if _, err := tap(from("198.51.100.1"), &grpctap.Info{FullMethodName: enroll}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("enrollment past the per-host cap: %v, want RESOURCE_EXHAUSTED", err)
	}
}

// TestStalledStrangerCallsLoseTheirSlot: a caller without a certificate that sends a
// call's headers and then nothing kept its stranger slot for ever (the library waits
// for the request without a deadline), so eight such calls from each of eight hosts
// refused every device's enrollment for as long as the attacker liked. An open unary
// call now ends at strangerCallTimeout, its slot freed; a watch has no such deadline.
func TestStalledStrangerCallsLoseTheirSlot(t *testing.T) {
	old := strangerCallTimeout
	strangerCallTimeout = 100 * time.Millisecond
	defer func() { strangerCallTimeout = old }()
	const (
		enroll = "/condaccess.compliance.v1.DeviceIdentityService/EnrollDeviceIdentity"
		watch  = "/condaccess.access.v1.AccessService/WatchBlockedStatus"
	)
	tap := refuseStrangers(false)
	conn, cancel := context.WithCancel(context.Background()) // the connections stay open
	defer cancel()
	from := func(ip string) context.Context {
		return peer.NewContext(conn, &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}})
	}
	// The attack: every slot held by calls that never send their request.
	var stalled []context.Context
	for h := 0; len(stalled) < MaxStrangerStreams; h++ {
		for range MaxStrangerStreamsPerHost {
			ctx, err := tap(from(fmt.Sprintf("203.0.113.%d", h+1)), &grpctap.Info{FullMethodName: enroll})
			if err != nil {
				t.Fatalf("stalled call %d: %v", len(stalled), err)
			}
			if _, ok := ctx.Deadline(); !ok {
				t.Fatalf("a stranger's %s has no deadline", enroll)
			}
			stalled = append(stalled, ctx)
		}
	}
	if _, err := tap(from("198.51.100.1"), &grpctap.Info{FullMethodName: enroll}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("enrollment with every slot held: %v, want RESOURCE_EXHAUSTED", err)
	}
	// The stalled calls end at their deadline (the library then fails their read)...
	for i, ctx := range stalled {
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("stalled call %d still open", i)
		}
	}
	// ...and a device enrolls again.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := tap(from("198.51.100.1"), &grpctap.Info{FullMethodName: enroll})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("enrollment after the stalled calls' deadline: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A watch is meant to stay open: no deadline.
	ctx, err := tap(from("198.51.100.2"), &grpctap.Info{FullMethodName: watch})
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := ctx.Deadline(); ok {
		t.Errorf("a stranger's watch has a deadline (%v)", d)
	}
}
