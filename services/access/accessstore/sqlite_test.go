package accessstore_test

import (
	"context"
	"fmt"
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

// TestLegacySignInsConverted: sign-ins stored one row per sign-in (the previous layout)
// are moved into batches when the store opens, keeping their ids and order.
func TestLegacySignInsConverted(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "access.db")
	s, err := accessstore.Open(ctx, accessstore.Options{Path: path, Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_800_000_000, 0)
	if err := s.DB().Write(ctx, func(tx *sqlitedb.Tx) error {
		for i := range 5000 {
			if _, err := tx.ExecContext(ctx, `INSERT INTO signins (key, user_id, device_id, app_id, decision, trace_id, detail) VALUES (?,?,?,?,?,?,?)`,
				t0.Add(time.Duration(i)*time.Millisecond).UnixNano(), fmt.Sprintf("u-%d", i%7), "d", "a", 1+i%2, fmt.Sprintf("t-%d", i), []byte{byte(i)}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = accessstore.Open(ctx, accessstore.Options{Path: path, Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, _, err := s.ListSignIns(ctx, access.SignInFilter{UserID: "u-3"}, "", 10_000)
	if err != nil || len(got) != 714 {
		t.Fatalf("listed %d sign-ins of u-3, %v; want 714", len(got), err)
	}
	if want := t0.Add(4994 * time.Millisecond); !got[0].Time.Equal(want) || got[0].TraceID != "t-4994" || got[0].Detail[0] != byte(4994%256) {
		t.Fatalf("newest of u-3 = %+v, want t-4994 at %v", got[0], want)
	}
	var left int
	if err := s.DB().Read().QueryRowContext(ctx, `SELECT COUNT(*) FROM signins`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d legacy rows left, %v", left, err)
	}
	// The next sign-in comes after the converted ones.
	next := []*access.SignIn{{Time: t0, UserID: "u-new"}}
	if err := s.WriteBatch(ctx, next, nil); err != nil || !next[0].Time.After(t0.Add(4999*time.Millisecond)) {
		t.Fatalf("next sign-in at %v, %v", next[0].Time, err)
	}
}
