package pgdb_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"

	"github.com/condaccess/condaccess/internal/pgdb"
	"github.com/condaccess/condaccess/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

var migs = []string{
	`CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT NOT NULL)`,
	`ALTER TABLE kv ADD COLUMN n INTEGER NOT NULL DEFAULT 0`,
}

func open(t *testing.T, url, schema string, m []string) *pgdb.DB {
	t.Helper()
	db, err := pgdb.Open(context.Background(), pgdb.Options{URL: url, Schema: schema, Migrations: m})
	if err != nil {
		t.Fatalf("Open(%s): %v", schema, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func count(t *testing.T, db *pgdb.DB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := db.Read().QueryRowContext(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// TestMigrations: applied once (replicas opening together included), checksummed,
// append-only; each service's schema is its own.
func TestMigrations(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, err := pgdb.Open(ctx, pgdb.Options{URL: url, Schema: "svc", Migrations: migs})
			if err == nil {
				db.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Open: %v", err)
		}
	}
	db := open(t, url, "svc", migs)
	if n := count(t, db, `SELECT count(*) FROM schema_migrations`); n != 2 {
		t.Fatalf("schema_migrations has %d rows, want 2", n)
	}
	// Another schema has its own kv.
	other := open(t, url, "other", migs[:1])
	if _, err := other.Read().ExecContext(ctx, `INSERT INTO kv (k, v) VALUES ('a', 'b')`); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, `SELECT count(*) FROM kv`); n != 0 {
		t.Fatalf("svc.kv sees %d rows written to other.kv", n)
	}

	tests := []struct {
		name string
		m    []string
	}{
		{"edited", []string{migs[0] + " ", migs[1]}},
		{"inserted before", []string{`CREATE TABLE x (y int)`, migs[0], migs[1]}},
		{"newer database", migs[:1]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := pgdb.Open(ctx, pgdb.Options{URL: url, Schema: "svc", Migrations: tt.m})
			if !errors.Is(err, pgdb.ErrMigrationMismatch) {
				t.Fatalf("Open = %v, want ErrMigrationMismatch", err)
			}
			if n := count(t, db, `SELECT count(*) FROM schema_migrations`); n != 2 {
				t.Fatalf("refused Open changed schema_migrations: %d rows", n)
			}
		})
	}
	for _, bad := range []string{"", "Risk", "a-b", "x; DROP TABLE kv"} {
		if _, err := pgdb.Open(ctx, pgdb.Options{URL: url, Schema: bad}); err == nil {
			t.Errorf("Open with schema %q succeeded", bad)
		}
	}
}

// TestWrite: commit runs AfterCommit; an error or a panic rolls back (nothing
// stored) and runs OnRollback instead.
func TestWrite(t *testing.T) {
	db := open(t, pgtest.URL(t), "svc", migs)
	ctx := context.Background()
	boom := errors.New("boom")
	tests := []struct {
		name      string
		fail      func() error
		wantErr   bool
		wantRows  int
		wantAfter bool
	}{
		{name: "commit", fail: func() error { return nil }, wantRows: 1, wantAfter: true},
		{name: "error", fail: func() error { return boom }, wantErr: true},
		{name: "panic", fail: func() error { panic("boom") }, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var after, rolled bool
			err := db.Write(ctx, func(tx *pgdb.Tx) error {
				if _, err := tx.ExecContext(ctx, `INSERT INTO kv (k, v) VALUES ($1, 'v')`, tt.name); err != nil {
					return err
				}
				tx.AfterCommit(func() { after = true })
				tx.OnRollback(func() { rolled = true })
				return tt.fail()
			})
			if (err != nil) != tt.wantErr {
				t.Fatalf("Write = %v, wantErr %v", err, tt.wantErr)
			}
			if n := count(t, db, `SELECT count(*) FROM kv WHERE k = $1`, tt.name); n != tt.wantRows {
				t.Fatalf("%d rows stored, want %d", n, tt.wantRows)
			}
			if after != tt.wantAfter || rolled == tt.wantAfter {
				t.Fatalf("AfterCommit ran %v, OnRollback ran %v; want AfterCommit %v", after, rolled, tt.wantAfter)
			}
		})
	}
	db.Close()
	if err := db.Write(ctx, func(*pgdb.Tx) error { return nil }); !errors.Is(err, pgdb.ErrClosed) {
		t.Fatalf("Write after Close = %v, want ErrClosed", err)
	}
}

// TestWriteRetriesDeadlock: two Writes that lock two rows in opposite orders
// deadlock; PostgreSQL aborts one, whose fn runs again (after its OnRollback), and
// both commit.
func TestWriteRetriesDeadlock(t *testing.T) {
	db := open(t, pgtest.URL(t), "svc", migs)
	ctx := context.Background()
	if _, err := db.Read().ExecContext(ctx, `INSERT INTO kv (k, v) VALUES ('a', ''), ('b', '')`); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	runs, rollbacks := map[string]int{}, map[string]int{}
	var both sync.WaitGroup
	both.Add(2)
	write := func(name, first, second string) error {
		return db.Write(ctx, func(tx *pgdb.Tx) error {
			mu.Lock()
			runs[name]++
			n := runs[name]
			mu.Unlock()
			tx.OnRollback(func() { mu.Lock(); rollbacks[name]++; mu.Unlock() })
			if _, err := tx.ExecContext(ctx, `UPDATE kv SET v = v || $1, n = n + 1 WHERE k = $2`, name, first); err != nil {
				return err
			}
			if n == 1 {
				// Both hold their first row before either asks for its second.
				both.Done()
				both.Wait()
			}
			_, err := tx.ExecContext(ctx, `UPDATE kv SET v = v || $1, n = n + 1 WHERE k = $2`, name, second)
			return err
		})
	}
	errs := make(chan error, 2)
	go func() { errs <- write("x", "a", "b") }()
	go func() { errs <- write("y", "b", "a") }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("Write: %v", err)
		}
	}
	// The deadlock rolls one of them back at least once; on a loaded machine a retry
	// may meet another retryable conflict before the other commits, so count: every
	// rollback is followed by exactly one more run, and each Write commits once.
	rb := rollbacks["x"] + rollbacks["y"]
	if rb < 1 || runs["x"]+runs["y"] != 2+rb || runs["x"] != 1+rollbacks["x"] || runs["y"] != 1+rollbacks["y"] {
		t.Fatalf("fn runs %v, rollbacks %v; want at least one rollback, each followed by one more run", runs, rollbacks)
	}
	if n := count(t, db, `SELECT SUM(n) FROM kv`); n != 4 {
		t.Fatalf("%d row updates stored, want 4 (each Write's two, once)", n)
	}
}
