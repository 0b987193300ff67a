package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/internal/ssf"
)

// TestSSFMode: --ssf's values; auto is on with either store (on PostgreSQL every replica
// serves the endpoints from the shared schema).
func TestSSFMode(t *testing.T) {
	const url = "postgres://nobody@127.0.0.1:1/none"
	tests := []struct {
		name              string
		mode, db, http    string
		want, wantUsageEr bool
	}{
		{"auto, embedded", "auto", "", "127.0.0.1:0", true, false},
		{"empty is auto, embedded", "", "", "127.0.0.1:0", true, false},
		{"auto, postgres", "auto", url, "127.0.0.1:0", true, false},
		{"on, postgres", "on", url, "127.0.0.1:0", true, false},
		{"off, embedded", "off", "", "127.0.0.1:0", false, false},
		{"on without an HTTP address", "on", "", "", false, true},
		{"unknown value", "yes", "", "127.0.0.1:0", false, true},
		{"upper case is not a value", "ON", url, "127.0.0.1:0", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ssfEnabled(serveOptions{ssfMode: tt.mode, databaseURL: tt.db, httpAddr: tt.http})
			if errors.Is(err, errUsage) != tt.wantUsageEr || (err != nil && !tt.wantUsageEr) {
				t.Fatalf("err = %v, want usage error %v", err, tt.wantUsageEr)
			}
			if got != tt.want {
				t.Fatalf("enabled = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestSSFServedFromTheFirstRequest: the HTTP server answers only once the Shared Signals
// endpoints are mounted, so the first request that connects at all gets the
// configuration (it used to get 404 for a few milliseconds after the port opened).
func TestSSFServedFromTheFirstRequest(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	o := serveOptions{grpcAddr: "127.0.0.1:0", httpAddr: addr, services: "risk", dataDir: t.TempDir(), stopTimeout: time.Second}
	type started struct {
		s   *runningSuite
		err error
	}
	done := make(chan started, 1)
	go func() {
		s, err := startSuite(context.Background(), o, slog.New(slog.DiscardHandler))
		done <- started{s, err}
	}()
	t.Cleanup(func() {
		if r := <-done; r.s != nil {
			r.s.Stop()
		}
	})
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get("http://" + addr + "/.well-known/ssf-configuration")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("first answer: %d, want 200", resp.StatusCode)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer by the deadline: %v", err)
		}
		time.Sleep(time.Millisecond) // polling a port that is not open yet; no answer is the condition
	}
}

// ssfReplica starts a serve on the database at url with the Shared Signals service on.
func ssfReplica(ctx context.Context, t *testing.T, url string) *runningSuite {
	t.Helper()
	o := serveOptions{grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", services: "risk", dataDir: t.TempDir(),
		databaseURL: url, stopTimeout: time.Second, leaseDuration: time.Second}
	o.ssf.PushAllow = []string{"127.0.0.0/8"} // the test receiver listens on loopback
	s, err := startSuite(ctx, o, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	return s
}

// addReceiver registers a receiver in the database with the CLI and returns its token.
func addReceiver(ctx context.Context, t *testing.T, url, name string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := runSSF(ctx, []string{"receivers", "add", "--database-url", url, name}, &out, &errOut); err != nil {
		t.Fatalf("ssf receivers add: %v (%s)", err, errOut.String())
	}
	return strings.TrimSuffix(out.String(), "\n")
}

// pollSETs polls a stream on a replica (acking ack) and returns the SETs by jti.
func pollSETs(t *testing.T, s *runningSuite, token, id string, ack []string) map[string]string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"returnImmediately": true, "maxEvents": 10, "ack": ack})
	code, b := httpDo(t, "POST", "http://"+s.HTTPAddr()+"/ssf/poll/"+id, token, string(body))
	var resp struct {
		Sets map[string]string `json:"sets"`
	}
	if code != http.StatusOK || json.Unmarshal(b, &resp) != nil {
		t.Fatalf("poll on %s: %d %s", s.HTTPAddr(), code, b)
	}
	return resp.Sets
}

// TestSSFReplicasShareTheStore: two replicas on one database serve the same streams
// and keys: a stream created on A is polled and acknowledged on B, the ack removes
// the SET for A too, both publish the same signing key, and another receiver's token
// reaches none of it on either replica.
func TestSSFReplicasShareTheStore(t *testing.T) {
	url := pgtest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, b := ssfReplica(ctx, t, url), ssfReplica(ctx, t, url)
	token, other := addReceiver(ctx, t, url, "rp-a"), addReceiver(ctx, t, url, "rp-b")

	_, jwksA := httpDo(t, "GET", "http://"+a.HTTPAddr()+"/ssf/jwks.json", "", "")
	_, jwksB := httpDo(t, "GET", "http://"+b.HTTPAddr()+"/ssf/jwks.json", "", "")
	if !bytes.Equal(jwksA, jwksB) || !bytes.Contains(jwksA, []byte(`"kid"`)) {
		t.Fatalf("replicas publish different keys:\n%s\n%s", jwksA, jwksB)
	}

	code, body := httpDo(t, "POST", "http://"+a.HTTPAddr()+"/ssf/stream", token, `{"delivery":{"method":"urn:ietf:rfc:8936"}}`)
	var cfg ssf.StreamConfig
	if code != http.StatusCreated || json.Unmarshal(body, &cfg) != nil {
		t.Fatalf("create stream on A: %d %s", code, body)
	}
	for _, tt := range []struct {
		name, token string
		want        int
	}{
		{"its receiver", token, http.StatusOK},
		{"another receiver (the attack)", other, http.StatusNotFound},
		{"no token", "", http.StatusUnauthorized},
	} {
		t.Run("GET the stream on B: "+tt.name, func(t *testing.T) {
			if code, b := httpDo(t, "GET", "http://"+b.HTTPAddr()+"/ssf/stream?stream_id="+cfg.StreamID, tt.token, ""); code != tt.want {
				t.Fatalf("%d %s, want %d", code, b, tt.want)
			}
		})
	}
	if code, b := httpDo(t, "POST", "http://"+a.HTTPAddr()+"/ssf/verify", token, `{"stream_id":"`+cfg.StreamID+`","state":"s1"}`); code != http.StatusNoContent {
		t.Fatalf("verify on A: %d %s", code, b)
	}
	if code, body := httpDo(t, "POST", "http://"+b.HTTPAddr()+"/ssf/poll/"+cfg.StreamID, other, `{"returnImmediately":true}`); code != http.StatusNotFound {
		t.Fatalf("another receiver polls the stream on B: %d %s, want 404", code, body)
	}
	sets := pollSETs(t, b, token, cfg.StreamID, nil)
	if len(sets) != 1 {
		t.Fatalf("poll on B: %v, want the verification SET", sets)
	}
	var jti string
	for j := range sets {
		jti = j
	}
	if again := pollSETs(t, a, token, cfg.StreamID, nil); again[jti] != sets[jti] {
		t.Fatalf("poll on A before the ack: %v, want the same SET", again)
	}
	pollSETs(t, b, token, cfg.StreamID, []string{jti})
	if left := pollSETs(t, a, token, cfg.StreamID, nil); len(left) != 0 {
		t.Fatalf("poll on A after B's ack: %v, want nothing", left)
	}
}

// TestSSFLeaderFailover: push delivery runs on the lease holder alone; when it stops
// mid-stream (its receiver refusing), the other replica takes over and delivers the
// same stored SET: the same jti, once.
func TestSSFLeaderFailover(t *testing.T) {
	url := pgtest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var mu sync.Mutex
	accept := false
	var refused, accepted []string
	changed := make(chan struct{}, 100)
	rx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		tok, err := jwt.ParseSigned(string(b), []jose.SignatureAlgorithm{jose.RS256})
		var c jwt.Claims
		if err != nil || tok.UnsafeClaimsWithoutVerification(&c) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		if accept {
			accepted = append(accepted, c.ID)
			w.WriteHeader(http.StatusAccepted)
		} else {
			refused = append(refused, c.ID)
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		mu.Unlock()
		changed <- struct{}{}
	}))
	defer rx.Close()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for {
			mu.Lock()
			ok := cond()
			mu.Unlock()
			if ok {
				return
			}
			select {
			case <-changed:
			case <-ctx.Done():
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}

	a := ssfReplica(ctx, t, url) // alone, so it takes the lease
	token := addReceiver(ctx, t, url, "rp-a")
	code, body := httpDo(t, "POST", "http://"+a.HTTPAddr()+"/ssf/stream", token, `{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"`+rx.URL+`/events"}}`)
	var cfg ssf.StreamConfig
	if code != http.StatusCreated || json.Unmarshal(body, &cfg) != nil {
		t.Fatalf("create stream: %d %s", code, body)
	}
	if code, b := httpDo(t, "POST", "http://"+a.HTTPAddr()+"/ssf/verify", token, `{"stream_id":"`+cfg.StreamID+`","state":"s1"}`); code != http.StatusNoContent {
		t.Fatalf("verify: %d %s", code, b)
	}
	waitFor("a refused delivery by the leader", func() bool { return len(refused) > 0 })
	ssfReplica(ctx, t, url) // the replica that takes over
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	first := refused[0]
	accept = true
	mu.Unlock()
	waitFor("the delivery by the new leader", func() bool { return len(accepted) > 0 })
	mu.Lock()
	got := slices.Clone(accepted)
	mu.Unlock()
	if len(got) != 1 || got[0] != first {
		t.Fatalf("delivered %v after the failover, want the one SET %s once", got, first)
	}
	// The delivered SET is gone from the shared outbox (B acknowledged it), and nothing
	// else was delivered meanwhile.
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for {
		var n int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM ssf.outbox`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d SETs still in the outbox", n)
		}
		time.Sleep(20 * time.Millisecond) // waiting on the condition above, with ctx's deadline
	}
	mu.Lock()
	defer mu.Unlock()
	if len(accepted) != 1 {
		t.Fatalf("delivered %v, want one SET", accepted)
	}
}
