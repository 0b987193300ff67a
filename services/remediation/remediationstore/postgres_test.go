package remediationstore_test

import (
	"context"
	"os"
	"testing"

	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/services/remediation"
	"github.com/condaccess/condaccess/services/remediation/remediationstore"
	"github.com/condaccess/condaccess/services/remediation/remediationstore/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func openPG(t *testing.T, url string) *remediationstore.PGStore {
	t.Helper()
	s, err := remediationstore.OpenPG(context.Background(), remediationstore.PGOptions{URL: url, Encode: storetest.EncodeJSON})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPostgresStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) remediation.Store { return openPG(t, pgtest.URL(t)) })
}
