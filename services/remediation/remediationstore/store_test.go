package remediationstore_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/condaccess/condaccess/services/remediation"
	"github.com/condaccess/condaccess/services/remediation/remediationstore"
	"github.com/condaccess/condaccess/services/remediation/remediationstore/storetest"
)

func TestSQLiteStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) remediation.Store {
		s, err := remediationstore.Open(context.Background(), remediationstore.Options{
			Path: filepath.Join(t.TempDir(), "remediation.db"), Encode: storetest.EncodeJSON, Synchronous: "NORMAL",
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
