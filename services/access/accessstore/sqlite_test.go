package accessstore_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

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

func TestDeleteSignInsInChunks(t *testing.T) {
	s, err := accessstore.Open(context.Background(), accessstore.Options{Path: filepath.Join(t.TempDir(), "access.db"), Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t0 := time.Unix(1_800_000_000, 0)
	var batch []*access.SignIn
	for i := range 25_000 {
		batch = append(batch, &access.SignIn{Time: t0.Add(time.Duration(i) * time.Millisecond), UserID: "u", DeviceID: "d", AppID: "a", Decision: 1})
	}
	if err := s.WriteBatch(context.Background(), batch, nil); err != nil {
		t.Fatal(err)
	}
	n, err := s.DeleteSignInsBefore(context.Background(), t0.Add(22_000*time.Millisecond))
	if err != nil || n != 22_000 {
		t.Fatalf("deleted %d, %v; want 22000", n, err)
	}
	left, _, err := s.ListSignIns(context.Background(), access.SignInFilter{}, "", 10_000)
	if err != nil || len(left) != 3_000 || !left[len(left)-1].Time.Equal(t0.Add(22_000*time.Millisecond)) {
		t.Fatalf("left %d sign-ins (oldest %v), %v", len(left), left[len(left)-1].Time, err)
	}
}
