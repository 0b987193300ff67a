package sqlitedb_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/condaccess/condaccess/internal/sqlitedb"
)

var testMigrations = []string{
	`CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)`,
	`CREATE TABLE p (id INTEGER PRIMARY KEY);
	 CREATE TABLE c (id INTEGER PRIMARY KEY, p INTEGER NOT NULL REFERENCES p(id))`,
}

func open(t testing.TB, path string, mut ...func(*sqlitedb.Options)) *sqlitedb.DB {
	t.Helper()
	o := sqlitedb.Options{Path: path, Migrations: testMigrations}
	for _, m := range mut {
		m(&o)
	}
	db, err := sqlitedb.Open(context.Background(), o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func count(t testing.TB, db *sqlitedb.DB, table string) int {
	t.Helper()
	var n int
	if err := db.Read().QueryRow("SELECT count(*) FROM " + table).Scan(&n); err != nil {
		t.Fatalf("count: %v", err)
	}
	return n
}

func TestPragmasAndMigrations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db.sqlite")
	db := open(t, path)
	var mode string
	if err := db.Read().QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v; want wal", mode, err)
	}
	// Foreign keys are enforced on the writer.
	err := db.Write(context.Background(), func(tx *sqlitedb.Tx) error {
		_, err := tx.ExecContext(context.Background(), "INSERT INTO c (id, p) VALUES (1, 42)")
		return err
	})
	if err == nil {
		t.Fatal("insert violating foreign key succeeded")
	}
	// The read pool is read-only.
	if _, err := db.Read().Exec("INSERT INTO t (v) VALUES ('x')"); err == nil {
		t.Fatal("write through read pool succeeded")
	}
	db.Close()

	// Reopening applies only the new migration.
	db2 := open(t, path, func(o *sqlitedb.Options) {
		o.Migrations = append(append([]string{}, testMigrations...), `CREATE TABLE t3 (id INTEGER PRIMARY KEY)`)
	})
	if got := count(t, db2, "schema_migrations"); got != 3 {
		t.Fatalf("schema_migrations rows = %d, want 3", got)
	}
	if got := count(t, db2, "t3"); got != 0 {
		t.Fatalf("t3 rows = %d", got)
	}
}

func TestGroupCommitIsolatesFailingFn(t *testing.T) {
	db := open(t, filepath.Join(t.TempDir(), "db.sqlite"))
	ctx := context.Background()
	errBoom := errors.New("boom")
	const n = 200
	var wg sync.WaitGroup
	var afterRuns, rollbackRuns atomic.Int64
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = db.Write(ctx, func(tx *sqlitedb.Tx) error {
				if _, err := tx.ExecContext(ctx, "INSERT INTO t (id, v) VALUES (?, ?)", i+1, "x"); err != nil {
					return err
				}
				tx.AfterCommit(func() { afterRuns.Add(1) })
				tx.OnRollback(func() { rollbackRuns.Add(1) })
				switch i % 10 {
				case 3:
					return errBoom
				case 7:
					panic("kaboom")
				}
				return nil
			})
		}()
	}
	wg.Wait()
	want := 0
	for i, err := range errs {
		switch i % 10 {
		case 3:
			if !errors.Is(err, errBoom) {
				t.Errorf("write %d: err = %v, want boom", i, err)
			}
		case 7:
			if err == nil {
				t.Errorf("write %d: panic not reported", i)
			}
		default:
			want++
			if err != nil {
				t.Errorf("write %d: %v", i, err)
			}
		}
	}
	if got := count(t, db, "t"); got != want {
		t.Fatalf("rows = %d, want %d", got, want)
	}
	if got := afterRuns.Load(); got != int64(want) {
		t.Fatalf("AfterCommit ran %d times, want %d", got, want)
	}
	if got := rollbackRuns.Load(); got != int64(n-want) {
		t.Fatalf("OnRollback ran %d times, want %d (once per failed write)", got, n-want)
	}
	var bad int
	if err := db.Read().QueryRow("SELECT count(*) FROM t WHERE id % 10 IN (4, 8)").Scan(&bad); err != nil || bad != 0 {
		t.Fatalf("rows of failed writes = %d, %v", bad, err)
	}
}

func TestAfterCommitOrderAndVisibility(t *testing.T) {
	db := open(t, filepath.Join(t.TempDir(), "db.sqlite"))
	ctx := context.Background()
	var mu sync.Mutex
	var order []int64
	var wg sync.WaitGroup
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := db.Write(ctx, func(tx *sqlitedb.Tx) error {
				res, err := tx.ExecContext(ctx, "INSERT INTO t (v) VALUES ('x')")
				if err != nil {
					return err
				}
				id, _ := res.LastInsertId()
				tx.AfterCommit(func() {
					mu.Lock()
					order = append(order, id)
					mu.Unlock()
				})
				return nil
			})
			if err != nil {
				t.Error(err)
				return
			}
			// Read-your-writes through the read pool once Write returned.
			var n int
			if err := db.Read().QueryRow("SELECT count(*) FROM t").Scan(&n); err != nil || n < 1 {
				t.Errorf("read after write: %d, %v", n, err)
			}
		}()
	}
	wg.Wait()
	for i := 1; i < len(order); i++ {
		if order[i] <= order[i-1] {
			t.Fatalf("AfterCommit order %v not increasing at %d", order, i)
		}
	}
	if len(order) != 100 {
		t.Fatalf("AfterCommit ran %d times", len(order))
	}
}

func TestWriteCancelledBeforeStart(t *testing.T) {
	db := open(t, filepath.Join(t.TempDir(), "db.sqlite"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ran := false
	err := db.Write(ctx, func(tx *sqlitedb.Tx) error { ran = true; return nil })
	if !errors.Is(err, context.Canceled) || ran {
		t.Fatalf("Write with cancelled ctx: err=%v ran=%v", err, ran)
	}
}

func TestWriteAfterClose(t *testing.T) {
	db := open(t, filepath.Join(t.TempDir(), "db.sqlite"))
	db.Close()
	err := db.Write(context.Background(), func(tx *sqlitedb.Tx) error { return nil })
	if !errors.Is(err, sqlitedb.ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
}

// BenchmarkWrite compares group commit with one transaction per write, with
// ~50 concurrent writers each inserting one row per Write, synchronous=FULL.
func BenchmarkWrite(b *testing.B) {
	for _, bc := range []struct {
		name     string
		maxBatch int
	}{
		{"grouped", 256},
		{"ungrouped", 1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			db := open(b, filepath.Join(b.TempDir(), "db.sqlite"), func(o *sqlitedb.Options) { o.MaxBatch = bc.maxBatch })
			ctx := context.Background()
			var seq atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(max(1, 50/runtime.GOMAXPROCS(0)))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					v := fmt.Sprint(seq.Add(1))
					if err := db.Write(ctx, func(tx *sqlitedb.Tx) error {
						_, err := tx.ExecContext(ctx, "INSERT INTO t (v) VALUES (?)", v)
						return err
					}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// TestOnRollbackOrder: an fn's OnRollback functions run in reverse order when it
// fails, and not at all when it commits.
func TestOnRollbackOrder(t *testing.T) {
	db := open(t, filepath.Join(t.TempDir(), "db.sqlite"))
	ctx := context.Background()
	var got []int
	errBoom := errors.New("boom")
	err := db.Write(ctx, func(tx *sqlitedb.Tx) error {
		for i := range 3 {
			tx.OnRollback(func() { got = append(got, i) })
		}
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("Write = %v, want boom", err)
	}
	if fmt.Sprint(got) != "[2 1 0]" {
		t.Fatalf("OnRollback order = %v, want [2 1 0]", got)
	}
	got = nil
	if err := db.Write(ctx, func(tx *sqlitedb.Tx) error {
		tx.OnRollback(func() { got = append(got, 9) })
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got != nil {
		t.Fatalf("OnRollback ran after a commit: %v", got)
	}
}

// TestMigrationsAreAppendOnly: a database refuses migrations that do not match what
// was applied to it (an applied migration edited, a migration inserted before applied
// ones, a binary older than the schema) with ErrMigrationMismatch, and touches nothing;
// appending a migration still works.
func TestMigrationsAreAppendOnly(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "db.sqlite")
	db := open(t, path)
	if err := db.Write(ctx, func(tx *sqlitedb.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO t (v) VALUES ('kept')")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	extra := `CREATE TABLE t3 (id INTEGER PRIMARY KEY)`
	for _, tt := range []struct {
		name       string
		migrations []string
	}{
		{"edited", []string{testMigrations[0] + " -- edited", testMigrations[1]}},
		{"inserted before applied", []string{testMigrations[0], extra, testMigrations[1]}},
		{"older binary", testMigrations[:1]},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sqlitedb.Open(ctx, sqlitedb.Options{Path: path, Migrations: tt.migrations})
			if !errors.Is(err, sqlitedb.ErrMigrationMismatch) {
				t.Fatalf("Open = %v, want ErrMigrationMismatch", err)
			}
		})
	}

	db2 := open(t, path, func(o *sqlitedb.Options) { o.Migrations = append(append([]string{}, testMigrations...), extra) })
	if got := count(t, db2, "t"); got != 1 {
		t.Fatalf("rows of t = %d, want 1 (nothing lost)", got)
	}
	if got := count(t, db2, "t3"); got != 0 {
		t.Fatalf("t3 rows = %d", got)
	}
}

// TestMigrationsFromBeforeChecksums: a database whose schema_migrations has no
// checksum column (written by an older binary) is adopted: its applied migrations are
// not re-run, and their checksums are recorded.
func TestMigrationsFromBeforeChecksums(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "db.sqlite")
	old, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))`,
		testMigrations[0], testMigrations[1],
		`INSERT INTO schema_migrations (version) VALUES (1), (2)`,
		`INSERT INTO t (v) VALUES ('old')`,
	} {
		if _, err := old.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	old.Close()

	db := open(t, path)
	if got := count(t, db, "t"); got != 1 {
		t.Fatalf("rows of t = %d, want 1", got)
	}
	var missing int
	if err := db.Read().QueryRow(`SELECT count(*) FROM schema_migrations WHERE checksum IS NULL`).Scan(&missing); err != nil || missing != 0 {
		t.Fatalf("migrations without checksum = %d, %v", missing, err)
	}
	db.Close()
	if _, err := sqlitedb.Open(ctx, sqlitedb.Options{Path: path, Migrations: []string{testMigrations[0] + " ", testMigrations[1]}}); !errors.Is(err, sqlitedb.ErrMigrationMismatch) {
		t.Fatalf("Open with an edited migration after adoption = %v, want ErrMigrationMismatch", err)
	}
}
