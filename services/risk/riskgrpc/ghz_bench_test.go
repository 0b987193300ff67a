package riskgrpc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/server/servertest"
)

// ghzResult is the part of ghz's JSON report the benchmark reads.
type ghzResult struct {
	Count                  int64            `json:"count"`
	Total                  time.Duration    `json:"total"` // ns
	RPS                    float64          `json:"rps"`
	StatusCodeDistribution map[string]int64 `json:"statusCodeDistribution"`
	ErrorDistribution      map[string]int64 `json:"errorDistribution"`
	LatencyDistribution    []struct {
		Percentage int           `json:"percentage"`
		Latency    time.Duration `json:"latency"`
	} `json:"latencyDistribution"`
}

func (r *ghzResult) latency(pct int) time.Duration {
	for _, l := range r.LatencyDistribution {
		if l.Percentage == pct {
			return l.Latency
		}
	}
	return 0
}

var ghzRun atomic.Int64

// execGHZ runs the ghz binary on method at inFlight concurrency over one connection
// against addr (plaintext; descriptors through server reflection), with limit its -n
// or -z flags, and returns its report and the CPU this process (the server) used
// meanwhile (ghz runs in its own process, on the same two cores). Any non-OK call
// fails the benchmark.
func execGHZ(b *testing.B, ghz, addr, method, data string, concurrency int, limit ...string) (ghzResult, time.Duration) {
	b.Helper()
	args := append([]string{"--insecure", "--call", method, "-d", data, "-c", fmt.Sprint(concurrency),
		"--connections", "1", "-O", "json"}, limit...)
	cmd := exec.Command(ghz, append(args, addr)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	t0 := cpuTime(b)
	err := cmd.Run()
	cpu := cpuTime(b) - t0
	if err != nil {
		b.Fatalf("ghz: %v\n%s%s", err, errb.String(), out.String())
	}
	var r ghzResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		b.Fatalf("ghz output: %v\n%s", err, out.String())
	}
	if ok := r.StatusCodeDistribution["OK"]; ok != r.Count || r.Count == 0 || len(r.ErrorDistribution) > 0 {
		b.Fatalf("ghz: %d of %d calls OK; status codes %v; errors %v", ok, r.Count, r.StatusCodeDistribution, r.ErrorDistribution)
	}
	return r, cpu
}

// runGHZ runs ghz for b.N calls (the timed part) and reports its rate, latencies and
// the server's CPU per call.
func runGHZ(b *testing.B, ghz, addr, method, data string) ghzResult {
	b.Helper()
	b.ResetTimer()
	r, cpu := execGHZ(b, ghz, addr, method, data, min(inFlight, b.N), "-n", fmt.Sprint(b.N))
	b.StopTimer()
	if r.Count != int64(b.N) {
		b.Fatalf("ghz made %d calls, want %d", r.Count, b.N)
	}
	b.ReportMetric(r.RPS, "calls/s")
	b.ReportMetric(float64(r.latency(50).Microseconds()), "p50-µs")
	b.ReportMetric(float64(r.latency(99).Microseconds()), "p99-µs")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "server-cpu-µs/call")
	return r
}

// ghzAlertData is ReportAlert's call data: as newAlert (a file and a process, severity
// LOW..HIGH), a unique alert id per call (prefix, then ghz's request number), one of
// benchDevices devices.
func ghzAlertData(prefix string) string {
	return `{"alert":{"alert_id":"` + prefix + `{{.RequestNumber}}","device_id":"dev-{{randomInt 0 ` + fmt.Sprint(benchDevices) + `}}",` +
		`"severity":"{{$s := randomInt 2 5}}{{if eq $s 2}}SEVERITY_LOW{{else if eq $s 3}}SEVERITY_MEDIUM{{else}}SEVERITY_HIGH{{end}}",` +
		`"title":"Malicious file opened ` + prefix + `{{.RequestNumber}}",` +
		`"evidence":[{"file":{"path":"C:\\Users\\ada\\invoice.exe","sha256":"` + strings.Repeat("ab", 32) + `"}},` +
		`{"process":{"pid":4242,"name":"invoice.exe","command_line":"invoice.exe /s"}}]}}`
}

func ghzPrefix() string { return fmt.Sprintf("ghz-%d-%d-", time.Now().UnixNano(), ghzRun.Add(1)) }

var (
	ghzEcho        = strings.TrimPrefix(servertest.MethodEcho, "/")
	ghzReportAlert = strings.TrimPrefix(riskv1.RiskService_ReportAlert_FullMethodName, "/")
)

// BenchmarkGHZ is the measurement with its load generator: the ghz binary
// (v0.93.0; skipped when ghz is not on PATH) at 50 calls in flight over one
// connection against the real server on 127.0.0.1 TCP, first on servertest's empty
// Echo (the same interceptor chain as ReportAlert: the ceiling), then on durable
// ReportAlert with a unique alert id per call (ghz's {{.RequestNumber}} after a
// per-run prefix) spread over benchDevices devices; ReportAlert reports its rate as a
// percentage of the ceiling measured in the same run (%chain). ghz sees both services
// through server reflection. Use a fixed count, e.g. -benchtime 30000x: each b.N
// starts ghz once, and ghz's own rate excludes its start-up.
func BenchmarkGHZ(b *testing.B) {
	ghz, err := exec.LookPath("ghz")
	if err != nil {
		b.Skip("ghz not on PATH (go install github.com/bojand/ghz/cmd/ghz@v0.93.0)")
	}
	h := tcpHarness(b)
	var chain float64

	b.Run("ceiling=servertest.Echo", func(b *testing.B) {
		r := runGHZ(b, ghz, h.Addr, ghzEcho, `{"device_id":"dev-1"}`)
		chain = r.RPS
	})

	b.Run("ReportAlert", func(b *testing.B) {
		data := ghzAlertData(ghzPrefix())
		rev0 := h.Store.Revision()
		r := runGHZ(b, ghz, h.Addr, ghzReportAlert, data)
		// Every call created its alert: each new alert appends at least one event
		// (a repeated id would append none).
		if events := h.Store.Revision() - rev0; events < int64(b.N) {
			b.Fatalf("%d calls appended %d events: some alert ids were not new", b.N, events)
		}
		// The severity template varies (a template ghz could not evaluate would have
		// failed the calls; this checks it did not collapse to one severity).
		if b.N >= 100 {
			res, err := h.Client.ListAlerts(context.Background(), &riskv1.ListAlertsRequest{PageSize: 100})
			if err != nil {
				b.Fatal(err)
			}
			sevs := map[commonv1.Severity]bool{}
			for _, a := range res.GetAlerts() {
				sevs[a.GetSeverity()] = true
			}
			if len(sevs) < 2 {
				b.Fatalf("the newest alerts all have severities %v", sevs)
			}
		}
		if chain > 0 {
			b.ReportMetric(100*r.RPS/chain, "%chain")
		}
	})
}

// BenchmarkGHZInterleaved is BenchmarkGHZ with the two methods alternating: each round
// (one per b.N) runs ghz for 1s on Echo then 1s on ReportAlert (in-flight calls at the
// end are waited for and counted), so that load from other work weighs on both alike;
// it reports the summed rates, their ratio and the server's CPU per call. Run with a
// fixed number of rounds, e.g. -benchtime 5x.
func BenchmarkGHZInterleaved(b *testing.B) {
	ghz, err := exec.LookPath("ghz")
	if err != nil {
		b.Skip("ghz not on PATH (go install github.com/bojand/ghz/cmd/ghz@v0.93.0)")
	}
	h := tcpHarness(b)
	var calls [2]int64
	var total, cpu [2]time.Duration
	b.ResetTimer()
	for range b.N {
		for i, m := range []struct{ method, data string }{
			{ghzEcho, `{"device_id":"dev-1"}`},
			{ghzReportAlert, ghzAlertData(ghzPrefix())},
		} {
			rev0 := h.Store.Revision()
			r, c := execGHZ(b, ghz, h.Addr, m.method, m.data, inFlight, "-z", "1s", "--duration-stop", "wait")
			if i == 1 && h.Store.Revision()-rev0 < r.Count {
				b.Fatalf("%d calls appended %d events: some alert ids were not new", r.Count, h.Store.Revision()-rev0)
			}
			calls[i] += r.Count
			total[i] += r.Total
			cpu[i] += c
		}
	}
	b.StopTimer()
	rate := func(i int) float64 { return float64(calls[i]) / total[i].Seconds() }
	b.ReportMetric(rate(0), "echo-calls/s")
	b.ReportMetric(rate(1), "alerts/s")
	b.ReportMetric(100*rate(1)/rate(0), "%chain")
	b.ReportMetric(float64(cpu[0].Microseconds())/float64(calls[0]), "echo-server-cpu-µs/call")
	b.ReportMetric(float64(cpu[1].Microseconds())/float64(calls[1]), "alert-server-cpu-µs/alert")
}
