package ssf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"code.dny.dev/ssrf"
)

// ErrRefusedDestination is the cause of every push endpoint the guard refuses.
var ErrRefusedDestination = errors.New("ssf: push endpoint refused")

// Resolver resolves a host name (net.DefaultResolver in production).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// PushGuard decides where push delivery may connect: a receiver's endpoint_url is
// chosen by whoever holds a receiver token, so without it condaccess would POST to
// any address it can reach (loopback admin ports, cloud metadata at 169.254.169.254,
// the private network). Every address in the IANA special-purpose registries
// (loopback, link-local, private, unspecified, multicast, shared, documentation,
// their IPv6 equivalents and IPv4-mapped forms; code.dny.dev/ssrf keeps the list) is
// refused unless an Allow prefix names it. The guard runs twice: when a stream is
// created or updated (the URL and what its host resolves to then) and on every
// connection (net.Dialer's Control hook sees the address actually dialled, so a name
// that resolves elsewhere later, DNS rebinding, is refused too).
type PushGuard struct {
	// AllowHTTP accepts http:// endpoints (development mode); otherwise https only.
	AllowHTTP bool
	// Allow are the prefixes the operator allows despite the deny list
	// (--ssf-push-allow-cidr), e.g. 127.0.0.0/8 for a receiver on the same host.
	Allow []netip.Prefix
	// Resolver resolves host names at create/update time and when dialling (default
	// net.DefaultResolver).
	Resolver Resolver
}

func (g PushGuard) guardian() *ssrf.Guardian {
	var v4, v6 []netip.Prefix
	for _, p := range g.Allow {
		if p.Addr().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	return ssrf.New(ssrf.WithAnyPort(), ssrf.WithAllowedV4Prefixes(v4...), ssrf.WithAllowedV6Prefixes(v6...))
}

func (g PushGuard) resolver() Resolver {
	if g.Resolver == nil {
		return net.DefaultResolver
	}
	return g.Resolver
}

// CheckURL refuses an endpoint_url that push delivery must not use: another scheme
// than https (http too in development mode), user information, no host, or a host that
// is (or now resolves to) a refused address. A host name that does not resolve yet is
// accepted: the connection-time check decides when it does.
func (g PushGuard) CheckURL(ctx context.Context, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Hostname() == "" || u.Opaque != "" {
		return fmt.Errorf("%w: endpoint_url must be an absolute https URL", ErrRefusedDestination)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && g.AllowHTTP:
	case u.Scheme == "http":
		return fmt.Errorf("%w: endpoint_url must use https (http only in development mode)", ErrRefusedDestination)
	default:
		return fmt.Errorf("%w: endpoint_url scheme %q is not https", ErrRefusedDestination, u.Scheme)
	}
	if u.User != nil {
		return fmt.Errorf("%w: endpoint_url must not carry user information (use authorization_header)", ErrRefusedDestination)
	}
	guard := g.guardian()
	host := u.Hostname()
	if ip, err := netip.ParseAddr(host); err == nil {
		if err := guard.SafeAddr(ip.Unmap()); err != nil {
			return fmt.Errorf("%w: %v", ErrRefusedDestination, err)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	ips, err := g.resolver().LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil
	}
	for _, ip := range ips {
		// The resolver may answer an IPv4 address in its IPv4-mapped form; the dialer
		// connects to (and the Control hook sees) the IPv4 address.
		if err := guard.SafeAddr(ip.Unmap()); err != nil {
			return fmt.Errorf("%w: %s resolves to a refused address: %v", ErrRefusedDestination, host, err)
		}
	}
	return nil
}

// Client returns the HTTP client push delivery uses: every connection passes the
// guard's address check, no proxy from the environment (the check must see the
// receiver's address), and no redirects (RFC 8935 answers 202 or an error; a
// redirect would leave the checked URL).
func (g PushGuard) Client(timeout time.Duration) *http.Client {
	guard := g.guardian()
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: guard.Safe}
	dial := d.DialContext
	if g.Resolver != nil {
		// Resolve with the configured resolver and dial each address in turn; the
		// Control hook still checks what is dialled.
		dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ips := []netip.Addr{}
			if ip, err := netip.ParseAddr(host); err == nil {
				ips = append(ips, ip)
			} else if ips, err = g.Resolver.LookupNetIP(ctx, "ip", host); err != nil {
				return nil, err
			}
			var errs []error
			for _, ip := range ips {
				c, err := d.DialContext(ctx, network, net.JoinHostPort(ip.Unmap().String(), port))
				if err == nil {
					return c, nil
				}
				errs = append(errs, err)
			}
			if len(errs) == 0 {
				return nil, fmt.Errorf("%s: no address", host)
			}
			return nil, errors.Join(errs...)
		}
	}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           dial,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{
		Timeout:   timeout,
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// ParsePrefixes parses --ssf-push-allow-cidr values (a bare address is its own /32 or /128).
func ParsePrefixes(vals []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range vals {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			a, aerr := netip.ParseAddr(v)
			if aerr != nil {
				return nil, fmt.Errorf("--ssf-push-allow-cidr %q: not a CIDR prefix or an address", v)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
