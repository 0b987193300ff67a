package accessstore_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/condaccess/condaccess/internal/sqlitedb"
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

func TestWriterCacheSize(t *testing.T) {
	s, err := accessstore.Open(context.Background(), accessstore.Options{Path: filepath.Join(t.TempDir(), "access.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var n int64
	if err := s.DB().Write(context.Background(), func(tx *sqlitedb.Tx) error {
		return tx.QueryRowContext(context.Background(), `PRAGMA cache_size`).Scan(&n)
	}); err != nil {
		t.Fatal(err)
	}
	if n != -65536 {
		t.Fatalf("writer cache_size = %d, want -65536", n)
	}
}
