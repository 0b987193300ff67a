package ssf

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"code.dny.dev/ssrf"
)

func TestPushGuardCheckURL(t *testing.T) {
	res := testResolver{
		"rx.example":               {netip.MustParseAddr("93.184.215.14")},
		"localhost":                {netip.MustParseAddr("127.0.0.1")},
		"metadata.google.internal": {netip.MustParseAddr("169.254.169.254")},
		"mixed.example":            {netip.MustParseAddr("93.184.215.14"), netip.MustParseAddr("10.1.2.3")},
		"v6.example":               {netip.MustParseAddr("2606:2800:21f:cb07:6820:80da:af6b:8b2c")},
		// Go's resolver may answer IPv4 addresses in IPv4-mapped form.
		"mapped-loopback.example": {netip.MustParseAddr("::ffff:127.0.0.1")},
		"mapped-public.example":   {netip.MustParseAddr("::ffff:93.184.215.14")},
	}
	prod := PushGuard{Resolver: res}
	dev := PushGuard{AllowHTTP: true, Resolver: res}
	allowLoopback := PushGuard{AllowHTTP: true, Resolver: res, Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}
	tests := []struct {
		name  string
		guard PushGuard
		url   string
		ok    bool
	}{
		{"https public name", prod, "https://rx.example/events", true},
		{"https public IPv4", prod, "https://93.184.215.14:8443/events", true},
		{"https public IPv6", prod, "https://v6.example/events", true},
		{"unresolvable name: decided at connect time", prod, "https://not-yet.example/events", true},
		{"http outside development mode", prod, "http://rx.example/events", false},
		{"http in development mode", dev, "http://rx.example/events", true},
		{"file scheme", dev, "file:///etc/passwd", false},
		{"gopher scheme", dev, "gopher://rx.example/", false},
		{"relative URL", dev, "/ssf/stream", false},
		{"user information", prod, "https://user:pass@rx.example/", false},
		{"loopback IPv4", dev, "http://127.0.0.1:7400/", false},
		{"loopback elsewhere in 127/8", dev, "http://127.1.2.3/", false},
		{"loopback IPv6", dev, "http://[::1]:7480/", false},
		{"localhost by name", dev, "http://localhost:7480/", false},
		{"cloud metadata", dev, "http://169.254.169.254/latest/meta-data/", false},
		{"cloud metadata by name", dev, "http://metadata.google.internal/computeMetadata/v1/", false},
		{"link-local IPv6", dev, "http://[fe80::1]/", false},
		{"private 10/8", dev, "http://10.0.0.1/", false},
		{"private 172.16/12", dev, "http://172.16.5.4/", false},
		{"private 192.168/16", dev, "http://192.168.1.1/", false},
		{"unique local IPv6", dev, "http://[fd00::1]/", false},
		{"unspecified IPv4", dev, "http://0.0.0.0:7480/", false},
		{"unspecified IPv6", dev, "http://[::]:7480/", false},
		{"multicast IPv4", dev, "http://224.0.0.1/", false},
		{"multicast IPv6", dev, "http://[ff02::1]/", false},
		{"shared address space", dev, "http://100.64.0.1/", false},
		{"IPv4-mapped loopback", dev, "http://[::ffff:127.0.0.1]/", false},
		{"IPv4-mapped metadata", dev, "http://[::ffff:169.254.169.254]/", false},
		{"NAT64 of metadata", dev, "http://[64:ff9b::a9fe:a9fe]/", false},
		{"a name with one private address", dev, "http://mixed.example/", false},
		{"allow-listed loopback", allowLoopback, "http://127.0.0.1:7400/", true},
		{"allow-listed loopback by name", allowLoopback, "http://localhost:7400/", true},
		{"allow-listed IPv6 loopback", allowLoopback, "http://[::1]:7400/", true},
		{"allow-listed loopback resolved in IPv4-mapped form", allowLoopback, "http://mapped-loopback.example:7400/", true},
		{"loopback resolved in IPv4-mapped form", dev, "http://mapped-loopback.example/", false},
		{"public address resolved in IPv4-mapped form", prod, "https://mapped-public.example/", true},
		{"allow-list does not open metadata", allowLoopback, "http://169.254.169.254/", false},
		{"allow-list does not open private", allowLoopback, "http://10.0.0.1/", false},
		{"allow-list does not allow http in production", PushGuard{Resolver: res, Allow: allowLoopback.Allow}, "http://127.0.0.1/", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.guard.CheckURL(context.Background(), tt.url)
			if (err == nil) != tt.ok {
				t.Fatalf("CheckURL(%q) = %v, want ok=%v", tt.url, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrRefusedDestination) {
				t.Fatalf("error %v is not ErrRefusedDestination", err)
			}
		})
	}
}

// rebinding resolves its name to a public address the first time (when the stream is
// created) and to loopback afterwards (when the transmitter connects).
type rebinding struct{ calls atomic.Int32 }

func (r *rebinding) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if r.calls.Add(1) == 1 {
		return []netip.Addr{netip.MustParseAddr("93.184.215.14")}, nil
	}
	return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
}

func TestPushGuardConnect(t *testing.T) {
	var hits atomic.Int32
	rx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer rx.Close()
	port := rx.Listener.Addr().(interface{ AddrPort() netip.AddrPort }).AddrPort().Port()
	byName := "http://localhost:" + strconv.Itoa(int(port)) + "/"
	tests := []struct {
		name  string
		guard PushGuard
		url   string
		ok    bool
	}{
		// The system resolver (localhost from /etc/hosts) and the Control hook.
		{"loopback refused at connect", PushGuard{AllowHTTP: true}, rx.URL, false},
		{"loopback name refused at connect", PushGuard{AllowHTTP: true}, byName, false},
		{"loopback allowed by the operator", PushGuard{AllowHTTP: true, Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, rx.URL, true},
		{"allow-list of another range", PushGuard{AllowHTTP: true, Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, rx.URL, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := hits.Load()
			resp, err := tt.guard.Client(5*time.Second).Post(tt.url, "application/secevent+jwt", strings.NewReader("x"))
			if resp != nil {
				resp.Body.Close()
			}
			if (err == nil) != tt.ok {
				t.Fatalf("POST %s: %v, want ok=%v", tt.url, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ssrf.ErrProhibitedIP) {
				t.Fatalf("error %v is not the guard's", err)
			}
			if got := hits.Load() - before; (got == 1) != tt.ok {
				t.Fatalf("receiver saw %d requests", got)
			}
		})
	}
	t.Run("redirects are not followed", func(t *testing.T) {
		redir := httptest.NewServer(http.RedirectHandler("http://169.254.169.254/", http.StatusTemporaryRedirect))
		defer redir.Close()
		g := PushGuard{AllowHTTP: true, Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
		resp, err := g.Client(5*time.Second).Post(redir.URL, "application/secevent+jwt", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusTemporaryRedirect {
			t.Fatalf("status %d: the redirect was followed", resp.StatusCode)
		}
	})
}

// TestPushRefusesDNSRebinding: a name that resolved to a public address when the stream
// was created and to loopback when the transmitter connects gets nothing; the SET stays
// in the outbox (retried, same jti) and the receiver sees no request.
func TestPushRefusesDNSRebinding(t *testing.T) {
	var hits atomic.Int32
	rx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer rx.Close()
	u, _ := url.Parse(rx.URL)
	f := newFixtureWith(t, "", func(c *Config) { c.Push = PushGuard{AllowHTTP: true, Resolver: &rebinding{}} })
	id := f.createStream(f.token, `{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"http://rebind.example:`+u.Port()+`/events"}}`).StreamID
	f.verifyEvent(id, "x")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = f.tx.RunPush(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var attempts int
		if err := f.store.read.QueryRowContext(ctx, f.store.q(`SELECT coalesce(max(attempts), 0) FROM outbox WHERE stream_id = ?`), id).Scan(&attempts); err != nil {
			t.Fatal(err)
		}
		if attempts >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no refused push attempt recorded")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the receiver on loopback got %d requests", n)
	}
	if ps, _, err := f.store.PendingSETs(ctx, id, 10, false); err != nil || len(ps) != 1 {
		t.Fatalf("outbox: %d SETs (%v), want the one refused SET kept", len(ps), err)
	}
}

func TestStreamCreateRefusesInternalEndpoints(t *testing.T) {
	f := newFixtureWith(t, "", func(c *Config) {
		c.Push = PushGuard{Resolver: testResolver{"rx.example": {netip.MustParseAddr("93.184.215.14")}}}
	})
	good := f.createStream(f.token, `{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"https://rx.example/events"}}`)
	for _, u := range []string{"http://rx.example/events", "https://127.0.0.1/", "https://169.254.169.254/", "https://[::1]/", "https://10.0.0.7/"} {
		body := `{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"` + u + `"}}`
		t.Run("create "+u, func(t *testing.T) {
			if code, b := f.do("POST", "/ssf/stream", f.token, body); code != http.StatusBadRequest || !strings.Contains(string(b), "invalid_request") {
				t.Fatalf("%d %s, want 400 invalid_request", code, b)
			}
		})
		t.Run("update to "+u, func(t *testing.T) {
			patch := `{"stream_id":"` + good.StreamID + `","delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"` + u + `"}}`
			if code, b := f.do("PATCH", "/ssf/stream", f.token, patch); code != http.StatusBadRequest {
				t.Fatalf("%d %s, want 400", code, b)
			}
			st, err := f.store.GetStream(context.Background(), "rp-a", good.StreamID)
			if err != nil || st.Config.Delivery.EndpointURL != "https://rx.example/events" {
				t.Fatalf("a refused update changed the stream: %+v %v", st, err)
			}
		})
	}
	if sts, _ := f.store.ListStreams(context.Background(), "rp-a"); len(sts) != 1 {
		t.Fatalf("%d streams stored, want only the good one", len(sts))
	}
}
