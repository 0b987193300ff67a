package pgtest_test

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/condaccess/condaccess/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestFreshDatabasePerTest: each URL is its own empty database, so a table made in
// one is absent from the next.
func TestFreshDatabasePerTest(t *testing.T) {
	ctx := context.Background()
	var urls []string
	for range 2 {
		u := pgtest.URL(t)
		urls = append(urls, u)
		c, err := pgx.Connect(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		var n int
		if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE tablename = 'marker'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("database %s already has the marker table of another test", u)
		}
		if _, err := c.Exec(ctx, `CREATE TABLE marker (x int)`); err != nil {
			t.Fatal(err)
		}
		c.Close(ctx)
	}
	if urls[0] == urls[1] {
		t.Fatalf("two calls returned the same database %s", urls[0])
	}
}
