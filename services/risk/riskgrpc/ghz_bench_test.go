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

// runGHZ runs the ghz binary for b.N calls of method at inFlight concurrency against
// addr (plaintext; descriptors through server reflection) and returns its report,
// failing the benchmark on any non-OK call. It reports the server process's CPU per
// call (ghz runs in its own process, on the same two cores).
func runGHZ(b *testing.B, ghz, addr, method, data string) ghzResult {
	b.Helper()
	c := min(inFlight, b.N)
	cmd := exec.Command(ghz, "--insecure", "--call", method, "-d", data,
		"-c", fmt.Sprint(c), "-n", fmt.Sprint(b.N), "--connections", "1", "-O", "json", addr)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	t0 := cpuTime(b)
	b.ResetTimer()
	err := cmd.Run()
	b.StopTimer()
	cpu := cpuTime(b) - t0
	if err != nil {
		b.Fatalf("ghz: %v\n%s%s", err, errb.String(), out.String())
	}
	var r ghzResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		b.Fatalf("ghz output: %v\n%s", err, out.String())
	}
	if ok := r.StatusCodeDistribution["OK"]; ok != int64(b.N) || len(r.ErrorDistribution) > 0 {
		b.Fatalf("ghz: %d of %d calls OK; status codes %v; errors %v", ok, b.N, r.StatusCodeDistribution, r.ErrorDistribution)
	}
	b.ReportMetric(r.RPS, "calls/s")
	b.ReportMetric(float64(r.latency(50).Microseconds()), "p50-µs")
	b.ReportMetric(float64(r.latency(99).Microseconds()), "p99-µs")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "server-cpu-µs/call")
	return r
}

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
		r := runGHZ(b, ghz, h.Addr, strings.TrimPrefix(servertest.MethodEcho, "/"), `{"device_id":"dev-1"}`)
		chain = r.RPS
	})

	b.Run("ReportAlert", func(b *testing.B) {
		prefix := fmt.Sprintf("ghz-%d-%d-", time.Now().UnixNano(), ghzRun.Add(1))
		// As newAlert: a file and a process, severity LOW..HIGH.
		data := `{"alert":{"alert_id":"` + prefix + `{{.RequestNumber}}","device_id":"dev-{{randomInt 0 ` + fmt.Sprint(benchDevices) + `}}",` +
			`"severity":"{{$s := randomInt 2 5}}{{if eq $s 2}}SEVERITY_LOW{{else if eq $s 3}}SEVERITY_MEDIUM{{else}}SEVERITY_HIGH{{end}}","title":"Malicious file opened ` + prefix + `{{.RequestNumber}}",` +
			`"evidence":[{"file":{"path":"C:\\Users\\ada\\invoice.exe","sha256":"` + strings.Repeat("ab", 32) + `"}},` +
			`{"process":{"pid":4242,"name":"invoice.exe","command_line":"invoice.exe /s"}}]}}`
		rev0 := h.Store.Revision()
		r := runGHZ(b, ghz, h.Addr, "condaccess.risk.v1.RiskService/ReportAlert", data)
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
