package riskgrpc_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/server/servertest"
)

// interleaveSlice is how long each round runs each method.
const interleaveSlice = 500 * time.Millisecond

// BenchmarkThroughputInterleaved is BenchmarkThroughput's ReportAlert against its
// same-chain ceiling (servertest Echo) with the two alternating in slices of 500ms, one
// round (Echo then ReportAlert) per b.N, so that load from other work on the machine
// weighs on both alike and the ratio (%chain) is steadier than that of two back-to-back
// sub-benchmarks. Same server, TCP listener, load generator and 50 calls in flight.
// Run with a fixed number of rounds, e.g. -benchtime 10x.
func BenchmarkThroughputInterleaved(b *testing.B) {
	h := tcpHarness(b)
	echoReq := servertest.NewRequest("dev-1", "")
	methods := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"Echo", func(ctx context.Context) error {
			_, err := servertest.Call(ctx, h.Conn, servertest.MethodEcho, echoReq)
			return err
		}},
		{"ReportAlert", func(ctx context.Context) error {
			n := alertSeq.Add(1)
			a := newAlert(fmt.Sprint("il-", n), fmt.Sprint("dev-", n%benchDevices), []commonv1.Severity{low, medium, high}[n%3])
			res, err := h.Client.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: a})
			if err == nil && !res.GetCreated() {
				err = fmt.Errorf("alert %s not created", a.GetAlertId())
			}
			return err
		}},
	}
	var calls [2]int64
	var elapsed, cpu [2]time.Duration
	b.ResetTimer()
	for range b.N {
		for i, m := range methods {
			t0, c0 := time.Now(), cpuTime(b)
			deadline := t0.Add(interleaveSlice)
			var n atomic.Int64
			var wg sync.WaitGroup
			for range inFlight {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx := context.Background()
					for time.Now().Before(deadline) {
						if err := m.call(ctx); err != nil {
							b.Error(err)
							return
						}
						n.Add(1)
					}
				}()
			}
			wg.Wait()
			calls[i] += n.Load()
			elapsed[i] += time.Since(t0)
			cpu[i] += cpuTime(b) - c0
		}
	}
	b.StopTimer()
	rate := func(i int) float64 { return float64(calls[i]) / elapsed[i].Seconds() }
	b.ReportMetric(rate(0), "echo-calls/s")
	b.ReportMetric(rate(1), "alerts/s")
	b.ReportMetric(100*rate(1)/rate(0), "%chain")
	b.ReportMetric(float64(cpu[0].Microseconds())/float64(calls[0]), "echo-cpu-µs/call")
	b.ReportMetric(float64(cpu[1].Microseconds())/float64(calls[1]), "alert-cpu-µs/alert")
}
