package ssf

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/condaccess/condaccess/internal/consumer"
	"github.com/condaccess/condaccess/internal/eventlog"
)

var (
	keyOnce sync.Once
	keys    [2]*rsa.PrivateKey
)

// testKeys returns two 2048-bit keys, generated once per test binary.
func testKeys(t *testing.T) [2]*rsa.PrivateKey {
	t.Helper()
	keyOnce.Do(func() {
		for i := range keys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			keys[i] = k
		}
	})
	return keys
}

func testSigner(t *testing.T, i int) *Signer {
	t.Helper()
	s, err := NewSigner(testKeys(t)[i])
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type fixture struct {
	t     *testing.T
	store *Store
	tx    *Transmitter
	srv   *httptest.Server
	token string // receiver "rp-a"
	other string // receiver "rp-b"
}

func newFixture(t *testing.T, dir string) *fixture {
	t.Helper()
	return newFixtureWith(t, dir, nil)
}

// testResolver resolves the test's host names: rx.example to a public address; any
// other name fails, as it would without DNS.
type testResolver map[string][]netip.Addr

func (r testResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := r[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// loopbackGuard lets tests push to their httptest receivers on 127.0.0.1, as
// --ssf-push-allow-cidr 127.0.0.0/8 does.
func loopbackGuard() PushGuard {
	return PushGuard{AllowHTTP: true, Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Resolver: testResolver{"rx.example": {netip.MustParseAddr("93.184.215.14")}, "localhost": {netip.MustParseAddr("127.0.0.1")}}}
}

// newFixtureWith is newFixture with the transmitter's configuration changed by edit.
func newFixtureWith(t *testing.T, dir string, edit func(*Config)) *fixture {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	st := openTestStore(t, dir)
	t.Cleanup(func() { st.Close() })
	mux := http.NewServeMux()
	srv := httptest.NewServer(withTestIdentity(mux))
	t.Cleanup(srv.Close)
	cfg := Config{Issuer: srv.URL, Store: st, Signer: testSigner(t, 0), Logger: slog.New(slog.DiscardHandler),
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, PollWait: 30 * time.Second, Push: loopbackGuard()}
	if edit != nil {
		edit(&cfg)
	}
	tx := NewTransmitter(cfg)
	tx.Register(mux)
	f := &fixture{t: t, store: st, tx: tx, srv: srv, token: NewToken(), other: NewToken()}
	for name, tok := range map[string]string{"rp-a": f.token, "rp-b": f.other} {
		if err := st.AddReceiver(context.Background(), name, tok); err != nil && !errors.Is(err, ErrExists) {
			t.Fatal(err)
		}
	}
	return f
}

// do sends a request and returns the status and body.
func (f *fixture) do(method, path, token, body string) (int, []byte) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (f *fixture) createStream(token, body string) StreamConfig {
	f.t.Helper()
	code, b := f.do("POST", "/ssf/stream", token, body)
	if code != http.StatusCreated {
		f.t.Fatalf("create stream: %d %s", code, b)
	}
	var c StreamConfig
	if err := json.Unmarshal(b, &c); err != nil {
		f.t.Fatal(err)
	}
	return c
}

func TestSignVerify(t *testing.T) {
	s, other := testSigner(t, 0), testSigner(t, 1)
	now := time.Unix(1_800_000_000, 0)
	good := func() map[string]any {
		return map[string]any{
			"iss": "https://tx.example", "jti": "j-1", "iat": now.Unix(), "aud": "https://rx.example",
			"sub_id": map[string]any{"format": "opaque", "id": "dev-1"},
			"events": map[string]any{EventRiskLevelChange: map[string]any{"current_level": "HIGH", "principal": "DEVICE"}},
		}
	}
	sign := func(sg *Signer, c map[string]any) string {
		tok, err := sg.Sign(c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	plainJWT := func() string { // right key, but typ JWT: an ID token is not a SET
		sg, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: testKeys(t)[0]}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", s.KeyID()))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(good())
		o, _ := sg.Sign(b)
		tok, _ := o.CompactSerialize()
		return tok
	}
	with := func(k string, v any) string {
		c := good()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return sign(s, c)
	}
	tampered := func() string {
		p := strings.Split(sign(s, good()), ".")
		c := good()
		c["aud"] = "https://rx.example"
		c["jti"] = "j-2"
		b, _ := json.Marshal(c)
		p[1] = base64.RawURLEncoding.EncodeToString(b)
		return strings.Join(p, ".")
	}
	tests := []struct {
		name, token, code string
	}{
		{"valid", sign(s, good()), ""},
		{"aud as array", with("aud", []string{"x", "https://rx.example"}), ""},
		{"other key", sign(other, good()), ErrCodeInvalidKey},
		{"tampered payload", tampered(), ErrCodeInvalidKey},
		{"typ JWT", plainJWT(), ErrCodeInvalidRequest},
		{"wrong iss", with("iss", "https://evil.example"), ErrCodeInvalidIssuer},
		{"wrong aud", with("aud", "https://other.example"), ErrCodeInvalidAud},
		{"iat too old", with("iat", now.Add(-2*time.Hour).Unix()), ErrCodeInvalidRequest},
		{"iat in the future", with("iat", now.Add(time.Hour).Unix()), ErrCodeInvalidRequest},
		{"no iat", with("iat", nil), ErrCodeInvalidRequest},
		{"sub claim", with("sub", "u-1"), ErrCodeInvalidRequest},
		{"exp claim", with("exp", now.Add(time.Hour).Unix()), ErrCodeInvalidRequest},
		{"no jti", with("jti", nil), ErrCodeInvalidRequest},
		{"no events", with("events", map[string]any{}), ErrCodeInvalidRequest},
		{"garbage", "not.a.jwt", ErrCodeInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := VerifySET(tt.token, VerifyOptions{Issuer: "https://tx.example", Audience: "https://rx.example",
				Keys: s.JWKS(), MaxAge: time.Hour, Skew: time.Minute, Now: now})
			if tt.code == "" {
				if err != nil {
					t.Fatalf("VerifySET: %v", err)
				}
				if c.Jti != "j-1" || c.SubID.ID != "dev-1" {
					t.Errorf("claims = %+v", c)
				}
				return
			}
			var se *SETError
			if !errors.As(err, &se) || se.Code != tt.code {
				t.Fatalf("err = %v, want code %s", err, tt.code)
			}
		})
	}
}

func TestSignerKeyIsPersisted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k", "signing-key.pem")
	a, err := LoadOrCreateSigner(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreateSigner(path)
	if err != nil {
		t.Fatal(err)
	}
	if a.KeyID() != b.KeyID() || a.key.N.BitLen() != 2048 {
		t.Fatalf("kid %s then %s, %d bits", a.KeyID(), b.KeyID(), a.key.N.BitLen())
	}
}

func TestStreamManagementAuth(t *testing.T) {
	f := newFixture(t, "")
	s := f.createStream(f.token, `{}`)
	id := s.StreamID
	endpoints := []struct{ method, path, body string }{
		{"POST", "/ssf/stream", `{}`},
		{"GET", "/ssf/stream?stream_id=" + id, ``},
		{"PATCH", "/ssf/stream", `{"stream_id":"` + id + `","description":"x"}`},
		{"PUT", "/ssf/stream", `{"stream_id":"` + id + `"}`},
		{"GET", "/ssf/status?stream_id=" + id, ``},
		{"POST", "/ssf/status", `{"stream_id":"` + id + `","status":"paused"}`},
		{"POST", "/ssf/subjects:add", `{"stream_id":"` + id + `","subject":{"format":"opaque","id":"dev-1"}}`},
		{"POST", "/ssf/subjects:remove", `{"stream_id":"` + id + `","subject":{"format":"opaque","id":"dev-1"}}`},
		{"POST", "/ssf/verify", `{"stream_id":"` + id + `"}`},
		{"POST", "/ssf/poll/" + id, `{"returnImmediately":true}`},
		{"DELETE", "/ssf/stream?stream_id=" + id, ``},
	}
	for _, e := range endpoints {
		for _, tt := range []struct {
			name, token string
			want        int
		}{
			{"no token", "", http.StatusUnauthorized},
			{"wrong token", "not-a-token", http.StatusUnauthorized},
			{"another receiver's token", f.other, http.StatusNotFound},
		} {
			if e.method == "POST" && e.path == "/ssf/stream" && tt.token == f.other {
				continue // creating a stream of its own is allowed
			}
			t.Run(e.method+" "+e.path+"/"+tt.name, func(t *testing.T) {
				code, b := f.do(e.method, e.path, tt.token, e.body)
				if code != tt.want {
					t.Fatalf("%d %s, want %d", code, b, tt.want)
				}
			})
		}
	}
	// Nothing changed: the stream is still there, enabled, without description.
	code, b := f.do("GET", "/ssf/stream?stream_id="+id, f.token, "")
	if code != 200 || strings.Contains(string(b), `"description"`) {
		t.Fatalf("after refused calls: %d %s", code, b)
	}
	code, b = f.do("GET", "/ssf/status?stream_id="+id, f.token, "")
	if code != 200 || !strings.Contains(string(b), `"enabled"`) {
		t.Fatalf("status after refused calls: %d %s", code, b)
	}
	// The owner may do everything.
	for _, e := range endpoints {
		t.Run("owner "+e.method+" "+e.path, func(t *testing.T) {
			code, b := f.do(e.method, e.path, f.token, e.body)
			if code >= 300 {
				t.Fatalf("%d %s", code, b)
			}
		})
	}
}

func TestStreamConfigValidation(t *testing.T) {
	f := newFixture(t, "")
	tests := []struct {
		name, body string
		want       int
	}{
		{"poll by default", `{}`, 201},
		{"push", `{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"https://rx.example/events"}}`, 201},
		{"push without url", `{"delivery":{"method":"urn:ietf:rfc:8935"}}`, 400},
		{"push to a file url", `{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"file:///etc/passwd"}}`, 400},
		{"unknown method", `{"delivery":{"method":"urn:example:carrier-pigeon"}}`, 400},
		{"not json", `{`, 400},
		{"aud chosen by the receiver", `{"aud":"someone-else"}`, 201}, // ignored on create: aud is transmitter-supplied
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, b := f.do("POST", "/ssf/stream", f.token, tt.body)
			if code != tt.want {
				t.Fatalf("%d %s, want %d", code, b, tt.want)
			}
			if code == 201 && !strings.Contains(string(b), `"aud":"rp-a"`) {
				t.Errorf("aud is not the receiver's: %s", b)
			}
		})
	}
	s := f.createStream(f.token, `{"events_requested":["`+EventSessionRevoked+`","urn:example:unknown"]}`)
	t.Run("stream cap", func(t *testing.T) {
		for {
			code, b := f.do("POST", "/ssf/stream", f.token, `{}`)
			if code == http.StatusConflict {
				break
			}
			if code != http.StatusCreated {
				t.Fatalf("%d %s", code, b)
			}
		}
		sts, err := f.store.ListStreams(context.Background(), "rp-a")
		if err != nil || len(sts) != MaxStreamsPerReceiver {
			t.Fatalf("%d streams (%v), want the cap %d", len(sts), err, MaxStreamsPerReceiver)
		}
		if code, b := f.do("POST", "/ssf/stream", f.other, `{}`); code != http.StatusCreated {
			t.Fatalf("another receiver's first stream: %d %s", code, b)
		}
	})
	if len(s.EventsDelivered) != 1 || s.EventsDelivered[0] != EventSessionRevoked {
		t.Errorf("events_delivered = %v", s.EventsDelivered)
	}
	if s.Delivery.EndpointURL != f.srv.URL+"/ssf/poll/"+s.StreamID {
		t.Errorf("poll endpoint_url = %q", s.Delivery.EndpointURL)
	}
	code, b := f.do("PATCH", "/ssf/stream", f.token, `{"stream_id":"`+s.StreamID+`","aud":"x"}`)
	if code != 400 {
		t.Errorf("PATCH aud: %d %s, want 400", code, b)
	}
}

type pollResp struct {
	Sets          map[string]string `json:"sets"`
	MoreAvailable bool              `json:"moreAvailable"`
}

func (f *fixture) poll(id, body string) pollResp {
	f.t.Helper()
	code, b := f.do("POST", "/ssf/poll/"+id, f.token, body)
	if code != 200 {
		f.t.Fatalf("poll: %d %s", code, b)
	}
	var p pollResp
	if err := json.Unmarshal(b, &p); err != nil {
		f.t.Fatal(err)
	}
	return p
}

// verifyEvent enqueues one verification SET on the stream (as a receiver would ask).
func (f *fixture) verifyEvent(id, state string) {
	f.t.Helper()
	if code, b := f.do("POST", "/ssf/verify", f.token, `{"stream_id":"`+id+`","state":"`+state+`"}`); code != 204 {
		f.t.Fatalf("verify: %d %s", code, b)
	}
}

func TestPoll(t *testing.T) {
	f := newFixture(t, "")
	id := f.createStream(f.token, `{}`).StreamID
	for _, s := range []string{"s1", "s2", "s3"} {
		f.verifyEvent(id, s)
	}
	p := f.poll(id, `{"maxEvents":2,"returnImmediately":true}`)
	if len(p.Sets) != 2 || !p.MoreAvailable {
		t.Fatalf("first poll: %d sets, moreAvailable %v", len(p.Sets), p.MoreAvailable)
	}
	var first []string
	for jti, tok := range p.Sets {
		c, err := VerifySET(tok, VerifyOptions{Issuer: f.srv.URL, Audience: "rp-a", Keys: f.tx.cfg.Signer.JWKS(), MaxAge: time.Minute, Skew: time.Minute})
		if err != nil || c.Jti != jti || c.SubID.ID != id {
			t.Fatalf("SET %s: %v %+v", jti, err, c)
		}
		first = append(first, jti)
	}
	// Not acknowledged: the same SETs (same jti) come again.
	again := f.poll(id, `{"max_events":2,"return_immediately":true}`)
	for _, j := range first {
		if again.Sets[j] != p.Sets[j] {
			t.Fatalf("unacknowledged SET %s not redelivered identically", j)
		}
	}
	// Ack one, reject one with setErrs (snake_case): the third comes, nothing more.
	body, _ := json.Marshal(map[string]any{"ack": first[:1], "set_errs": map[string]any{first[1]: map[string]string{"err": "invalid_state", "description": "x"}}, "returnImmediately": true})
	p = f.poll(id, string(body))
	if len(p.Sets) != 1 || p.MoreAvailable || p.Sets[first[0]] != "" || p.Sets[first[1]] != "" {
		t.Fatalf("after ack: %+v", p)
	}
	var last string
	for j := range p.Sets {
		last = j
	}
	p = f.poll(id, `{"ack":["`+last+`"],"maxEvents":0}`)
	if len(p.Sets) != 0 {
		t.Fatalf("maxEvents 0 returned %d sets", len(p.Sets))
	}
	// A long poll waits for the next SET.
	done := make(chan pollResp)
	go func() { done <- f.poll(id, `{"returnImmediately":false}`) }()
	// The poll is parked once it waits on the change channel; enqueue after that.
	f.verifyEvent(id, "late")
	select {
	case p := <-done:
		if len(p.Sets) != 1 {
			t.Fatalf("long poll: %+v", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("long poll did not return")
	}
	// Bad requests.
	for _, b := range []string{`{"maxEvents":-1}`, `{"maxEvents":100000}`, `{`} {
		if code, out := f.do("POST", "/ssf/poll/"+id, f.token, b); code != 400 {
			t.Errorf("poll %s: %d %s, want 400", b, code, out)
		}
	}
}

func TestPushRetriesWithSameJTIAndSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	var got []string // jti per delivery attempt
	fail := 2
	rx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Header.Get("Content-Type") != "application/secevent+jwt" || r.Header.Get("Authorization") != "Bearer rx-secret" {
			w.WriteHeader(400)
			return
		}
		jws, err := jose.ParseSigned(string(b), []jose.SignatureAlgorithm{jose.RS256})
		if err != nil {
			w.WriteHeader(400)
			return
		}
		var c Claims
		_ = json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &c)
		mu.Lock()
		defer mu.Unlock()
		got = append(got, c.Jti)
		if fail > 0 {
			fail--
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer rx.Close()

	f := newFixture(t, dir)
	id := f.createStream(f.token, `{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"`+rx.URL+`","authorization_header":"Bearer rx-secret"}}`).StreamID
	f.verifyEvent(id, "one")
	// Not running yet: the SET waits in the store. "Restart": a new transmitter on the same store.
	f.store.Close()
	f2 := newFixture(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go f2.tx.RunPush(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ps, _, err := f2.store.PendingSETs(ctx, id, 10, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("SET not delivered")
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 3 || got[0] != got[1] || got[1] != got[2] {
		t.Fatalf("attempts %v: want 3 with one jti", got)
	}
}

func TestPushFollowsAnUpdatedEndpoint(t *testing.T) {
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) }))
	defer down.Close()
	got := make(chan string, 10)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- string(b)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer up.Close()
	f := newFixture(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); _ = f.tx.RunPush(ctx) }()
	id := f.createStream(f.token, `{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"`+down.URL+`"}}`).StreamID
	f.verifyEvent(id, "x")
	if code, b := f.do("PATCH", "/ssf/stream", f.token, `{"stream_id":"`+id+`","delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"`+up.URL+`"}}`); code != 200 {
		t.Fatalf("PATCH: %d %s", code, b)
	}
	select {
	case tok := <-got:
		c, err := VerifySET(tok, VerifyOptions{Issuer: f.srv.URL, Audience: "rp-a", Keys: f.tx.cfg.Signer.JWKS(), MaxAge: time.Minute, Skew: time.Minute})
		if err != nil || c.Events[EventVerification] == nil {
			t.Fatalf("pushed SET: %v %+v", err, c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the SET did not reach the updated endpoint")
	}
	cancel()
	<-done
}

func TestKeyRotationKeepsThePreviousKey(t *testing.T) {
	dir := t.TempDir()
	ring, err := OpenKeyRing(dir)
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{"iss": "https://tx", "jti": "j", "iat": time.Now().Unix(), "aud": "rp",
		"sub_id": map[string]any{"format": "opaque", "id": "s"}, "events": map[string]any{EventVerification: map[string]any{}}}
	old, err := ring.Sign(claims)
	if err != nil {
		t.Fatal(err)
	}
	opts := func(ks jose.JSONWebKeySet) VerifyOptions {
		return VerifyOptions{Issuer: "https://tx", Audience: "rp", Keys: ks, MaxAge: time.Minute, Skew: time.Minute}
	}
	before := ring.JWKS()
	kid, err := RotateKey(dir) // as `condaccess ssf rotate-key` does, from outside
	if err != nil {
		t.Fatal(err)
	}
	after := ring.JWKS()
	if len(after.Keys) != 2 || after.Keys[0].KeyID != kid || after.Keys[1].KeyID != before.Keys[0].KeyID {
		t.Fatalf("JWKS after rotation: %+v", after.Keys)
	}
	fresh, err := ring.Sign(claims)
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"signed before": old, "signed after": fresh} {
		if _, err := VerifySET(tok, opts(after)); err != nil {
			t.Errorf("%s the rotation: %v", name, err)
		}
	}
	// A receiver that still holds only the old JWKS cannot verify the new key's SETs
	// (so it must refetch), and after a second rotation the first key is gone.
	if _, err := VerifySET(fresh, opts(before)); err == nil {
		t.Error("old JWKS verified a SET of the new key")
	}
	if _, err := RotateKey(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifySET(old, opts(ring.JWKS())); err == nil {
		t.Error("a key two rotations old still verifies")
	}
}

func TestLongPollEndsWhenTheTransmitterStops(t *testing.T) {
	f := newFixture(t, "") // PollWait 30 s
	id := f.createStream(f.token, `{}`).StreamID
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); _ = f.tx.RunPush(ctx) }()
	done := make(chan pollResp)
	go func() { done <- f.poll(id, `{}`) }()
	cancel()
	<-stopped
	select {
	case p := <-done:
		if len(p.Sets) != 0 {
			t.Fatalf("poll returned %+v", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a long poll kept the stopping server busy")
	}
}

// fakeSource fails every watch with err (nil: one event at start+1).
type fakeSource struct{ err error }

func (f fakeSource) Watch(_ context.Context, start int64) (consumer.Stream[int], error) {
	return fakeStream{f.err, start}, nil
}

type fakeStream struct {
	err   error
	start int64
}

func (s fakeStream) Recv() (int, int64, bool, error) {
	if s.err != nil {
		return 0, 0, false, s.err
	}
	return 1, s.start + 1, false, nil
}

func TestResumeAfterCompaction(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	if err := f.store.SetCursor(ctx, "feed", 5); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		err     error
		want    int64
		wantErr bool
	}{
		{"compacted: resume at the oldest retained", eventlog.ToStatus(&eventlog.CompactedError{Start: 5, CompactedBefore: 40, Current: 90}), 40, false},
		{"retained again: resume at the cursor", nil, 5, false},
		{"OUT_OF_RANGE without metadata", status.Error(codes.OutOfRange, "gone"), 0, true},
		{"unavailable", status.Error(codes.Unavailable, "down"), 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resumeAfterCompaction[int](ctx, f.store, "feed", fakeSource{tt.err})
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("= %d, %v; want %d (error %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
