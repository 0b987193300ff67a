package riskstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"

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
	svc := risk.New(risk.Config{Store: st, Encode: riskgrpc.EncodeEvent})
	var seq atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(max(1, 50/runtime.GOMAXPROCS(0)))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := seq.Add(1)
			_, err := svc.ReportAlert(ctx, risk.Alert{ID: fmt.Sprint("a-", n), DeviceID: fmt.Sprint("dev-", n%benchDevices),
				Severity: risk.Severity(2 + n%3), Title: "bench",
				Evidence: []risk.Evidence{{File: &risk.FileEvidence{Path: "/tmp/x"}}}})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "alerts/s")
}
