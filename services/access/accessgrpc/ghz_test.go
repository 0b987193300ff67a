package accessgrpc_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/emptypb"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
)

// BenchmarkGhz measures EvaluateAccess with the load generator, ghz (the
// binary on PATH; skipped without it), against the benchmark's empty method
// (EmptyTraced: the same server chain) and the fixed-response ShapeTraced method, on
// one server over 127.0.0.1 TCP, at 50 requests in flight (req/s) and at one in flight
// (p50). ghz runs as a separate process and shares the machine's cores with the
// server. The methods alternate (empty, shape, evaluate, twice) so that a change in
// the machine's load hits them alike; the figures are the sums over both rounds.
//
//	go test -run xxx -bench Ghz -benchtime 1x ./services/access/accessgrpc/
//
// Environment: CONDACCESS_GHZ_N50 / CONDACCESS_GHZ_N1 set the requests per run
// (default 30000 at 50 in flight, 6000 at one).
func BenchmarkGhz(b *testing.B) {
	ghz, err := exec.LookPath("ghz")
	if err != nil {
		b.Skip("ghz is not on PATH (go install github.com/bojand/ghz/cmd/ghz@latest)")
	}
	s := startTCP(b)
	protoset := writeProtoset(b)
	methods := []struct {
		name, call string
		data       string
	}{
		{"EmptyTraced", "condaccess.bench.v1.Empty/Call", `{}`},
		{"ShapeTraced", "condaccess.bench.v1.Shape/Call", `{"user_id":"u-1","device_id":"dev-1","application_id":"payroll"}`},
		{"EvaluateAccess", "condaccess.access.v1.AccessService/EvaluateAccess", `{"user_id":"u-1","device_id":"dev-1","application_id":"payroll"}`},
	}
	for _, c := range []struct {
		name        string
		concurrency int
		n           int
	}{
		{"inflight50", 50, envInt("CONDACCESS_GHZ_N50", 30000)},
		{"inflight1", 1, envInt("CONDACCESS_GHZ_N1", 6000)},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				sum := make([]ghzResult, len(methods))
				for range 2 {
					for i, m := range methods {
						r := runGhz(b, ghz, s.addr, protoset, m.call, m.data, c.concurrency, c.n)
						sum[i].Count += r.Count
						sum[i].Total += r.Total
						sum[i].p50 += r.p50 / 2
						sum[i].p99 += r.p99 / 2
					}
				}
				for i, m := range methods {
					b.ReportMetric(float64(sum[i].Count)/(float64(sum[i].Total)/1e9), m.name+"-req/s")
					b.ReportMetric(sum[i].p50/1e3, m.name+"-p50-µs")
				}
				empty, eval := &sum[0], &sum[2]
				rate := func(r *ghzResult) float64 { return float64(r.Count) / float64(r.Total) }
				b.ReportMetric(rate(eval)/rate(empty), "eval/empty-req/s")
				b.ReportMetric(100*(eval.p50/empty.p50-1), "eval-p50-%over-empty")
				b.Logf("%s: EmptyTraced %.0f req/s p50 %.0f µs p99 %.0f µs; ShapeTraced %.0f req/s p50 %.0f µs; EvaluateAccess %.0f req/s p50 %.0f µs p99 %.0f µs: %.2f of the empty method's req/s, p50 %+.1f%%",
					c.name, 1e9*rate(empty), empty.p50/1e3, empty.p99/1e3, 1e9*rate(&sum[1]), sum[1].p50/1e3,
					1e9*rate(eval), eval.p50/1e3, eval.p99/1e3, rate(eval)/rate(empty), 100*(eval.p50/empty.p50-1))
			}
		})
	}
}

// ghzResult is the part of ghz's JSON report the benchmark reads (times in ns).
type ghzResult struct {
	Count   int64   `json:"count"`
	Total   int64   `json:"total"`
	Rps     float64 `json:"rps"`
	Latency []struct {
		Percentage int   `json:"percentage"`
		Latency    int64 `json:"latency"`
	} `json:"latencyDistribution"`
	Status map[string]int64 `json:"statusCodeDistribution"`
	p50    float64
	p99    float64
}

func runGhz(b *testing.B, ghz, addr, protoset, call, data string, concurrency, n int) ghzResult {
	b.Helper()
	cmd := exec.Command(ghz, "--insecure", "--protoset", protoset, "--call", call, "-d", data,
		"-c", strconv.Itoa(concurrency), "-n", strconv.Itoa(n), "--skipFirst", strconv.Itoa(n/20), "--format", "json", addr)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		b.Fatalf("ghz %s: %v\n%s", call, err, errb.String())
	}
	var r ghzResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		b.Fatalf("ghz %s: %v\n%s", call, err, out.String())
	}
	for code, k := range r.Status {
		if code != "OK" && k > 0 {
			b.Fatalf("ghz %s: %d calls ended %s", call, k, code)
		}
	}
	for _, l := range r.Latency {
		switch l.Percentage {
		case 50:
			r.p50 = float64(l.Latency)
		case 99:
			r.p99 = float64(l.Latency)
		}
	}
	if r.Count == 0 || r.Total == 0 || r.p50 == 0 {
		b.Fatalf("ghz %s: empty report %s", call, out.String())
	}
	return r
}

// writeProtoset writes the descriptors ghz needs: the access API and its imports, and
// the benchmark-only Empty and Shape services (registered without descriptors, so not
// visible through reflection).
func writeProtoset(b *testing.B) string {
	b.Helper()
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		for i := range fd.Imports().Len() {
			add(fd.Imports().Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	add(accessv1.File_condaccess_access_v1_access_proto)
	add(emptypb.File_google_protobuf_empty_proto)
	method := func(svc, in, out string) *descriptorpb.ServiceDescriptorProto {
		return &descriptorpb.ServiceDescriptorProto{Name: proto.String(svc), Method: []*descriptorpb.MethodDescriptorProto{
			{Name: proto.String("Call"), InputType: proto.String(in), OutputType: proto.String(out)}}}
	}
	set.File = append(set.File, &descriptorpb.FileDescriptorProto{
		Name:       proto.String("condaccess/bench/v1/bench.proto"),
		Package:    proto.String("condaccess.bench.v1"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"google/protobuf/empty.proto", accessv1.File_condaccess_access_v1_access_proto.Path()},
		Service: []*descriptorpb.ServiceDescriptorProto{
			method("Empty", ".google.protobuf.Empty", ".google.protobuf.Empty"),
			method("Shape", ".condaccess.access.v1.EvaluateAccessRequest", ".condaccess.access.v1.EvaluateAccessResponse"),
		},
	})
	raw, err := proto.Marshal(set)
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "bench.protoset")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		b.Fatal(err)
	}
	return path
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
