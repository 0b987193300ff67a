package accessstore_test

import (
	"context"
	"os"
	"testing"

	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/services/access"
	"github.com/condaccess/condaccess/services/access/accessstore"
	"github.com/condaccess/condaccess/services/access/accessstore/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func openPG(t *testing.T, url string, o accessstore.PGOptions) *accessstore.Store {
	t.Helper()
	o.URL = url
	s, err := accessstore.OpenPG(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPostgresStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) access.Store { return openPG(t, pgtest.URL(t), accessstore.PGOptions{}) })
}
