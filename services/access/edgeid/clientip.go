// Package edgeid verifies what enforcement points forward about a request: the user's OIDC token, the device's certificate, and the client IP.
package edgeid

import (
	"net/netip"
	"strings"
)

// ClientIP returns the client address of a request that reached condaccess from peer
// (the connection's peer; the zero Addr when unknown) with the X-Forwarded-For values
// xff, trusting hops proxies: the addresses are the XFF entries followed by the peer,
// and the client is the one hops places from the right (Envoy's xff_num_trusted_hops
// with use_remote_address). hops 0 is the peer itself. Fewer entries than hops, or an
// entry at that place that is not an IP address, gives the zero Addr (unknown): a
// client cannot shorten, lengthen or garble the list to pick its address, because
// only entries appended by trusted proxies are read.
func ClientIP(peer netip.Addr, xff []string, hops int) netip.Addr {
	if hops <= 0 {
		return peer.Unmap()
	}
	// Walk the entries from the right without allocating.
	need := hops // entries to skip from the right, the last one being the answer
	for i := len(xff) - 1; i >= 0; i-- {
		v := xff[i]
		for v != "" {
			j := strings.LastIndexByte(v, ',')
			entry := v[j+1:]
			if j < 0 {
				v = ""
			} else {
				v = v[:j]
			}
			need--
			if need == 0 {
				a, err := netip.ParseAddr(strings.TrimSpace(entry))
				if err != nil {
					return netip.Addr{}
				}
				return a.Unmap()
			}
		}
	}
	return netip.Addr{}
}
