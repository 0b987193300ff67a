package riskgrpc_test

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/server/servertest"
	"github.com/condaccess/condaccess/services/risk/risktest"
)

// benchDevices spreads the alerts over a fleet: with alerts never resolved here, a
// device's active set (listed in every ReportAlert response) stays small (a few
// alerts), as it is in practice, instead of growing with b.N.
const benchDevices = 10000

// inFlight is the number of concurrent callers of the throughput benchmarks.
const inFlight = 50

var alertSeq atomic.Int64

func tcpHarness(b *testing.B) *risktest.Harness {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	// servertest's Echo: an empty unary method behind exactly ReportAlert's chain
	// (tracing, logging, auth, validation), the second ceiling.
	return risktest.StartWith(b, risktest.Options{Listener: lis, Register: servertest.Register})
}

// cpuTime returns the process's user+system CPU time.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the process CPU time (server and load generator together) per
// op and per unit (alert) since t0.
func reportCPU(b *testing.B, t0 time.Duration, perOp int) {
	cpu := cpuTime(b) - t0
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*perOp), "cpu-µs/item")
}

func parallelism() int {
	// RunParallel starts parallelism*GOMAXPROCS goroutines.
	return max(1, inFlight/runtime.GOMAXPROCS(0))
}

// BenchmarkThroughput measures, on one server over a real 127.0.0.1 TCP listener with
// ~50 calls in flight from the same load generator, two ceilings and the reports:
// grpc.health.v1 Check (an empty unary method that otelgrpc does not trace),
// servertest's Echo (an empty unary method through exactly ReportAlert's chain:
// tracing, logging, auth, validation), durable ReportAlert (synchronous=FULL: every
// acknowledged alert survives SIGKILL and power loss), and ReportAlerts in batches of
// 100; the report benchmarks give their rate as a percentage of both ceilings
// (%ceiling: health Check; %chain: Echo).
func BenchmarkThroughput(b *testing.B) {
	h := tcpHarness(b)
	health := healthpb.NewHealthClient(h.Conn)
	var ceiling, chain float64 // calls per second

	b.Run("ceiling=health.Check", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(parallelism())
		t0 := cpuTime(b)
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			for pb.Next() {
				if _, err := health.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		reportCPU(b, t0, 1)
		ceiling = float64(b.N) / b.Elapsed().Seconds()
		b.ReportMetric(ceiling, "calls/s")
	})

	b.Run("ceiling=servertest.Echo", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(parallelism())
		t0 := cpuTime(b)
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			req := servertest.NewRequest("dev-1", "")
			for pb.Next() {
				if _, err := servertest.Call(ctx, h.Conn, servertest.MethodEcho, req); err != nil {
					b.Error(err)
					return
				}
			}
		})
		reportCPU(b, t0, 1)
		chain = float64(b.N) / b.Elapsed().Seconds()
		b.ReportMetric(chain, "calls/s")
		if ceiling > 0 {
			b.ReportMetric(100*chain/ceiling, "%ceiling")
		}
	})

	b.Run("ReportAlert", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(parallelism())
		t0 := cpuTime(b)
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			for pb.Next() {
				n := alertSeq.Add(1)
				a := newAlert(fmt.Sprint("bench-", n), fmt.Sprint("dev-", n%benchDevices), []commonv1.Severity{low, medium, high}[n%3])
				res, err := h.Client.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: a})
				if err != nil || !res.GetCreated() {
					b.Error(err)
					return
				}
			}
		})
		reportCPU(b, t0, 1)
		rate := float64(b.N) / b.Elapsed().Seconds()
		b.ReportMetric(rate, "alerts/s")
		if ceiling > 0 {
			b.ReportMetric(100*rate/ceiling, "%ceiling")
		}
		if chain > 0 {
			b.ReportMetric(100*rate/chain, "%chain")
		}
	})

	const batch = 100
	b.Run(fmt.Sprintf("ReportAlerts/batch=%d", batch), func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(parallelism())
		t0 := cpuTime(b)
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			for pb.Next() {
				req := &riskv1.ReportAlertsRequest{Alerts: make([]*riskv1.Alert, batch)}
				for i := range req.Alerts {
					n := alertSeq.Add(1)
					req.Alerts[i] = newAlert(fmt.Sprint("bench-", n), fmt.Sprint("dev-", n%benchDevices), []commonv1.Severity{low, medium, high}[n%3])
				}
				if _, err := h.Client.ReportAlerts(ctx, req); err != nil {
					b.Error(err)
					return
				}
			}
		})
		reportCPU(b, t0, batch)
		calls := float64(b.N) / b.Elapsed().Seconds()
		b.ReportMetric(calls*batch, "alerts/s")
		if ceiling > 0 {
			b.ReportMetric(100*calls/ceiling, "%ceiling(calls)")
			b.ReportMetric(100*calls*batch/ceiling, "%ceiling(alerts)")
		}
		if chain > 0 {
			b.ReportMetric(100*calls/chain, "%chain(calls)")
			b.ReportMetric(100*calls*batch/chain, "%chain(alerts)")
		}
	})
}

// BenchmarkDelivery measures report-to-watcher latency: from the start of a
// ReportAlert call (which includes the durable commit) to the receipt of its
// alert_changed event by watchers over TCP, with 1 and with 100 watchers (fan-out:
// the time until the last of them has it).
func BenchmarkDelivery(b *testing.B) {
	for _, watchers := range []int{1, 100} {
		b.Run(fmt.Sprintf("watchers=%d", watchers), func(b *testing.B) {
			h := tcpHarness(b)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			type recv struct {
				id string
				at time.Time
			}
			got := make(chan recv, watchers*16)
			var wg sync.WaitGroup
			start := h.Store.Revision()
			for range watchers {
				s, err := h.Client.WatchRiskEvents(ctx, &riskv1.WatchRiskEventsRequest{StartRevision: start})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := s.Recv(); err != nil { // the first progress: subscribed
					b.Fatal(err)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						m, err := s.Recv()
						if err != nil {
							return
						}
						if ac := m.GetEvent().GetAlertChanged(); ac != nil {
							got <- recv{ac.GetAlert().GetAlertId(), time.Now()}
						}
					}
				}()
			}
			lat := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				id := fmt.Sprint("lat-", alertSeq.Add(1))
				t0 := time.Now()
				if _, err := h.Client.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: newAlert(id, fmt.Sprint("dev-", i%100), high)}); err != nil {
					b.Fatal(err)
				}
				var last time.Time
				for range watchers {
					select {
					case r := <-got:
						if r.id != id {
							b.Fatalf("watcher got %s, want %s", r.id, id)
						}
						last = r.at
					case <-time.After(10 * time.Second):
						b.Fatal("event not delivered within 10s")
					}
				}
				lat = append(lat, last.Sub(t0))
			}
			b.StopTimer()
			cancel()
			wg.Wait()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds()), "p99-µs")
		})
	}
}
