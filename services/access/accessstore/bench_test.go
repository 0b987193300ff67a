package accessstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/services/access"
	"github.com/condaccess/condaccess/services/access/accessstore"
)

// BenchmarkWriteSignIns is the sign-in log's cost per sign-in, written in
// batches of 1024 as the recorder does, on SQLite and on PostgreSQL.
func BenchmarkWriteSignIns(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		s, err := accessstore.Open(context.Background(), accessstore.Options{Path: filepath.Join(b.TempDir(), "access.db")})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		benchWriteSignIns(b, s)
	})
	b.Run("postgres", func(b *testing.B) {
		s, err := accessstore.OpenPG(context.Background(), accessstore.PGOptions{URL: pgtest.URL(b)})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		benchWriteSignIns(b, s)
	})
}

func benchWriteSignIns(b *testing.B, s access.Store) {
	detail := make([]byte, 220)
	batch := make([]*access.SignIn, 1024)
	now := time.Now()
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		for i := range batch {
			n++
			batch[i] = &access.SignIn{ID: fmt.Sprintf("si-%d", n), Time: now.Add(time.Duration(n)), UserID: fmt.Sprintf("u-%06d", n%100000),
				DeviceID: fmt.Sprintf("d-%07d", n%1000000), AppID: fmt.Sprintf("app-%04d", n%1000), Decision: 1, TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", Detail: detail}
		}
		if err := s.WriteBatch(context.Background(), batch, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/sign-in")
}
