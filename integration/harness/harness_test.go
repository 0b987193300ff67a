package harness

import (
	"net"
	"strconv"
	"testing"
)

// TestFreeAddrsBelowEphemeralRange: the ports handed to the suite's processes are
// never ports the kernel hands out by itself. Restart kills a process and starts it
// on the same port; in between, any process listening on port 0 (or connecting) could
// be given a port of the ephemeral range, so such a port could be lost to the
// restarted process ("address already in use"), one way a restart test fails at
// random while other tests run.
func TestFreeAddrsBelowEphemeralRange(t *testing.T) {
	lo, hi := listenPorts()
	if hi-lo < 1000 {
		t.Skipf("the range below this machine's ephemeral ports is too small (%d..%d): FreeAddrs falls back to port 0", lo, hi)
	}
	addrs, err := FreeAddrs(50)
	if err != nil {
		t.Fatal(err)
	}
	picked := map[int]bool{}
	for _, a := range addrs {
		_, p, _ := net.SplitHostPort(a)
		port, _ := strconv.Atoi(p)
		if port < lo || port > hi {
			t.Errorf("%s: port outside %d..%d", a, lo, hi)
		}
		if picked[port] {
			t.Errorf("%s handed out twice", a)
		}
		picked[port] = true
	}

	// The kernel's own choices (listeners on port 0, the source ports of outgoing
	// connections) stay above the range.
	for i := range 200 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if port <= hi {
			t.Fatalf("listener %d on port 0 was given port %d, inside the range FreeAddrs picks from (%d..%d)", i, port, lo, hi)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	for i := range 200 {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		port := c.LocalAddr().(*net.TCPAddr).Port
		c.Close()
		if port <= hi {
			t.Fatalf("outgoing connection %d took source port %d, inside the range FreeAddrs picks from (%d..%d)", i, port, lo, hi)
		}
	}
}
