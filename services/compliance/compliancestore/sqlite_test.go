package compliancestore_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/condaccess/condaccess/services/compliance"
	"github.com/condaccess/condaccess/services/compliance/compliancestore"
	"github.com/condaccess/condaccess/services/compliance/compliancestore/storetest"
)

func TestSQLiteStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) compliance.Store {
		s, err := compliancestore.Open(context.Background(), compliancestore.Options{Path: filepath.Join(t.TempDir(), "compliance.db"), Synchronous: "NORMAL"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
