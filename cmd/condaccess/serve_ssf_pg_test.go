package main

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/condaccess/condaccess/internal/pgtest"
)

// TestSSFMode: --ssf's values; auto follows the store (on embedded, off on PostgreSQL).
func TestSSFMode(t *testing.T) {
	const url = "postgres://nobody@127.0.0.1:1/none"
	tests := []struct {
		name              string
		mode, db, http    string
		want, wantUsageEr bool
	}{
		{"auto, embedded", "auto", "", "127.0.0.1:0", true, false},
		{"empty is auto, embedded", "", "", "127.0.0.1:0", true, false},
		{"auto, postgres", "auto", url, "127.0.0.1:0", false, false},
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

// TestSSFOnPostgresRunsOnOneReplica: on one database, the Shared Signals service runs
// only where --ssf=on, and on one process alone: a second --ssf=on is refused while the
// first holds the lock, a replica without the flag serves no /ssf/* at all, and once the
// holder stops (or its database session is killed, which stops it) another may take over.
func TestSSFOnPostgresRunsOnOneReplica(t *testing.T) {
	url := pgtest.URL(t)
	old := ssfLockCheck
	ssfLockCheck = 100 * time.Millisecond
	t.Cleanup(func() { ssfLockCheck = old })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := func(mode string) (*runningSuite, string, error) {
		dir := t.TempDir()
		o := serveOptions{grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", services: "risk", dataDir: dir,
			databaseURL: url, ssfMode: mode, stopTimeout: time.Second, leaseDuration: 2 * time.Second}
		s, err := startSuite(ctx, o, slog.New(slog.DiscardHandler))
		if err == nil {
			t.Cleanup(func() { s.Stop() })
		}
		return s, dir, err
	}
	configCode := func(s *runningSuite) int {
		code, _ := httpDo(t, "GET", "http://"+s.HTTPAddr()+"/.well-known/ssf-configuration", "", "")
		return code
	}

	a, _, err := start("on")
	if err != nil {
		t.Fatal(err)
	}
	if c := configCode(a); c != http.StatusOK {
		t.Fatalf("the --ssf=on replica: ssf-configuration %d, want 200", c)
	}
	// The attack: a second transmitter on the same database (duplicate SETs, streams
	// unknown to one another).
	_, dirB, err := start("on")
	if !errors.Is(err, errSSFElsewhere) {
		t.Fatalf("second --ssf=on replica: err = %v, want %v", err, errSSFElsewhere)
	}
	if _, err := os.Stat(filepath.Join(dirB, "ssf", "ssf.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the refused replica created an SSF store (%v)", err)
	}
	c, _, err := start("auto")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/.well-known/ssf-configuration", "/ssf/jwks.json", "/ssf/stream"} {
		if code, _ := httpDo(t, "GET", "http://"+c.HTTPAddr()+p, "", ""); code != http.StatusNotFound {
			t.Fatalf("replica without --ssf=on: GET %s = %d, want 404", p, code)
		}
	}

	// The holder stops: the lock goes with its session.
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	b, _, err := start("on")
	if err != nil {
		t.Fatalf("--ssf=on after the holder stopped: %v", err)
	}
	if c := configCode(b); c != http.StatusOK {
		t.Fatalf("the new holder: ssf-configuration %d, want 200", c)
	}

	// The holder's database session is killed (as when the process is SIGKILLed, or its
	// connection is lost): it must stop, since another replica may now take the lock.
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var killed int
	if err := db.QueryRowContext(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid() AND objid::bigint = (hashtext('condaccess.ssf')::bigint & 4294967295)`).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed != 1 {
		t.Fatalf("terminated %d sessions holding the lock, want 1", killed)
	}
	select {
	case err := <-b.Err():
		if !strings.Contains(err.Error(), "ssf: the Shared Signals lock's database session failed") {
			t.Fatalf("holder stopped with %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the holder whose lock session was killed kept running")
	}
	d, _, err := start("on")
	if err != nil {
		t.Fatalf("--ssf=on after the holder's session was killed: %v", err)
	}
	if c := configCode(d); c != http.StatusOK {
		t.Fatalf("the replacement holder: ssf-configuration %d, want 200", c)
	}
}
