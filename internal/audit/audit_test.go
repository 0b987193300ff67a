package audit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/internal/sqlitedb"
)

type item struct {
	Name string `json:"name"`
}

// clock is a fake clock advancing one second per reading.
type clock struct{ n atomic.Int64 }

func (c *clock) now() time.Time {
	return time.Unix(1_700_000_000+c.n.Add(1), 0)
}

func open(t *testing.T, name string, c *clock) (*sqlitedb.DB, *audit.Log) {
	t.Helper()
	migrations := append([]string{`CREATE TABLE items (id TEXT PRIMARY KEY, name TEXT NOT NULL)`}, audit.Migrations("")...)
	db, err := sqlitedb.Open(context.Background(), sqlitedb.Options{Path: filepath.Join(t.TempDir(), name+".db"), Migrations: migrations})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, audit.New(db, audit.Options{Source: name, Now: c.now})
}

// backend is an audit log on SQLite or PostgreSQL and how to record a change in it.
type backend struct {
	log *audit.Log
	put func(ctx context.Context, id, name string) error
}

// openBackend opens the log name on "sqlite" (open, put) or "postgres" (openPG).
func openBackend(t *testing.T, kind, name string, c *clock) backend {
	t.Helper()
	if kind == "postgres" {
		db, l, w := openPG(t, pgtest.URL(t), name, c)
		return backend{log: l, put: func(ctx context.Context, id, name string) error { return putPG(ctx, db, w, id, name) }}
	}
	db, l := open(t, name, c)
	return backend{log: l, put: func(ctx context.Context, id, name string) error { return put(ctx, db, l, id, name) }}
}

// put writes an item and its audit event in one transaction, as a store does.
func put(ctx context.Context, db *sqlitedb.DB, l *audit.Log, id, name string) error {
	return db.Write(ctx, func(tx *sqlitedb.Tx) error {
		var before *item
		var old string
		if err := tx.QueryRowContext(ctx, `SELECT name FROM items WHERE id = ?`, id).Scan(&old); err == nil {
			before = &item{Name: old}
		}
		if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO items (id, name) VALUES (?, ?)`, id, name); err != nil {
			return err
		}
		var after any = &item{Name: name}
		if before == nil {
			return l.Append(ctx, tx, audit.Change{ResourceType: "item", ResourceID: id, After: after})
		}
		return l.Append(ctx, tx, audit.Change{ResourceType: "item", ResourceID: id, Before: before, After: after, Etag: "e2"})
	})
}

func TestAppendRecordsActorAndDiff(t *testing.T) {
	var c clock
	db, l := open(t, "svc", &c)
	actor := audit.Actor{Subject: "bob", Roles: []string{"policy-admin"}, Method: "/x.v1.S/Put", Peer: "127.0.0.1:1", TraceID: "abc"}
	ctx := audit.NewContext(context.Background(), actor)
	if err := put(ctx, db, l, "i1", "one"); err != nil {
		t.Fatal(err)
	}
	if err := put(context.Background(), db, l, "i1", "two"); err != nil {
		t.Fatal(err)
	}
	evs, more, err := audit.List(context.Background(), []*audit.Log{l}, audit.Filter{}, nil, 10)
	if err != nil || more || len(evs) != 2 {
		t.Fatalf("List = %d events, more %v, err %v; want 2, false, nil", len(evs), more, err)
	}
	// Newest first: the update by the system, then the creation by bob.
	up, cr := evs[0], evs[1]
	if up.Actor.Subject != audit.SystemSubject || up.Action != audit.ActionUpdate || string(up.Before) != `{"name":"one"}` || string(up.After) != `{"name":"two"}` || up.Etag != "e2" {
		t.Errorf("update event = %+v", up)
	}
	if cr.Actor.Subject != "bob" || cr.Actor.Method != actor.Method || cr.Actor.Peer != actor.Peer || cr.Actor.TraceID != "abc" ||
		len(cr.Actor.Roles) != 1 || cr.Actor.Roles[0] != "policy-admin" || cr.Action != audit.ActionCreate || cr.Before != nil || string(cr.After) != `{"name":"one"}` {
		t.Errorf("create event = %+v", cr)
	}
}

func TestAppendFailureRollsBackTheChange(t *testing.T) {
	var c clock
	db, l := open(t, "svc", &c)
	ctx := context.Background()
	// An injected failure of the audit insert.
	if err := db.Write(ctx, func(tx *sqlitedb.Tx) error {
		_, err := tx.ExecContext(ctx, `CREATE TRIGGER fail_audit BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'injected audit failure'); END`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	err := put(ctx, db, l, "i1", "one")
	if err == nil {
		t.Fatal("put succeeded with a failing audit log")
	}
	var n int
	if err := db.Read().QueryRowContext(ctx, `SELECT count(*) FROM items`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("items after failed audit = %d (%v), want 0", n, err)
	}
	if err := db.Write(ctx, func(tx *sqlitedb.Tx) error {
		return l.Append(ctx, tx, audit.Change{ResourceType: "item"})
	}); !errors.Is(err, audit.ErrInvalidChange) {
		t.Errorf("Append without id = %v, want ErrInvalidChange", err)
	}
}

// TestListMergesPagesAndFilters: the same listing, paging and filters on SQLite, on
// PostgreSQL, and across one log of each.
func TestListMergesPagesAndFilters(t *testing.T) {
	for _, bk := range []struct{ name, a, b string }{{"sqlite", "sqlite", "sqlite"}, {"postgres", "postgres", "postgres"}, {"sqlite and postgres", "sqlite", "postgres"}} {
		t.Run(bk.name, func(t *testing.T) { testListMergesPagesAndFilters(t, bk.a, bk.b) })
	}
}

func testListMergesPagesAndFilters(t *testing.T, backendA, backendB string) {
	var c clock
	a := openBackend(t, backendA, "a", &c)
	b := openBackend(t, backendB, "b", &c)
	logs := []*audit.Log{a.log, b.log}
	bob := audit.NewContext(context.Background(), audit.Actor{Subject: "bob", Method: "/m/Put"})
	for i := range 10 {
		st := a
		if i%2 == 1 {
			st = b
		}
		ctx := context.Background()
		if i%3 == 0 {
			ctx = bob
		}
		if err := st.put(ctx, fmt.Sprintf("i%d", i), "x"); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	var got []string
	tok := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		pos, err := audit.DecodePageToken(audit.Filter{}, tok)
		if err != nil {
			t.Fatal(err)
		}
		evs, more, err := audit.List(ctx, logs, audit.Filter{}, pos, 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			got = append(got, e.ResourceID)
		}
		if tok = audit.NextPageToken(audit.Filter{}, evs, more); tok == "" {
			break
		}
	}
	want := "[i9 i8 i7 i6 i5 i4 i3 i2 i1 i0]"
	if fmt.Sprint(got) != want {
		t.Errorf("merged pages = %v, want %v", got, want)
	}

	tests := []struct {
		name string
		f    audit.Filter
		want string
	}{
		{"actor", audit.Filter{Subject: "bob"}, "[i9 i6 i3 i0]"},
		{"method", audit.Filter{Method: "/m/Put"}, "[i9 i6 i3 i0]"},
		{"resource", audit.Filter{ResourceType: "item", ResourceID: "i4"}, "[i4]"},
		{"unknown type", audit.Filter{ResourceType: "other"}, "[]"},
		{"time range", audit.Filter{Start: time.Unix(1_700_000_003, 0), End: time.Unix(1_700_000_005, 0)}, "[i3 i2]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, _, err := audit.List(ctx, logs, tt.f, nil, 100)
			if err != nil {
				t.Fatal(err)
			}
			ids := []string{}
			for _, e := range evs {
				ids = append(ids, e.ResourceID)
			}
			if fmt.Sprint(ids) != tt.want {
				t.Errorf("got %v, want %v", ids, tt.want)
			}
		})
	}
}

func TestPageTokenRefusesTamperingAndOtherFilters(t *testing.T) {
	f := audit.Filter{Subject: "bob"}
	tok := audit.EncodePageToken(f, audit.Position{TimeNS: 5, Source: "a", ID: 3})
	if p, err := audit.DecodePageToken(f, tok); err != nil || p.ID != 3 || p.Source != "a" || p.TimeNS != 5 {
		t.Fatalf("round trip = %+v, %v", p, err)
	}
	for _, tt := range []struct {
		name string
		f    audit.Filter
		tok  string
	}{
		{"other filter", audit.Filter{Subject: "carol"}, tok},
		{"not base64", f, "!!!"},
		{"not json", f, "bm90IGpzb24"},
		{"truncated", f, tok[:len(tok)-4]},
		{"no position", f, audit.EncodePageToken(f, audit.Position{})},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := audit.DecodePageToken(tt.f, tt.tok); !errors.Is(err, audit.ErrInvalidPageToken) {
				t.Errorf("DecodePageToken = %v, want ErrInvalidPageToken", err)
			}
		})
	}
}

func TestCompactCountsWhatItRemoves(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) { testCompactCountsWhatItRemoves(t, backend) })
	}
}

func testCompactCountsWhatItRemoves(t *testing.T, backend string) {
	var c clock
	st := openBackend(t, backend, "svc", &c)
	l := st.log
	ctx := context.Background()
	for i := range 5 {
		if err := st.put(ctx, fmt.Sprintf("i%d", i), "x"); err != nil {
			t.Fatal(err)
		}
	}
	// Events are at 1_700_000_001 .. _005; keep those at or after _004.
	n, err := l.Compact(ctx, time.Unix(1_700_000_004, 0))
	if err != nil || n != 3 || l.Removed() != 3 {
		t.Fatalf("Compact = %d, %v; Removed %d; want 3", n, err, l.Removed())
	}
	evs, _, err := audit.List(ctx, []*audit.Log{l}, audit.Filter{}, nil, 10)
	if err != nil || len(evs) != 2 {
		t.Fatalf("after compaction %d events (%v), want 2", len(evs), err)
	}
	if n, err := l.Compact(ctx, time.Unix(1_700_000_004, 0)); err != nil || n != 0 || l.Removed() != 3 {
		t.Errorf("second Compact = %d, %v; Removed %d", n, err, l.Removed())
	}
}

func FuzzDecodePageToken(f *testing.F) {
	f.Add(audit.EncodePageToken(audit.Filter{}, audit.Position{TimeNS: 1, Source: "risk", ID: 1}))
	f.Add("")
	f.Add("e30")
	f.Fuzz(func(t *testing.T, tok string) {
		p, err := audit.DecodePageToken(audit.Filter{}, tok)
		if err != nil {
			if !errors.Is(err, audit.ErrInvalidPageToken) {
				t.Fatalf("error %v is not ErrInvalidPageToken", err)
			}
			return
		}
		if tok != "" && (p == nil || p.ID <= 0 || p.Source == "") {
			t.Fatalf("accepted token %q with position %+v", tok, p)
		}
	})
}

// syncBuffer is a bytes.Buffer safe for the logger's goroutine and the test's.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRunRetentionRemovesOldEventsAndSaysSo(t *testing.T) {
	var logs syncBuffer
	migrations := append([]string{`CREATE TABLE items (id TEXT PRIMARY KEY, name TEXT NOT NULL)`}, audit.Migrations("")...)
	db, err := sqlitedb.Open(context.Background(), sqlitedb.Options{Path: filepath.Join(t.TempDir(), "r.db"), Migrations: migrations})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Now()
	var old atomic.Bool
	old.Store(true)
	clock := func() time.Time {
		if old.Load() {
			return now.Add(-48 * time.Hour)
		}
		return now
	}
	l := audit.New(db, audit.Options{Source: "svc", Now: clock, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx := context.Background()
	for i := range 3 {
		if err := put(ctx, db, l, fmt.Sprintf("old-%d", i), "x"); err != nil {
			t.Fatal(err)
		}
	}
	old.Store(false)
	if err := put(ctx, db, l, "new", "x"); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); audit.RunRetention(rctx, []*audit.Log{l}, 24*time.Hour, time.Hour) }()
	deadline := time.Now().Add(10 * time.Second)
	for l.Removed() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("retention removed %d events, want 3", l.Removed())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	evs, _, err := audit.List(ctx, []*audit.Log{l}, audit.Filter{}, nil, 10)
	if err != nil || len(evs) != 1 || evs[0].ResourceID != "new" {
		t.Fatalf("left %v (%v), want the new event only", evs, err)
	}
	if out := logs.String(); !strings.Contains(out, "audit: retention removed events") || !strings.Contains(out, "removed=3") {
		t.Errorf("retention log = %q, want the count of removed events", out)
	}
}
