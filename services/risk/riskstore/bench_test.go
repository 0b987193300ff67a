package riskstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/services/risk"
	"github.com/condaccess/condaccess/services/risk/riskgrpc"
	"github.com/condaccess/condaccess/services/risk/riskstore"
)

// benchDevices spreads the alerts over a fleet: with alerts never resolved here, a
// device's active set (listed in every ReportAlert response) stays small (a few
// alerts), as it is in practice, instead of growing with b.N.
const benchDevices = 10000

// BenchmarkReportAlert measures the domain and store alone (no gRPC): durable
// ReportAlert from ~50 concurrent callers sharing group commits.
func BenchmarkReportAlert(b *testing.B) {
	ctx := context.Background()
	st, err := riskstore.Open(ctx, riskstore.Options{Path: filepath.Join(b.TempDir(), "risk.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchReportAlert(b, st)
}

// benchReportAlert reports single alerts on st from ~50 concurrent callers.
func benchReportAlert(b *testing.B, st risk.Store) {
	ctx := context.Background()
	svc := risk.New(risk.Config{Store: st, Encode: riskgrpc.EncodeEvent})
	var seq atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(max(1, 50/runtime.GOMAXPROCS(0)))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := seq.Add(1)
			_, err := svc.ReportAlert(ctx, benchAlert(n))
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "alerts/s")
}

// benchStore is a store the benchmark closes.
type benchStore interface {
	risk.Store
	Close() error
}

func benchAlert(n int64) risk.Alert {
	return risk.Alert{ID: fmt.Sprint("a-", n), DeviceID: fmt.Sprint("dev-", n%benchDevices),
		Severity: risk.Severity(2 + n%3), Title: "bench",
		Evidence: []risk.Evidence{{File: &risk.FileEvidence{Path: "/tmp/x"}}}}
}

// BenchmarkReportAlerts measures durable ReportAlerts (batches of 100, ~8 concurrent
// callers) on SQLite and on PostgreSQL in one run; one op is one batch. The test
// PostgreSQL cluster runs with fsync off: compare with care.
//
//	CONDACCESS_TEST_REQUIRE_POSTGRES=1 go test ./services/risk/riskstore -run XXX -bench ReportAlerts -benchtime 100x
func BenchmarkReportAlerts(b *testing.B) {
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		open func(b *testing.B) (benchStore, error)
	}{
		{"sqlite", func(b *testing.B) (benchStore, error) {
			return riskstore.Open(ctx, riskstore.Options{Path: filepath.Join(b.TempDir(), "risk.db")})
		}},
		{"postgres", func(b *testing.B) (benchStore, error) {
			return riskstore.OpenPG(ctx, riskstore.PGOptions{URL: pgtest.URL(b)})
		}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			st, err := tt.open(b)
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			svc := risk.New(risk.Config{Store: st, Encode: riskgrpc.EncodeEvent})
			const batch = 100
			var seq atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(max(1, 8/runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					alerts := make([]risk.Alert, batch)
					for i := range alerts {
						alerts[i] = benchAlert(seq.Add(1))
					}
					if _, err := svc.ReportAlerts(ctx, alerts); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "alerts/s")
		})
	}
}
