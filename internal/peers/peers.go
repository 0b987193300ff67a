// Package peers dials a condaccess service given as one address, a comma-separated list of replicas or a dns:/// target, balancing calls round robin over the replicas whose gRPC health is SERVING.
package peers

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	_ "google.golang.org/grpc/health" // client-side health checking
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"

	"github.com/condaccess/condaccess/internal/auth"
)

const (
	// Scheme is the resolver scheme of a list of replicas:
	// condaccess-list:///host1:port1,host2:port2. It is registered per connection
	// (grpc.WithResolvers), not globally.
	Scheme = "condaccess-list"
	// MaxAddrs caps the entries of one list.
	MaxAddrs = 32
	// maxLen caps a flag value.
	maxLen = 4096
	// HealthService is the health service name checked on every replica: "", the
	// whole server, which is what a readiness probe (`condaccess health`) checks and
	// what a server reports NOT_SERVING when it stops. The per-service names also
	// turn NOT_SERVING while that service's event consumer is stuck; replicas share
	// one database, so skipping such a replica would only cut the callers' own healthy
	// feeds (and with one replica, every call), not route around the fault.
	HealthService = ""
	// Syntax is the accepted syntax, for flag help and error messages.
	Syntax = "host:port, a comma-separated list host:port,host:port or dns:///name:port"
)

// serviceConfig balances round robin over the replicas and checks each one's gRPC
// health (grpc.health.v1.Health/Watch): a replica that is unreachable or not
// SERVING gets no calls until it is again.
var serviceConfig = fmt.Sprintf(`{"loadBalancingConfig":[{"round_robin":{}}],"healthCheckConfig":{"serviceName":%q}}`, HealthService)

// keepaliveTime and keepaliveTimeout: a connection pings its replica after
// keepaliveTime without traffic and is closed when no answer comes within
// keepaliveTimeout, so a replica whose node vanished without closing its connections
// (power loss, partition) leaves the rotation, and the streams on it fail and resume
// elsewhere, within 40 s rather than when TCP gives up (minutes). keepaliveTime is
// above the servers' --keepalive-min-time default (10 s). Variables for tests.
var (
	keepaliveTime    = 30 * time.Second
	keepaliveTimeout = 10 * time.Second
)

// ErrSyntax is wrapped by every Parse error.
var ErrSyntax = errors.New("want " + Syntax)

// Target is a parsed peer address: a list of host:port entries, or one dns:/// name.
type Target struct {
	addrs []string
	dns   string
}

// Parse reads a peer flag value: host:port (resolved by DNS, every address it
// resolves to is a replica), a comma-separated list of host:port (spaces around
// entries are ignored), or dns:///name:port. The port is required; a DNS server in
// the target (dns://server/name) is not supported.
func Parse(s string) (Target, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return Target{}, fmt.Errorf("empty peer address: %w", ErrSyntax)
	case len(s) > maxLen:
		return Target{}, fmt.Errorf("peer address longer than %d bytes: %w", maxLen, ErrSyntax)
	}
	if i := strings.Index(s, ":/"); i >= 0 && !strings.Contains(s[:i], ",") && !strings.Contains(s[:i], "[") {
		// A URL-shaped target: only dns:/// is accepted.
		scheme := s[:i]
		rest, ok := strings.CutPrefix(s, "dns:///")
		if scheme != "dns" {
			return Target{}, fmt.Errorf("peer address %s: scheme %q is not supported: %w", quote(s), scheme, ErrSyntax)
		}
		if !ok {
			return Target{}, fmt.Errorf("peer address %s: a DNS server in the target is not supported, write dns:///name:port: %w", quote(s), ErrSyntax)
		}
		if strings.Contains(rest, ",") {
			return Target{}, fmt.Errorf("peer address %s: a dns:/// target names one host: %w", quote(s), ErrSyntax)
		}
		if err := checkHostPort(rest); err != nil {
			return Target{}, fmt.Errorf("peer address %s: %v: %w", quote(s), err, ErrSyntax)
		}
		return Target{dns: rest}, nil
	}
	var t Target
	for e := range strings.SplitSeq(s, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			return Target{}, fmt.Errorf("peer address %s: empty entry in the list: %w", quote(s), ErrSyntax)
		}
		if err := checkHostPort(e); err != nil {
			return Target{}, fmt.Errorf("peer address %s: entry %s: %v: %w", quote(s), quote(e), err, ErrSyntax)
		}
		if slices.Contains(t.addrs, e) {
			return Target{}, fmt.Errorf("peer address %s: %s is listed twice: %w", quote(s), quote(e), ErrSyntax)
		}
		if len(t.addrs) == MaxAddrs {
			return Target{}, fmt.Errorf("peer address %s: more than %d entries: %w", quote(s), MaxAddrs, ErrSyntax)
		}
		t.addrs = append(t.addrs, e)
	}
	return t, nil
}

// quote quotes s for an error message, shortened past 100 bytes.
func quote(s string) string {
	if len(s) > 100 {
		return strconv.Quote(s[:100]) + "..."
	}
	return strconv.Quote(s)
}

// checkHostPort accepts host:port with a non-empty host (a DNS name or an IP
// address, IPv6 in brackets) and a port in 1..65535.
func checkHostPort(hp string) error {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return errors.New("not host:port")
	}
	if host == "" {
		return errors.New("no host")
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("port %q is not a number in 1..65535", port)
	}
	if net.ParseIP(host) != nil {
		return nil
	}
	if strings.HasPrefix(hp, "[") {
		return fmt.Errorf("%q is not an IP address", host)
	}
	for _, r := range host {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return fmt.Errorf("host %q is neither an IP address nor a DNS name", host)
		}
	}
	return nil
}

// Addrs returns a list's entries (one for a single host:port), nil for a dns:/// target.
func (t Target) Addrs() []string { return slices.Clone(t.addrs) }

// DNS returns a dns:/// target's name:port, "" for a list.
func (t Target) DNS() string { return t.dns }

// String returns the target in flag syntax.
func (t Target) String() string {
	if t.dns != "" {
		return "dns:///" + t.dns
	}
	return strings.Join(t.addrs, ",")
}

// IsLoopback reports whether every replica the target can name is on loopback (a
// loopback IP or localhost): only then may a client talk to it without TLS.
func (t Target) IsLoopback() bool {
	if t.dns != "" {
		return auth.IsLoopback(t.dns)
	}
	if len(t.addrs) == 0 {
		return false
	}
	for _, a := range t.addrs {
		if !auth.IsLoopback(a) {
			return false
		}
	}
	return true
}

// GRPCTarget is the target string for grpc.NewClient with DialOptions: a single
// host:port and a dns:/// target go through gRPC's DNS resolver (every address the
// name resolves to is a replica), a list through the condaccess-list resolver.
func (t Target) GRPCTarget() string {
	switch {
	case t.dns != "":
		return "dns:///" + t.dns
	case len(t.addrs) == 1:
		return "dns:///" + t.addrs[0]
	}
	return Scheme + ":///" + strings.Join(t.addrs, ",")
}

// DialOptions are the options that make a connection to GRPCTarget balance round
// robin over the healthy replicas, and notice a replica that stopped answering
// (keepalive). Append them to the caller's credentials and interceptors.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithResolvers(listBuilder{}),
		grpc.WithDefaultServiceConfig(serviceConfig),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime, Timeout: keepaliveTimeout, PermitWithoutStream: true}),
	}
}

// NewClient returns a connection to t's replicas with opts (credentials, ...) and
// DialOptions.
func NewClient(t Target, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	if len(t.addrs) == 0 && t.dns == "" {
		return nil, fmt.Errorf("peers: empty target: %w", ErrSyntax)
	}
	return grpc.NewClient(t.GRPCTarget(), append(slices.Clip(opts), DialOptions()...)...)
}

// Dial parses addr and returns NewClient's connection.
func Dial(addr string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	t, err := Parse(addr)
	if err != nil {
		return nil, err
	}
	return NewClient(t, opts...)
}

// listBuilder resolves condaccess-list:///h1:p1,h2:p2 to one endpoint per entry.
// Each address carries its entry as ServerName, so with TLS each replica's
// certificate is verified for the name (or IP) it is listed under, and :authority
// names that replica.
type listBuilder struct{}

func (listBuilder) Scheme() string { return Scheme }

func (listBuilder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	t, err := Parse(target.Endpoint())
	if err != nil {
		return nil, err
	}
	if t.dns != "" {
		return nil, fmt.Errorf("peers: %s:/// takes host:port entries, not %q", Scheme, t.String())
	}
	eps := make([]resolver.Endpoint, len(t.addrs))
	for i, a := range t.addrs {
		eps[i] = resolver.Endpoint{Addresses: []resolver.Address{{Addr: a, ServerName: a}}}
	}
	if err := cc.UpdateState(resolver.State{Endpoints: eps}); err != nil {
		return nil, err
	}
	return staticResolver{}, nil
}

// OverrideAuthority makes the connection's default authority the first entry (the
// addresses' ServerName takes precedence per replica).
func (listBuilder) OverrideAuthority(target resolver.Target) string {
	first, _, _ := strings.Cut(target.Endpoint(), ",")
	return strings.TrimSpace(first)
}

// staticResolver has nothing to re-resolve: each entry is dialed by its name.
type staticResolver struct{}

func (staticResolver) ResolveNow(resolver.ResolveNowOptions) {}
func (staticResolver) Close()                                {}
