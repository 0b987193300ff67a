package policyengine_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	pe "github.com/condaccess/condaccess/services/access/policyengine"
	"github.com/condaccess/condaccess/services/access/policyengine/w1gen"
)

func TestDeviceIndex(t *testing.T) {
	x := pe.NewDeviceIndex()
	if _, ok := x.Get("d1"); ok {
		t.Fatal("empty index has d1")
	}
	long := strings.Repeat("x", 100) // longer than the inline key
	x.Put("d1", pe.DeviceState{State: pe.ComplianceCompliant, Revision: 1})
	x.Put(long, pe.DeviceState{State: pe.ComplianceNoncompliant, Revision: 2})
	x.Put("d1", pe.DeviceState{State: pe.ComplianceNoncompliant, Revision: 3})
	if st, ok := x.Get("d1"); !ok || st.Revision != 3 || st.State != pe.ComplianceNoncompliant {
		t.Errorf("Get(d1) = %+v, %v", st, ok)
	}
	if st, ok := x.Get(long); !ok || st.Revision != 2 {
		t.Errorf("Get(long) = %+v, %v", st, ok)
	}
	if _, ok := x.Get(long[:99]); ok {
		t.Error("Get of a prefix of a long id found it")
	}
	if _, ok := x.Get("d"); ok {
		t.Error("Get of a prefix found it")
	}
	if x.Len() != 2 {
		t.Errorf("Len = %d", x.Len())
	}
	if !x.Delete("d1") || x.Delete("d1") {
		t.Error("Delete(d1) twice")
	}
	if _, ok := x.Get("d1"); ok || x.Len() != 1 {
		t.Errorf("after Delete: found d1 or Len %d", x.Len())
	}

	// Many devices through Put, PutMany and Replace.
	var items []pe.DeviceEntry
	for i := range 5000 {
		items = append(items, pe.DeviceEntry{ID: fmt.Sprintf("dev-%d", i), State: pe.DeviceState{Revision: int64(i)}})
	}
	for _, it := range items[:100] {
		x.Put(it.ID, it.State)
	}
	x.PutMany(items)
	x.PutMany(items[:10]) // updates only
	if x.Len() != 5001 {
		t.Errorf("Len = %d, want 5001", x.Len())
	}
	for _, it := range items {
		if st, ok := x.Get(it.ID); !ok || st.Revision != it.State.Revision {
			t.Fatalf("Get(%s) = %+v, %v", it.ID, st, ok)
		}
	}
	x.Replace(items[:3000])
	if x.Len() != 3000 {
		t.Errorf("after Replace Len = %d", x.Len())
	}
	if _, ok := x.Get(long); ok {
		t.Error("Replace kept a device not in the list")
	}
	if _, ok := x.Get("dev-3000"); ok {
		t.Error("Replace kept dev-3000")
	}
	n := 0
	x.Range(func(id string, st *pe.DeviceState) bool {
		if !strings.HasPrefix(id, "dev-") {
			t.Errorf("Range id %q", id)
		}
		n++
		return true
	})
	if n != 3000 {
		t.Errorf("Range visited %d", n)
	}
}

// TestDeviceIndexConcurrent runs readers against writers (run with -race): a reader always
// sees a complete state that some writer stored, and known devices never disappear.
func TestDeviceIndexConcurrent(t *testing.T) {
	x := pe.NewDeviceIndex()
	const n = 2000
	for i := range n {
		x.Put(fmt.Sprintf("d%d", i), pe.DeviceState{Revision: int64(i), Reason: fmt.Sprint(i)})
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				k := (i*31 + w) % n
				x.Put(fmt.Sprintf("d%d", k), pe.DeviceState{Revision: int64(k), Reason: fmt.Sprint(k)})
				x.Put(fmt.Sprintf("new-%d-%d", w, i), pe.DeviceState{}) // grows tables
				if i%3 == 0 {
					x.Delete(fmt.Sprintf("new-%d-%d", w, i))
				}
			}
		}()
	}
	for i := range 200_000 {
		k := i % n
		st, ok := x.Get(fmt.Sprintf("d%d", k))
		if !ok {
			stop.Store(true)
			t.Fatalf("d%d disappeared", k)
		}
		if st.Revision != int64(k) || st.Reason != fmt.Sprint(k) {
			stop.Store(true)
			t.Fatalf("torn state for d%d: %+v", k, st)
		}
	}
	stop.Store(true)
	wg.Wait()
}

// TestEvaluateAllocations: a decision (device lookup + evaluation) allocates nothing once
// the Result has grown.
func TestEvaluateAllocations(t *testing.T) {
	w := w1gen.Generate(w1gen.Seed, w1gen.Small)
	snap, err := pe.Compile(w.Directory, w.Policies)
	if err != nil {
		t.Fatal(err)
	}
	devs := pe.NewDeviceIndex()
	devs.PutMany(w.Devices)
	var res pe.Result
	for i := range w.Requests {
		dev, _ := devs.Get(w.Requests[i].DeviceID)
		snap.Evaluate(&w.Requests[i], dev, pe.Feed{}, &res)
	}
	i := 0
	allocs := testing.AllocsPerRun(5000, func() {
		req := &w.Requests[i%len(w.Requests)]
		i++
		dev, _ := devs.Get(req.DeviceID)
		snap.Evaluate(req, dev, pe.Feed{Stale: i%10 == 0}, &res)
	})
	if allocs != 0 {
		t.Errorf("allocations per decision = %v, want 0", allocs)
	}
	allocs = testing.AllocsPerRun(5000, func() {
		req := &w.Requests[i%len(w.Requests)]
		i++
		snap.EvaluateIn(req, devs, pe.Feed{Stale: i%10 == 0}, &res)
	})
	if allocs != 0 {
		t.Errorf("allocations per EvaluateIn = %v, want 0", allocs)
	}
}

// TestEvaluateInConsistent flips devices between a compliant and a noncompliant state
// (different revisions, platforms and alerts) while decisions run (run with -race): every
// decision must be exactly the one Evaluate gives for one of the two states, cause chain
// included, never a mix of the two.
func TestEvaluateInConsistent(t *testing.T) {
	dir := &pe.Directory{Users: []pe.User{{ID: "u"}}, Applications: []pe.Application{{ID: "app"}}}
	snap, err := pe.Compile(dir, []pe.Policy{
		{ID: "p-compliant", State: pe.StateEnabled, Users: pe.UserAssignment{All: true}, Apps: pe.AppAssignment{All: true},
			Require: []pe.Control{pe.ControlCompliantDevice}},
		{ID: "p-windows", State: pe.StateEnabled, Users: pe.UserAssignment{All: true}, Apps: pe.AppAssignment{All: true},
			Platforms: pe.PlatformCondition{Include: []pe.Platform{pe.PlatformWindows}}, Require: []pe.Control{pe.ControlMFA}},
	})
	if err != nil {
		t.Fatal(err)
	}
	states := []pe.DeviceState{
		{State: pe.ComplianceCompliant, Risk: pe.RiskNone, Platform: pe.PlatformMacOS, Revision: 10},
		{State: pe.ComplianceNoncompliant, Risk: pe.RiskHigh, Platform: pe.PlatformWindows, Revision: 11,
			AlertIDs: []string{"a-1"}, Setting: "s", Reason: "r"},
		{State: pe.ComplianceNoncompliant, Risk: pe.RiskMedium, Platform: pe.PlatformWindows, Revision: 1 << 45, // no hot word
			AlertIDs: []string{"a-2"}, Setting: "s2", Reason: "r2"},
	}
	const ndev = 8
	id := func(i int) string { // odd devices have ids longer than the slot's inline key
		if i%2 == 1 {
			return fmt.Sprintf("%s-%d", strings.Repeat("device", 10), i%ndev)
		}
		return fmt.Sprintf("d%d", i%ndev)
	}
	req := func(i int) *pe.Request { return &pe.Request{UserID: "u", DeviceID: id(i), AppID: "app"} }
	want := make([]string, len(states))
	for k := range states {
		var res pe.Result
		snap.Evaluate(req(0), &states[k], pe.Feed{}, &res)
		want[k] = fmt.Sprintf("%+v", res)
	}
	devs := pe.NewDeviceIndex()
	for i := range ndev {
		devs.Put(id(i), states[0])
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			devs.Put(id(i), states[i%len(states)])
		}
	}()
	defer func() { stop.Store(true); wg.Wait() }()
	seen := map[int]int{}
	var res pe.Result
	for i := range 100_000 {
		snap.EvaluateIn(req(i), devs, pe.Feed{}, &res)
		got := fmt.Sprintf("%+v", res)
		k := slices.Index(want, got)
		if k < 0 {
			t.Fatalf("decision %d matches no single device state:\n%s\nwant one of:\n%s", i, got, strings.Join(want, "\n"))
		}
		seen[k]++
	}
	if len(seen) != len(states) {
		t.Fatalf("states seen %v: the test did not exercise every state", seen)
	}
}
