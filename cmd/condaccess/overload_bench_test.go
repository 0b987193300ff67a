package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/server"
)

// BenchmarkOverload offers the whole suite (four services, one process, loopback TCP,
// development mode: every caller is one identity) twice the ReportAlert and
// EvaluateAccess rates it sustains, plus 5,000 watch attempts, while a prober checks
// health every 10ms. Each iteration is 100ms of overload (-benchtime 30x = 3s). It
// reports the peak RSS of the process (server and load generator), the health p99,
// the refusals by code, and checks that every acknowledged alert is stored.
func BenchmarkOverload(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := serveOptions{grpcAddr: "127.0.0.1:0", dataDir: b.TempDir(), services: "risk,compliance,access,remediation", stopTimeout: 5 * time.Second}
	s, err := startSuite(ctx, o, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Stop()
	opts, err := server.DialOptions(auth.ClientConfig{Insecure: true})
	if err != nil {
		b.Fatal(err)
	}
	var conns []*grpc.ClientConn
	for range 4 {
		c, err := grpc.NewClient(s.GRPCAddr(), opts...)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	risk := func(i int) riskv1.RiskServiceClient { return riskv1.NewRiskServiceClient(conns[i%len(conns)]) }
	acc := func(i int) accessv1.AccessServiceClient { return accessv1.NewAccessServiceClient(conns[i%len(conns)]) }

	var seq atomic.Int64
	report := func(ctx context.Context, i int) (string, error) {
		id := "ovl-" + strconv.FormatInt(seq.Add(1), 10)
		_, err := risk(i).ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
			AlertId: id, DeviceId: "dev-" + strconv.Itoa(i%50), Severity: commonv1.Severity_SEVERITY_LOW, Title: "overload"}})
		return id, err
	}
	evaluate := func(ctx context.Context, i int) error {
		_, err := acc(i).EvaluateAccess(ctx, &accessv1.EvaluateAccessRequest{UserId: "u-1", DeviceId: "dev-1", ApplicationId: "payroll"})
		return err
	}

	// Capacity: closed loop, 16 workers, 500ms each (the alert rate limit refuses most
	// alerts of the one development identity, so this measures the refusal path too).
	capacity := func(call func(ctx context.Context, i int) error) float64 {
		var n atomic.Int64
		cctx, ccancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer ccancel()
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Go(func() {
				for cctx.Err() == nil {
					if err := call(cctx, w); err == nil || (status.Code(err) != codes.Canceled && status.Code(err) != codes.DeadlineExceeded) {
						n.Add(1)
					}
				}
			})
		}
		wg.Wait()
		return float64(n.Load()) / 0.5
	}
	alertCap := capacity(func(ctx context.Context, i int) error { _, err := report(ctx, i); return err })
	evalCap := capacity(evaluate)

	var mu sync.Mutex
	refusals := map[string]map[codes.Code]int{"ReportAlert": {}, "EvaluateAccess": {}, "Watch": {}}
	count := func(kind string, err error) {
		mu.Lock()
		refusals[kind][status.Code(err)]++
		mu.Unlock()
	}
	var acked sync.Map
	var healthLat []time.Duration

	// The prober has its own connection, as a kubelet or load balancer would, opened
	// before the load starts.
	hc, err := grpc.NewClient(s.GRPCAddr(), opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer hc.Close()
	if _, err := healthpb.NewHealthClient(hc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		b.Fatal(err)
	}

	b.ResetTimer()
	runFor := time.Duration(b.N) * 100 * time.Millisecond
	lctx, lcancel := context.WithTimeout(ctx, runFor)
	defer lcancel()
	var wg sync.WaitGroup
	// Open loop at twice the measured rates; at most 512 calls in flight per kind.
	offer := func(kind string, rate float64, call func(ctx context.Context, i int) error) {
		sem := make(chan struct{}, 512)
		interval := time.Duration(float64(time.Second) / max(rate, 1))
		t := time.NewTicker(max(interval, 50*time.Microsecond))
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-lctx.Done():
				return
			case <-t.C:
			}
			select {
			case sem <- struct{}{}:
			default:
				count(kind, status.Error(codes.Unavailable, "generator saturated"))
				continue
			}
			wg.Go(func() {
				defer func() { <-sem }()
				cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
				defer ccancel()
				count(kind, call(cctx, i))
			})
		}
	}
	wg.Go(func() {
		offer("ReportAlert", 2*alertCap, func(ctx context.Context, i int) error {
			id, err := report(ctx, i)
			if err == nil {
				acked.Store(id, true)
			}
			return err
		})
	})
	wg.Go(func() { offer("EvaluateAccess", 2*evalCap, evaluate) })
	// 5,000 watch attempts from the one identity, 50 at a time (each waits for its
	// first message or its refusal); an accepted stream is held open until the end.
	wg.Go(func() {
		attempts := make(chan int)
		var ww sync.WaitGroup
		for range 50 {
			ww.Go(func() {
				for i := range attempts {
					st, err := risk(i).WatchRiskEvents(lctx, &riskv1.WatchRiskEventsRequest{StartRevision: 0})
					if err == nil {
						// The first message (a replayed event) or the refusal.
						_, err = st.Recv()
					}
					count("Watch", err)
					if err == nil {
						wg.Go(func() { <-lctx.Done() }) // held open until the end
						_ = st
					}
				}
			})
		}
		for i := range 5000 {
			select {
			case attempts <- i:
			case <-lctx.Done():
			}
			if lctx.Err() != nil {
				break
			}
		}
		close(attempts)
		ww.Wait()
	})
	wg.Go(func() {
		h := healthpb.NewHealthClient(hc)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-lctx.Done():
				return
			case <-t.C:
			}
			start := time.Now()
			if _, err := h.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
				b.Errorf("health: %v", err)
			}
			healthLat = append(healthLat, time.Since(start))
		}
	})
	wg.Wait()
	b.StopTimer()

	// No acknowledged write lost.
	lost := 0
	acked.Range(func(k, _ any) bool {
		if _, err := risk(0).GetAlert(ctx, &riskv1.GetAlertRequest{AlertId: k.(string)}); err != nil {
			lost++
		}
		return true
	})
	slices.Sort(healthLat)
	p99 := time.Duration(0)
	if len(healthLat) > 0 {
		p99 = healthLat[len(healthLat)*99/100]
	}
	var acks int
	acked.Range(func(_, _ any) bool { acks++; return true })
	b.ReportMetric(float64(peakRSS())/(1<<20), "peakRSS-MiB")
	b.ReportMetric(float64(p99.Microseconds())/1000, "health-p99-ms")
	b.ReportMetric(float64(lost), "lost-acked")
	b.Logf("capacity: ReportAlert %.0f/s, EvaluateAccess %.0f/s (offered twice that for %v); acknowledged alerts %d, lost %d; health p99 %v over %d probes; goroutines %d",
		alertCap, evalCap, runFor, acks, lost, p99, len(healthLat), runtime.NumGoroutine())
	for _, kind := range []string{"ReportAlert", "EvaluateAccess", "Watch"} {
		b.Logf("%s: %s", kind, fmtCodes(refusals[kind]))
	}
	if lost > 0 {
		b.Errorf("%d acknowledged alerts lost", lost)
	}
}

func fmtCodes(m map[codes.Code]int) string {
	var parts []string
	for c, n := range m {
		parts = append(parts, fmt.Sprintf("%v=%d", c, n))
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

// peakRSS is the process's peak resident set (VmHWM) in bytes, 0 when unknown.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
