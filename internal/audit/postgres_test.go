package audit_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/pgdb"
	"github.com/condaccess/condaccess/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// openPG opens the schema name of the database at url with the audit table, as a
// store's replica does: the log to list and compact, and the writer to append.
func openPG(t *testing.T, url, name string, c *clock) (*pgdb.DB, *audit.Log, *audit.PGWriter) {
	t.Helper()
	db, err := pgdb.Open(context.Background(), pgdb.Options{URL: url, Schema: name, Migrations: audit.PGMigrations("")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	opts := audit.Options{Source: name, Now: c.now}
	return db, audit.NewPG(db, opts), audit.NewPGWriter(opts)
}

// putPG records the creation of an item in its own transaction.
func putPG(ctx context.Context, db *pgdb.DB, w *audit.PGWriter, id, name string) error {
	return db.Write(ctx, func(tx *pgdb.Tx) error {
		return w.Append(ctx, tx, audit.Change{ResourceType: "item", ResourceID: id, After: &item{Name: name}})
	})
}

// TestPGReplicasListAndCompactOneTable: an event appended through one replica is
// listed by another with its actor; replicas compacting at once remove each event
// once, and their counts add up to the events removed (every replica may compact).
func TestPGReplicasListAndCompactOneTable(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	var c clock
	dbA, _, wA := openPG(t, url, "svc", &c)
	var replicas []*audit.Log
	for range 4 {
		_, l, _ := openPG(t, url, "svc", &c)
		replicas = append(replicas, l)
	}
	bob := audit.NewContext(ctx, audit.Actor{Subject: "bob", Roles: []string{"secops-admin"}, Method: "/m/Put"})
	for i := range 20 {
		if err := putPG(bob, dbA, wA, fmt.Sprintf("i%d", i), "x"); err != nil {
			t.Fatal(err)
		}
	}
	evs, more, err := audit.List(ctx, replicas[:1], audit.Filter{Subject: "bob"}, nil, 100)
	if err != nil || more || len(evs) != 20 {
		t.Fatalf("List on another replica = %d events, more %v, %v; want 20", len(evs), more, err)
	}
	if e := evs[0]; e.ResourceID != "i19" || e.Actor.Subject != "bob" || e.Actor.Method != "/m/Put" || fmt.Sprint(e.Actor.Roles) != "[secops-admin]" ||
		e.Action != audit.ActionCreate || string(e.After) != `{"name":"x"}` || e.Source != "svc" {
		t.Errorf("newest event = %+v", e)
	}

	// Events are at 1_700_000_001 .. _020: all replicas compact those before _016.
	cutoff := time.Unix(1_700_000_016, 0)
	counts := make([]int64, len(replicas))
	var wg sync.WaitGroup
	for i, l := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := l.Compact(ctx, cutoff)
			if err != nil {
				t.Errorf("replica %d: Compact: %v", i, err)
			}
			counts[i] = n
		}()
	}
	wg.Wait()
	var total, removed int64
	for i, l := range replicas {
		total += counts[i]
		removed += l.Removed()
	}
	if total != 15 || removed != 15 {
		t.Errorf("replicas removed %v (sum %d, Removed sum %d), want 15 in all", counts, total, removed)
	}
	evs, _, err = audit.List(ctx, replicas[1:2], audit.Filter{}, nil, 100)
	if err != nil || len(evs) != 5 || evs[4].ResourceID != "i15" {
		t.Fatalf("after compaction %d events (%v), want i19..i15", len(evs), err)
	}
}
