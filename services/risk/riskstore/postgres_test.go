package riskstore_test

import (
	"context"
	"os"
	"testing"

	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/services/risk"
	"github.com/condaccess/condaccess/services/risk/riskstore"
	"github.com/condaccess/condaccess/services/risk/riskstore/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func openPG(t *testing.T, url string) *riskstore.PGStore {
	t.Helper()
	s, err := riskstore.OpenPG(context.Background(), riskstore.PGOptions{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPostgresStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) risk.Store { return openPG(t, pgtest.URL(t)) })
}
