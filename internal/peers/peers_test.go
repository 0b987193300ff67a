package peers_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/condaccess/condaccess/internal/peers"
)

func TestParse(t *testing.T) {
	var long strings.Builder
	for i := range 40 {
		fmt.Fprintf(&long, "10.0.0.%d:1,", i)
	}
	tests := []struct {
		name      string
		in        string
		addrs     []string
		dns       string
		grpc      string
		loopback  bool
		wantError string // substring of the error; "" means valid
	}{
		{name: "one address", in: "127.0.0.1:7401", addrs: []string{"127.0.0.1:7401"}, grpc: "dns:///127.0.0.1:7401", loopback: true},
		{name: "one name", in: "risk.condaccess.svc:7400", addrs: []string{"risk.condaccess.svc:7400"}, grpc: "dns:///risk.condaccess.svc:7400"},
		{name: "list", in: "127.0.0.1:7401,127.0.0.1:7411", addrs: []string{"127.0.0.1:7401", "127.0.0.1:7411"}, grpc: "condaccess-list:///127.0.0.1:7401,127.0.0.1:7411", loopback: true},
		{name: "list with spaces", in: " 10.0.0.1:7400 , risk-2:7400 ", addrs: []string{"10.0.0.1:7400", "risk-2:7400"}, grpc: "condaccess-list:///10.0.0.1:7400,risk-2:7400"},
		{name: "ipv6 list", in: "[::1]:7401,localhost:7402", addrs: []string{"[::1]:7401", "localhost:7402"}, grpc: "condaccess-list:///[::1]:7401,localhost:7402", loopback: true},
		{name: "dns target", in: "dns:///risk-peers.condaccess.svc.cluster.local:7400", dns: "risk-peers.condaccess.svc.cluster.local:7400", grpc: "dns:///risk-peers.condaccess.svc.cluster.local:7400"},
		{name: "dns localhost is loopback", in: "dns:///localhost:7400", dns: "localhost:7400", grpc: "dns:///localhost:7400", loopback: true},
		{name: "listen-all address of a local service", in: "[::]:7400", addrs: []string{"[::]:7400"}, grpc: "dns:///[::]:7400"},

		// A list is loopback only when every entry is: plaintext to a loopback entry
		// must not carry a remote one along.
		{name: "mixed list is not loopback", in: "127.0.0.1:7401,10.0.0.2:7401", addrs: []string{"127.0.0.1:7401", "10.0.0.2:7401"}, grpc: "condaccess-list:///127.0.0.1:7401,10.0.0.2:7401"},
		{name: "name looking like loopback is not loopback", in: "127.0.0.1.evil.example:7401", addrs: []string{"127.0.0.1.evil.example:7401"}, grpc: "dns:///127.0.0.1.evil.example:7401"},

		{name: "empty", in: "  ", wantError: "empty peer address"},
		{name: "no port", in: "risk", wantError: "not host:port"},
		{name: "no host", in: ":7400", wantError: "no host"},
		{name: "port zero", in: "risk:0", wantError: "port"},
		{name: "port too large", in: "risk:70000", wantError: "port"},
		{name: "port not a number", in: "risk:http", wantError: "port"},
		{name: "empty list entry", in: "a:1,,b:2", wantError: "empty entry"},
		{name: "trailing comma", in: "a:1,", wantError: "empty entry"},
		{name: "duplicate entry", in: "a:1,a:1", wantError: "listed twice"},
		{name: "too many entries", in: long.String() + "x:1", wantError: "more than 32"},
		{name: "dns without port", in: "dns:///risk", wantError: "not host:port"},
		{name: "dns with a DNS server", in: "dns://8.8.8.8/risk:7400", wantError: "DNS server"},
		{name: "dns list", in: "dns:///a:1,b:2", wantError: "names one host"},
		{name: "other scheme", in: "unix:///run/risk.sock", wantError: `scheme "unix"`},
		{name: "http URL", in: "http://risk:7400", wantError: `scheme "http"`},
		{name: "dns without slashes", in: "dns:risk:7400", wantError: "not host:port"},
		{name: "path in entry", in: "risk:7400/x", wantError: "port"},
		{name: "bad characters in name", in: "ri sk:7400", wantError: "neither an IP address nor a DNS name"},
		{name: "bracketed name", in: "[risk]:7400", wantError: "not an IP address"},
		{name: "too long", in: strings.Repeat("a", 5000) + ":1", wantError: "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := peers.Parse(tt.in)
			if tt.wantError != "" {
				if err == nil {
					t.Fatalf("Parse(%q) = %v, want an error containing %q", tt.in, got, tt.wantError)
				}
				if !strings.Contains(err.Error(), tt.wantError) || !errors.Is(err, peers.ErrSyntax) {
					t.Fatalf("Parse(%q) error = %v, want one containing %q and wrapping ErrSyntax", tt.in, err, tt.wantError)
				}
				if !strings.Contains(err.Error(), peers.Syntax) {
					t.Errorf("error %q does not say the syntax", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if !slices.Equal(got.Addrs(), tt.addrs) || got.DNS() != tt.dns {
				t.Errorf("Parse(%q) = addrs %q dns %q, want %q %q", tt.in, got.Addrs(), got.DNS(), tt.addrs, tt.dns)
			}
			if got.GRPCTarget() != tt.grpc {
				t.Errorf("GRPCTarget = %q, want %q", got.GRPCTarget(), tt.grpc)
			}
			if got.IsLoopback() != tt.loopback {
				t.Errorf("IsLoopback = %v, want %v", got.IsLoopback(), tt.loopback)
			}
			// String round-trips.
			again, err := peers.Parse(got.String())
			if err != nil || again.String() != got.String() {
				t.Errorf("Parse(String()) = %v, %v; want %v", again, err, got)
			}
		})
	}
}

func TestZeroTargetRefusesToDial(t *testing.T) {
	if _, err := peers.NewClient(peers.Target{}); !errors.Is(err, peers.ErrSyntax) {
		t.Fatalf("NewClient(zero Target) error = %v, want ErrSyntax", err)
	}
	if (peers.Target{}).IsLoopback() {
		t.Error("a zero Target claims to be loopback")
	}
}
