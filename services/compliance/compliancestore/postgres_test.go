package compliancestore_test

import (
	"context"
	"os"
	"testing"

	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/services/compliance"
	"github.com/condaccess/condaccess/services/compliance/compliancestore"
	"github.com/condaccess/condaccess/services/compliance/compliancestore/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func openPG(t *testing.T, url string) *compliancestore.PGStore {
	t.Helper()
	s, err := compliancestore.OpenPG(context.Background(), compliancestore.PGOptions{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPostgresStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) compliance.Store { return openPG(t, pgtest.URL(t)) })
}
