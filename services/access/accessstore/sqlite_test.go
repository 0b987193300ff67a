package accessstore_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/condaccess/condaccess/services/access"
	"github.com/condaccess/condaccess/services/access/accessstore"
	"github.com/condaccess/condaccess/services/access/accessstore/storetest"
)

func TestSQLite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) access.Store {
		s, err := accessstore.Open(context.Background(), accessstore.Options{Path: filepath.Join(t.TempDir(), "access.db"), Synchronous: "NORMAL"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
