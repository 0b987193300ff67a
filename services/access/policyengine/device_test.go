package policyengine_test

import (
	"fmt"
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
}
