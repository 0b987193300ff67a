package policyengine_test

import (
	"bufio"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	pe "github.com/condaccess/condaccess/services/access/policyengine"
	"github.com/condaccess/condaccess/services/access/policyengine/w1gen"
)

// The W1 fixture is built once per test binary, and only by the W1 benchmarks, so that
// `go test` without -bench stays fast.
var w1 struct {
	once    sync.Once
	w       *w1gen.Workload
	snap    *pe.Snapshot
	devs    *pe.DeviceIndex
	genTime time.Duration
	compile time.Duration
	devLoad time.Duration
	heapMB  float64 // heap in use by the snapshot and the device index
	rssMB   float64 // process resident memory with the workload loaded
}

func loadW1(b *testing.B) {
	b.Helper()
	w1.once.Do(func() {
		t0 := time.Now()
		w1.w = w1gen.Generate(w1gen.Seed, w1gen.W1)
		w1.genTime = time.Since(t0)
		before := heapInuse()
		t0 = time.Now()
		snap, err := pe.Compile(w1.w.Directory, w1.w.Policies)
		if err != nil {
			panic(err)
		}
		w1.compile = time.Since(t0)
		t0 = time.Now()
		devs := pe.NewDeviceIndex()
		devs.PutMany(w1.w.Devices)
		w1.devLoad = time.Since(t0)
		w1.snap, w1.devs = snap, devs
		w1.heapMB = float64(heapInuse()-before) / (1 << 20)
		w1.rssMB = vmRSSMB()
	})
}

// reportLoad reports the load figures (call after the timed loop: ResetTimer drops metrics).
func reportLoad(b *testing.B) {
	b.ReportMetric(w1.compile.Seconds()*1000, "compile-ms")
	b.ReportMetric(w1.devLoad.Seconds()*1000, "devload-ms")
	b.ReportMetric(w1.heapMB, "engine-heap-MB")
	b.ReportMetric(w1.rssMB, "rss-MB")
}

// threadCPU is the CPU time used by the calling OS thread.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

func vmRSSMB() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// modes are the two ways a decision is asked for: with every targeted policy's result
// (EvaluateAccess, sign-in log), and with the applied policies only (enforcement points).
// A decision is Snapshot.EvaluateIn (device lookup + evaluation, as accesscore.Decide);
// "full-get-evaluate" is the same decision as DeviceIndex.Get then Snapshot.Evaluate
// (the device's whole state read before evaluating), for comparison.
var modes = []struct {
	name        string
	onlyApplied bool
	split       bool
}{{"full", false, false}, {"only-applied", true, false}, {"full-get-evaluate", false, true}}

// decide is one W1 decision in mode split or not.
func decide(split bool, req *pe.Request, res *pe.Result) {
	if split {
		dev, _ := w1.devs.Get(req.DeviceID)
		w1.snap.Evaluate(req, dev, pe.Feed{}, res)
		return
	}
	w1.snap.EvaluateIn(req, w1.devs, pe.Feed{}, res)
}

// w1Requests returns the W1 requests in a mode.
func w1Requests(onlyApplied bool) []pe.Request {
	reqs := w1.w.Requests
	if onlyApplied {
		reqs = slices.Clone(reqs)
		for i := range reqs {
			reqs[i].OnlyApplied = true
		}
	}
	return reqs
}

// BenchmarkEvaluateW1 is one W1 decision: device lookup in the 1,000,000-device index and
// evaluation against 10,000 policies, for a uniformly random user, device and application.
// Run with -cpu 1 for the single-core figure.
func BenchmarkEvaluateW1(b *testing.B) {
	loadW1(b)
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			reqs := w1Requests(m.onlyApplied)
			mask := len(reqs) - 1 // a power of two
			var res pe.Result
			var blocked, policies int
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := threadCPU()
			for i := 0; i < b.N; i++ {
				req := &reqs[i&mask]
				decide(m.split, req, &res)
				if res.Decision == pe.DecisionBlock {
					blocked++
				}
				policies += len(res.Policies)
			}
			cpu := threadCPU() - cpu0
			b.StopTimer()
			// On a shared machine the wall-clock ns/op includes time this thread waited for a
			// CPU; cpu-ns/op is the CPU time the decisions used.
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
			reportLoad(b)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
			b.ReportMetric(100*float64(blocked)/float64(b.N), "%blocked")
			b.ReportMetric(float64(policies)/float64(b.N), "policies/decision")
		})
	}
}

// BenchmarkEvaluateW1Hot cycles through only 1,024 W1 requests, so their users, devices and
// policies stay in the CPU caches: the compute cost of a decision without memory misses
// (BenchmarkEvaluateW1 is the memory-bound figure).
func BenchmarkEvaluateW1Hot(b *testing.B) {
	loadW1(b)
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			reqs := w1Requests(m.onlyApplied)[:1024]
			var res pe.Result
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := threadCPU()
			for i := 0; i < b.N; i++ {
				req := &reqs[i&1023]
				decide(m.split, req, &res)
			}
			b.ReportMetric(float64((threadCPU()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkEvaluateW1Latency times every decision on its own (monotonic clock) and reports
// the p50 / p99 / p99.9 latency. Run with e.g. -benchtime 1000000x -cpu 1.
func BenchmarkEvaluateW1Latency(b *testing.B) {
	loadW1(b)
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			reqs := w1Requests(m.onlyApplied)
			mask := len(reqs) - 1
			lat := make([]time.Duration, b.N)
			var res pe.Result
			// Warm res up so that its slices have grown (as a pooled Result in the service).
			for i := range 10000 {
				decide(m.split, &reqs[i&mask], &res)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				req := &reqs[i&mask]
				t0 := time.Now()
				decide(m.split, req, &res)
				lat[i] = time.Since(t0)
			}
			b.StopTimer()
			slices.Sort(lat)
			q := func(p float64) float64 { return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Nanoseconds()) }
			b.ReportMetric(q(0.50), "p50-ns")
			b.ReportMetric(q(0.99), "p99-ns")
			b.ReportMetric(q(0.999), "p99.9-ns")
			b.ReportMetric(float64(lat[len(lat)-1].Nanoseconds()), "max-ns")
		})
	}
}

// BenchmarkEvaluateW1WithFeed is BenchmarkEvaluateW1 while the compliance feed rewrites
// device states concurrently (one writer goroutine rewriting devices at full speed): the
// decision must not wait for it. Run with -cpu 2 (with -cpu 1 the writer takes half of the
// one CPU). The allocations reported are the writer's (each Put allocates its node).
func BenchmarkEvaluateW1WithFeed(b *testing.B) {
	loadW1(b)
	reqs := w1.w.Requests
	mask := len(reqs) - 1
	var stop atomic.Bool
	var writes atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		devs := w1.w.Devices
		for i := 0; !stop.Load(); i++ {
			e := &devs[(i*7919)%len(devs)]
			st := e.State
			st.Revision++
			w1.devs.Put(e.ID, st)
			writes.Add(1)
		}
	}()
	var res pe.Result
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req := &reqs[i&mask]
		w1.snap.EvaluateIn(req, w1.devs, pe.Feed{}, &res)
	}
	b.StopTimer()
	stop.Store(true)
	<-done
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
	b.ReportMetric(float64(writes.Load())/b.Elapsed().Seconds(), "feed-writes/s")
}

// BenchmarkEvaluateW1Parallel is W1 decisions on every CPU (-cpu N), one Result per
// goroutine, as the service runs them.
func BenchmarkEvaluateW1Parallel(b *testing.B) {
	loadW1(b)
	reqs := w1.w.Requests
	mask := len(reqs) - 1
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var res pe.Result
		i := int(next.Add(1)) * 7919
		for pb.Next() {
			req := &reqs[i&mask]
			i++
			w1.snap.EvaluateIn(req, w1.devs, pe.Feed{}, &res)
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}

// BenchmarkCompileW1 compiles the W1 directory and policies (what a directory change costs),
// and BenchmarkWithPoliciesW1 recompiles only the policies (what a policy change costs).
func BenchmarkCompileW1(b *testing.B) {
	loadW1(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := pe.Compile(w1.w.Directory, w1.w.Policies); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWithPoliciesW1(b *testing.B) {
	loadW1(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := w1.snap.WithPolicies(w1.w.Policies); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDeviceLoadW1 loads 1,000,000 devices into an empty index (a resync).
func BenchmarkDeviceLoadW1(b *testing.B) {
	loadW1(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		x := pe.NewDeviceIndex()
		x.PutMany(w1.w.Devices)
	}
}

// BenchmarkDeviceLookupW1 compares the device index with sync.Map for a lookup among
// 1,000,000 devices.
func BenchmarkDeviceLookupW1(b *testing.B) {
	loadW1(b)
	reqs := w1.w.Requests
	mask := len(reqs) - 1
	b.Run("DeviceIndex", func(b *testing.B) {
		b.ReportAllocs()
		var n int
		for i := 0; i < b.N; i++ {
			if _, ok := w1.devs.Get(reqs[i&mask].DeviceID); ok {
				n++
			}
		}
	})
	b.Run("sync.Map", func(b *testing.B) {
		var m sync.Map
		for i := range w1.w.Devices {
			e := &w1.w.Devices[i]
			st := e.State
			m.Store(e.ID, &st)
		}
		b.ReportAllocs()
		b.ResetTimer()
		var n int
		for i := 0; i < b.N; i++ {
			if _, ok := m.Load(reqs[i&mask].DeviceID); ok {
				n++
			}
		}
	})
}
