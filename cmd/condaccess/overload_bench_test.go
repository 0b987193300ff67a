package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/server"
)

// BenchmarkOverload offers the whole suite (four services, loopback TCP, development
// mode: every caller is one identity) twice the ReportAlert and EvaluateAccess rates
// it sustains, plus 5,000 watch attempts, while a prober checks health every 10ms.
// Each iteration is 100ms of overload: -benchtime 600x is the 60s.
//
// The suite runs in this process, so -cpuprofile, -blockprofile and the peak RSS are
// the server's. The load generator and the health prober each run in a process of
// their own (this test binary, run again as TestOverloadHelper): in one process their
// thousands of goroutines would share the server's GOMAXPROCS and scheduler, and the
// prober's own wake-ups would queue behind them, so the figures would measure the
// load generator as much as the server. The prober stands for a kubelet or a load
// balancer: its own connection, opened before the load starts.
//
// It reports the server's peak RSS, the health p50/p99/max over the overload phase,
// the refusals by code, and checks that every acknowledged alert is stored.
func BenchmarkOverload(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := serveOptions{grpcAddr: "127.0.0.1:0", dataDir: b.TempDir(), services: "risk,compliance,access,remediation", stopTimeout: 5 * time.Second}
	// serve's logger (JSON, INFO), writing nowhere: refusals log a WARN line each, and
	// that cost belongs to the server.
	s, err := startSuite(ctx, o, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Stop()
	dir := b.TempDir()
	b.ResetTimer()
	runFor := time.Duration(b.N) * 100 * time.Millisecond
	// The prober starts first and outlasts the load (capacity phases, then runFor).
	probe := startHelper(b, "probe", s.GRPCAddr(), dir, runFor+2*capacityPhase+2*time.Second)
	if err := waitForFile(ctx, filepath.Join(dir, "probe.ready")); err != nil {
		b.Fatal(err)
	}
	schedBefore := schedLatencies()
	load := startHelper(b, "load", s.GRPCAddr(), dir, runFor)
	if err := load.Wait(); err != nil {
		b.Fatalf("load generator: %v", err)
	}
	schedP99 := schedBefore.p99Since(schedLatencies())
	if err := probe.Wait(); err != nil {
		b.Fatalf("prober: %v", err)
	}
	b.StopTimer()

	var lr loadResult
	readJSON(b, filepath.Join(dir, "load.json"), &lr)
	var samples []probeSample
	readJSON(b, filepath.Join(dir, "probe.json"), &samples)
	var lat, late []time.Duration
	failed := 0
	for _, p := range samples {
		if p.At < lr.Start || p.At > lr.End {
			continue // only the overload phase counts
		}
		if p.Latency == 0 { // a wake-up delay sample
			late = append(late, time.Duration(p.Late))
			continue
		}
		if p.Err != "" {
			failed++
		}
		lat = append(lat, time.Duration(p.Latency))
	}
	slices.Sort(lat)
	slices.Sort(late)
	pctOf := func(ds []time.Duration, q float64) time.Duration {
		if len(ds) == 0 {
			return 0
		}
		return ds[min(len(ds)-1, int(float64(len(ds))*q))]
	}
	pct := func(q float64) time.Duration { return pctOf(lat, q) }

	// No acknowledged write lost.
	opts, err := server.DialOptions(auth.ClientConfig{Insecure: true})
	if err != nil {
		b.Fatal(err)
	}
	conn, err := grpc.NewClient(s.GRPCAddr(), opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	risk := riskv1.NewRiskServiceClient(conn)
	acked := readLines(b, filepath.Join(dir, "acked.txt"))
	lost := 0
	for _, id := range acked {
		if _, err := risk.GetAlert(ctx, &riskv1.GetAlertRequest{AlertId: id}); err != nil {
			lost++
		}
	}
	b.ReportMetric(float64(peakRSS())/(1<<20), "peakRSS-MiB")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "health-p99-ms")
	b.ReportMetric(float64(lost), "lost-acked")
	b.Logf("capacity: ReportAlert %.0f/s, EvaluateAccess %.0f/s; offered for %v: ReportAlert %.0f/s (sent %.0f/s), EvaluateAccess %.0f/s (sent %.0f/s); acknowledged alerts %d, lost %d; goroutines %d",
		lr.AlertCap, lr.EvalCap, runFor, lr.AlertOffered, lr.AlertSent, lr.EvalOffered, lr.EvalSent, len(acked), lost, runtime.NumGoroutine())
	over := 0
	for _, d := range lat {
		if d > 100*time.Millisecond {
			over++
		}
	}
	b.Logf("health over the overload phase: %d probes, %d failed, %d over 100ms, p50 %v p99 %v max %v; the prober's own wake-up delay p50 %v p99 %v max %v; the server's goroutine scheduling latency p99 %v",
		len(lat), failed, over, pct(0.5), pct(0.99), pct(1), pctOf(late, 0.5), pctOf(late, 0.99), pctOf(late, 1), schedP99)
	b.Logf("outcomes: ReportAlert %s; EvaluateAccess %s; Watch %s", lr.Codes["ReportAlert"], lr.Codes["EvaluateAccess"], lr.Codes["Watch"])
	if lost > 0 {
		b.Errorf("%d acknowledged alerts lost", lost)
	}
	if rss := peakRSS(); rss > overloadRSSBound {
		b.Errorf("the server's peak RSS %d MiB is over the bound of %d MiB", rss>>20, overloadRSSBound>>20)
	}
	// The goal holds for the p99 of a run long enough to have one (the first run,
	// b.N=1, has a handful of probes in the flood's first 100ms).
	if p99 := pct(0.99); p99 > 100*time.Millisecond && runFor >= 10*time.Second {
		b.Errorf("health p99 %v over the overload phase: the goal is 100ms", p99)
	}
	if failed > 0 {
		b.Errorf("%d health checks failed during the overload", failed)
	}
}

// overloadRSSBound is the server's memory bound under the overload: the suite's
// peak resident set (this process: the four services, their SQLite stores and the
// benchmark's own bookkeeping) stays under it. What bounds it: the per-connection
// caps of development mode (256 unary calls and 64 MiB of requests in flight, 64
// watches, each with a 1,024-event buffer), 4 load connections, the decoded event
// cache's byte cap, the server's total of calls in flight. Measured: 452-581 MiB in 60s runs.
const overloadRSSBound = 768 << 20

// schedHist is the Go scheduler's histogram of how long goroutines waited to run.
type schedHist struct {
	counts  []uint64
	buckets []float64
}

func schedLatencies() schedHist {
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64Histogram {
		return schedHist{}
	}
	h := s[0].Value.Float64Histogram()
	return schedHist{counts: slices.Clone(h.Counts), buckets: h.Buckets}
}

// p99Since is the 99th percentile of the waits recorded between h and later.
func (h schedHist) p99Since(later schedHist) time.Duration {
	if len(h.counts) == 0 || len(later.counts) != len(h.counts) {
		return 0
	}
	var total uint64
	diff := make([]uint64, len(h.counts))
	for i := range diff {
		diff[i] = later.counts[i] - h.counts[i]
		total += diff[i]
	}
	var seen uint64
	for i, n := range diff {
		if seen += n; total > 0 && seen*100 >= total*99 {
			return time.Duration(later.buckets[i+1] * float64(time.Second)) // the bucket's upper bound
		}
	}
	return 0
}

// capacityPhase is how long the load generator measures each method's capacity.
const capacityPhase = 500 * time.Millisecond

// The helper process's environment.
const (
	envHelper = "CONDACCESS_OVERLOAD_HELPER" // "load" or "probe"
	envAddr   = "CONDACCESS_OVERLOAD_ADDR"
	envDir    = "CONDACCESS_OVERLOAD_DIR"
	envFor    = "CONDACCESS_OVERLOAD_FOR"
)

// startHelper runs this test binary again as TestOverloadHelper in mode.
func startHelper(b *testing.B, mode, addr, dir string, d time.Duration) *exec.Cmd {
	b.Helper()
	args := []string{os.Args[0], "-test.run=^TestOverloadHelper$", "-test.count=1"}
	if mode == "load" {
		args = append(niceLoad(b), args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), envHelper+"="+mode, envAddr+"="+addr, envDir+"="+dir, envFor+"="+d.String())
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd
}

// envLoadNice is the niceness of the load generator's process (default 10; 0 runs
// it at the server's priority).
const envLoadNice = "CONDACCESS_OVERLOAD_LOAD_NICE"

// niceLoad returns the command prefix that runs the load generator at a lower CPU
// priority than the server: an attacker's client runs on the attacker's machines,
// so the CPU it spends building and sending calls is not the server's. On this
// benchmark's one machine it would be: at twice the server's capacity the generator
// needs about as much CPU as the server, and the kernel would share the cores
// between them evenly, measuring how the server does on part of its CPU. At nice 10
// the generator gets the CPU the server leaves, and still offers twice the capacity
// (the rates are measured and logged). CONDACCESS_OVERLOAD_LOAD_NICE=0 measures the
// shared case.
func niceLoad(b *testing.B) []string {
	n := os.Getenv(envLoadNice)
	if n == "" {
		n = "10"
	}
	if v, err := strconv.Atoi(n); err != nil || v < 0 || v > 19 {
		b.Fatalf("%s=%q: want 0..19", envLoadNice, n)
	} else if v == 0 {
		return nil
	}
	path, err := exec.LookPath("nice")
	if err != nil {
		b.Logf("no nice(1) (%v): the load generator runs at the server's priority", err)
		return nil
	}
	b.Logf("load generator at nice %s (%s=0 for the server's priority)", n, envLoadNice)
	return []string{path, "-n", n}
}

func waitForFile(ctx context.Context, path string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", path, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func readJSON(b *testing.B, path string, v any) {
	b.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		b.Fatalf("%s: %v", path, err)
	}
}

func readLines(b *testing.B, path string) []string {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := sc.Text(); l != "" {
			out = append(out, l)
		}
	}
	if err := sc.Err(); err != nil {
		b.Fatal(err)
	}
	return out
}

// loadResult is what the load generator reports.
type loadResult struct {
	AlertCap, EvalCap float64
	// AlertOffered and EvalOffered are the rates offered in the overload phase (calls/s);
	// AlertSent and EvalSent the rates sent (offered calls that did not find the
	// generator at its own cap of calls in flight).
	AlertOffered, EvalOffered, AlertSent, EvalSent float64
	// Start and End bound the overload phase (Unix nanoseconds).
	Start, End int64
	// Codes are the outcomes by kind ("ReportAlert", "EvaluateAccess", "Watch").
	Codes map[string]string
}

// probeSample is one health check: when it started (Unix nanoseconds), how long it
// took, and its error; or (Latency 0) one measure of the prober's own scheduling
// delay: by how much a 1ms sleep overran (Late), a measure of how busy the machine
// is, not the server.
type probeSample struct {
	At      int64
	Latency int64
	Late    int64
	Err     string `json:",omitempty"`
}

// TestOverloadHelper is BenchmarkOverload's load generator or prober when run by it
// (it skips otherwise).
func TestOverloadHelper(t *testing.T) {
	mode := os.Getenv(envHelper)
	if mode == "" {
		t.Skip("run by BenchmarkOverload only")
	}
	addr, dir := os.Getenv(envAddr), os.Getenv(envDir)
	d, err := time.ParseDuration(os.Getenv(envFor))
	if err != nil {
		t.Fatal(err)
	}
	opts, err := server.DialOptions(auth.ClientConfig{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	switch mode {
	case "probe":
		runProber(t, addr, dir, d, opts)
	case "load":
		runLoad(t, addr, dir, d, opts)
	default:
		t.Fatalf("unknown helper mode %q", mode)
	}
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// runProber checks health every 10ms for d on its own connection.
func runProber(t *testing.T, addr, dir string, d time.Duration, opts []grpc.DialOption) {
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	h := healthpb.NewHealthClient(conn)
	ctx := context.Background()
	if _, err := h.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "probe.ready"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// The prober's own scheduling delay, measured apart from the checks: a goroutine
	// that sleeps 1ms at a time records by how much each sleep overran. (Measured
	// from the check loop's ticks it would include the previous check's latency:
	// a ticker's tick waits in its channel while a check runs.)
	var lateMu sync.Mutex
	var lates []probeSample
	stopLate := make(chan struct{})
	lateDone := make(chan struct{})
	go func() {
		defer close(lateDone)
		for {
			select {
			case <-stopLate:
				return
			default:
			}
			t0 := time.Now()
			time.Sleep(time.Millisecond)
			over := time.Since(t0) - time.Millisecond
			lateMu.Lock()
			lates = append(lates, probeSample{At: t0.UnixNano(), Late: int64(over)})
			lateMu.Unlock()
		}
	}()
	var samples []probeSample
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		<-tick.C
		start := time.Now()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := h.Check(cctx, &healthpb.HealthCheckRequest{})
		cancel()
		p := probeSample{At: start.UnixNano(), Latency: int64(time.Since(start))}
		if err != nil {
			p.Err = err.Error()
		}
		samples = append(samples, p)
	}
	close(stopLate)
	<-lateDone
	samples = append(samples, lates...)
	writeJSON(t, filepath.Join(dir, "probe.json"), samples)
}

// runLoad measures the capacity of ReportAlert and EvaluateAccess, then offers twice
// that for d, plus 5,000 watch attempts from the one identity.
func runLoad(t *testing.T, addr, dir string, runFor time.Duration, _ []grpc.DialOption) {
	ctx := context.Background()
	// A bare client: no tracing, timeout or retry interceptors, whose CPU would come
	// out of what the generator can offer (an attacker's client has none either).
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(server.DefaultClientMaxRecvMsgSize))}
	var conns []*grpc.ClientConn
	for range 4 {
		c, err := grpc.NewClient(addr, opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	risk := func(i int) riskv1.RiskServiceClient { return riskv1.NewRiskServiceClient(conns[i%len(conns)]) }
	// The watch attempts come from one identity, as the workload says: in development
	// mode the caps count per connection, so they share one connection (from four,
	// they would be four identities' worth: 256 watches held instead of 64).
	watchConn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer watchConn.Close()
	watcher := riskv1.NewRiskServiceClient(watchConn)
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
	var ackMu sync.Mutex
	var acked []string
	ack := func(id string) {
		ackMu.Lock()
		acked = append(acked, id)
		ackMu.Unlock()
	}

	// Capacity: closed loop, 16 workers (the alert rate limit refuses most alerts of
	// the one development identity, so this measures the refusal path too).
	capacity := func(call func(ctx context.Context, i int) error) float64 {
		var n atomic.Int64
		cctx, ccancel := context.WithTimeout(ctx, capacityPhase)
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
		return float64(n.Load()) / capacityPhase.Seconds()
	}
	alertCap := capacity(func(ctx context.Context, i int) error {
		id, err := report(ctx, i)
		if err == nil {
			ack(id)
		}
		return err
	})
	evalCap := capacity(evaluate)

	var mu sync.Mutex
	outcomes := map[string]map[codes.Code]int{"ReportAlert": {}, "EvaluateAccess": {}, "Watch": {}}
	count := func(kind string, err error) {
		mu.Lock()
		outcomes[kind][status.Code(err)]++
		mu.Unlock()
	}
	start := time.Now()
	lctx, lcancel := context.WithTimeout(ctx, runFor)
	defer lcancel()
	var wg sync.WaitGroup
	// Open loop at twice the measured rates; at most 2,048 calls in flight per kind
	// (more than the server's caps admit from 4 connections: 4 x 256). The
	// generator wakes every millisecond and sends every call that is due by then (a
	// ticker at the call interval cannot fire 10,000 times a second: it drops ticks,
	// which offered less than half the intended rate). A call that finds 2,048 already
	// in flight is not sent (counted as saturated).
	offered := map[string]*atomic.Int64{"ReportAlert": {}, "EvaluateAccess": {}}
	saturated := map[string]*atomic.Int64{"ReportAlert": {}, "EvaluateAccess": {}}
	offer := func(kind string, rate float64, call func(ctx context.Context, i int) error) {
		sem := make(chan struct{}, 2048)
		tk := time.NewTicker(time.Millisecond)
		defer tk.Stop()
		begin := time.Now()
		i := 0
		for {
			select {
			case <-lctx.Done():
				return
			case <-tk.C:
			}
			due := int(time.Since(begin).Seconds() * rate)
			for ; i < due && lctx.Err() == nil; i++ {
				offered[kind].Add(1)
				select {
				case sem <- struct{}{}:
				default:
					saturated[kind].Add(1)
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
	}
	wg.Go(func() {
		offer("ReportAlert", 2*alertCap, func(ctx context.Context, i int) error {
			id, err := report(ctx, i)
			if err == nil {
				ack(id)
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
				for range attempts {
					st, err := watcher.WatchRiskEvents(lctx, &riskv1.WatchRiskEventsRequest{StartRevision: 0})
					if err == nil {
						_, err = st.Recv() // the first message (a replayed event) or the refusal
					}
					count("Watch", err)
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
	<-lctx.Done()
	end := time.Now()
	wg.Wait()

	secs := end.Sub(start).Seconds()
	res := loadResult{AlertCap: alertCap, EvalCap: evalCap, Start: start.UnixNano(), End: end.UnixNano(), Codes: map[string]string{},
		AlertOffered: float64(offered["ReportAlert"].Load()) / secs, EvalOffered: float64(offered["EvaluateAccess"].Load()) / secs,
		AlertSent: float64(offered["ReportAlert"].Load()-saturated["ReportAlert"].Load()) / secs,
		EvalSent:  float64(offered["EvaluateAccess"].Load()-saturated["EvaluateAccess"].Load()) / secs}
	for kind, m := range outcomes {
		res.Codes[kind] = fmtCodes(m)
	}
	writeJSON(t, filepath.Join(dir, "load.json"), res)
	if err := os.WriteFile(filepath.Join(dir, "acked.txt"), []byte(strings.Join(acked, "\n")), 0o644); err != nil {
		t.Fatal(err)
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
