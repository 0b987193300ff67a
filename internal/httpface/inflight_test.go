package httpface

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/server"
)

// TestHoldCallsBeforeReadingTheBody: an authenticated caller sending many large
// requests in parallel through the HTTP face is refused past its cap of calls in
// flight (RESOURCE_EXHAUSTED in its protocol, 429 with Retry-After for REST) before
// the transcoder reads their bodies, while another identity is still served; when its
// calls end it is served again. The transcoder stands behind next, which holds each
// request it gets until released.
func TestHoldCallsBeforeReadingTheBody(t *testing.T) {
	const maxCalls, attempts, size = 2, 8, 4 << 20
	srv, err := server.New(server.Config{Name: "hold", Auth: auth.Config{Insecure: true}, MaxCallsPerIdentity: maxCalls})
	if err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}, attempts), make(chan struct{})
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		w.WriteHeader(http.StatusOK)
	})
	h := holdCalls(srv.HoldCall, next)
	alice := auth.Identity{Kind: auth.KindRoleCertificate, Subject: "alice", Roles: []commonv1.Role{commonv1.Role_ROLE_READER}}
	bob := auth.Identity{Kind: auth.KindRoleCertificate, Subject: "bob", Roles: []commonv1.Role{commonv1.Role_ROLE_READER}}
	request := func(id auth.Identity, path string, body *countingBody) *http.Request {
		r := httptest.NewRequest(http.MethodPost, path, body)
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Connect-Protocol-Version", "1")
		return r.WithContext(auth.NewContext(r.Context(), id))
	}

	var wg sync.WaitGroup
	type result struct {
		code int
		read int
		w    *httptest.ResponseRecorder
	}
	results := make(chan result, attempts)
	for i := range attempts {
		path := "/condaccess.risk.v1.RiskService/ReportAlert"
		if i%2 == 1 {
			path = "/v1/alerts" // REST
		}
		wg.Go(func() {
			body := &countingBody{size: size}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, request(alice, path, body))
			results <- result{code: w.Code, read: body.n, w: w}
		})
	}
	// maxCalls are held; the rest are refused at once, without their bodies read.
	for range maxCalls {
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatal("no request reached the transcoder")
		}
	}
	for range attempts - maxCalls {
		var r result
		select {
		case r = <-results:
		case <-time.After(10 * time.Second):
			t.Fatal("the requests past the cap were not refused")
		}
		if r.read != 0 {
			t.Errorf("a refused request had %d bytes of its body read", r.read)
		}
		// Connect maps RESOURCE_EXHAUSTED to 429 too.
		if r.code != http.StatusTooManyRequests || r.w.Header().Get("Retry-After") == "" {
			t.Errorf("refusal: status %d, headers %v; want 429 with Retry-After", r.code, r.w.Header())
		}
		// REST: google.rpc.Status JSON (code 8); Connect: its error JSON.
		var m map[string]any
		_ = json.Unmarshal(r.w.Body.Bytes(), &m)
		if (m["code"] != float64(codes.ResourceExhausted) && m["code"] != "resource_exhausted") || !strings.Contains(r.w.Body.String(), server.ReasonTooManyCallsInFlight) {
			t.Errorf("refusal body %s, want RESOURCE_EXHAUSTED with reason %s", r.w.Body.String(), server.ReasonTooManyCallsInFlight)
		}
	}
	// Another identity is served meanwhile.
	go func() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, request(bob, "/condaccess.risk.v1.RiskService/ReportAlert", &countingBody{size: 16}))
		results <- result{code: w.Code, w: w}
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("another identity's request did not reach the transcoder while the first is at its cap")
	}
	close(release)
	wg.Wait()
	// Streams are not calls in flight: a watch of alice's passes while she is at her cap.
	stop := make(chan struct{})
	blocked := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-stop
	})
	hs := holdCalls(srv.HoldCall, blocked)
	var held sync.WaitGroup
	for range maxCalls {
		held.Go(func() {
			hs.ServeHTTP(httptest.NewRecorder(), request(alice, "/condaccess.risk.v1.RiskService/ReportAlert", &countingBody{size: 16}))
		})
		<-entered
	}
	held.Go(func() {
		hs.ServeHTTP(httptest.NewRecorder(), request(alice, "/condaccess.risk.v1.RiskService/WatchRiskEvents", &countingBody{size: 16}))
	})
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("a watch was refused (or held back) by the cap on calls in flight")
	}
	close(stop)
	held.Wait()

	// Its slots are free again: a new request of alice's passes.
	w := httptest.NewRecorder()
	h.ServeHTTP(w, request(alice, "/condaccess.risk.v1.RiskService/ReportAlert", &countingBody{size: 16}))
	if w.Code != http.StatusOK {
		t.Fatalf("alice after her calls ended: %d %s", w.Code, w.Body.String())
	}
}

// TestHoldStrangerCallsPerHost: a caller without an identity reaches the end user's
// GetBlockedStatus through the HTTP face; the transcoder buffers each request's body
// (up to StrangerBodyBytes) before the gRPC chain, whose limits then come too late,
// and the HTTP server does not bound how many requests one host has being read. So
// these calls take a slot of a stranger pool before the body is read:
// MaxStrangerStreamsPerHost per client host (an IPv6 /48), RESOURCE_EXHAUSTED past
// it, while another host is still served. The end user's watch is no call in flight.
// The pool has no total (a few hosts sending slowly would otherwise hold it and refuse
// everyone): more hosts than MaxStrangerStreams/MaxStrangerStreamsPerHost still pass.
func TestHoldStrangerCallsPerHost(t *testing.T) {
	srv, err := server.New(server.Config{Name: "hold", Auth: auth.Config{Insecure: true}})
	if err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}, 256), make(chan struct{})
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		w.WriteHeader(http.StatusOK)
	})
	h := holdCalls(srv.HoldCall, next)
	request := func(path, remote string, body *countingBody) *http.Request {
		method := http.MethodPost
		if strings.HasPrefix(path, "/v1/") {
			method = http.MethodGet
		}
		r := httptest.NewRequest(method, path, body)
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Connect-Protocol-Version", "1")
		r.RemoteAddr = remote
		r.TLS = &tls.ConnectionState{} // no client certificate
		return r
	}
	const rpc, rest = "/condaccess.access.v1.AccessService/GetBlockedStatus", "/v1/blockedStatus"
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(release)
	// One host (rotating through the /64s of its IPv6 /48) fills its share, REST and
	// Connect alike.
	for i := range server.MaxStrangerStreamsPerHost {
		path := rpc
		if i%2 == 1 {
			path = rest
		}
		remote := fmt.Sprintf("[2001:db8:5:%x::1]:%d", i+1, 40000+i)
		wg.Go(func() { h.ServeHTTP(httptest.NewRecorder(), request(path, remote, &countingBody{size: 1024})) })
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatalf("stranger call %d did not reach the transcoder", i)
		}
	}
	for _, path := range []string{rpc, rest} {
		body := &countingBody{size: StrangerBodyBytes}
		w := httptest.NewRecorder()
		done := make(chan struct{})
		wg.Go(func() { h.ServeHTTP(w, request(path, "[2001:db8:5:ffff::1]:1", body)); close(done) })
		select {
		case <-done:
		case <-entered:
			t.Fatalf("%s past the host's share reached the transcoder", path)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s past the host's share was neither refused nor served", path)
		}
		if w.Code != http.StatusTooManyRequests || !strings.Contains(w.Body.String(), server.ReasonTooManyStrangerCalls) {
			t.Errorf("%s past the host's share: %d %s, want 429 %s", path, w.Code, w.Body.String(), server.ReasonTooManyStrangerCalls)
		}
		if body.n != 0 {
			t.Errorf("%s: a refused request had %d bytes of its body read", path, body.n)
		}
	}
	// The watch (a stream) and other hosts pass, past what a total would allow.
	cases := []struct{ path, remote string }{{"/condaccess.access.v1.AccessService/WatchBlockedStatus", "[2001:db8:5:5::1]:2"}}
	for h := range server.MaxStrangerStreams/server.MaxStrangerStreamsPerHost + 1 {
		for i := range server.MaxStrangerStreamsPerHost {
			cases = append(cases, struct{ path, remote string }{rpc, fmt.Sprintf("192.0.2.%d:%d", h+1, 1000+i)})
		}
	}
	for _, c := range cases {
		wg.Go(func() { h.ServeHTTP(httptest.NewRecorder(), request(c.path, c.remote, &countingBody{size: 16})) })
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s from %s was held back", c.path, c.remote)
		}
	}
}
