package policyengine

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

const deviceShards = 1024 // power of two

// DeviceIndex is the device compliance index: written by the compliance feed, read by every
// decision. Get never waits for a writer: it only does atomic loads. Updating a known device
// is one atomic pointer store; adding or deleting a device copies one shard's map (about
// n/1024 entries), so bulk loads should use PutMany or Replace.
type DeviceIndex struct {
	seed   maphash.Seed
	count  atomic.Int64
	shards [deviceShards]deviceShard
}

type deviceShard struct {
	mu sync.Mutex // writers only
	m  atomic.Pointer[map[string]*deviceEntry]
	_  [40]byte // keep shards on separate cache lines
}

type deviceEntry struct {
	p atomic.Pointer[DeviceState]
}

// DeviceEntry is one device for PutMany and Replace.
type DeviceEntry struct {
	ID    string
	State DeviceState
}

// NewDeviceIndex returns an empty index.
func NewDeviceIndex() *DeviceIndex {
	x := &DeviceIndex{seed: maphash.MakeSeed()}
	for i := range x.shards {
		m := map[string]*deviceEntry{}
		x.shards[i].m.Store(&m)
	}
	return x
}

func (x *DeviceIndex) shard(id string) *deviceShard {
	return &x.shards[maphash.String(x.seed, id)&(deviceShards-1)]
}

// Get returns the device's state (shared and immutable: do not modify), or nil, false.
func (x *DeviceIndex) Get(id string) (*DeviceState, bool) {
	m := *x.shard(id).m.Load()
	e, ok := m[id]
	if !ok {
		return nil, false
	}
	st := e.p.Load()
	return st, st != nil
}

// Len is the number of devices.
func (x *DeviceIndex) Len() int { return int(x.count.Load()) }

// Put sets a device's state (taking ownership of st.AlertIDs).
func (x *DeviceIndex) Put(id string, st DeviceState) {
	sh := x.shard(id)
	p := &st
	sh.mu.Lock()
	defer sh.mu.Unlock()
	m := *sh.m.Load()
	if e, ok := m[id]; ok {
		e.p.Store(p)
		return
	}
	n := make(map[string]*deviceEntry, len(m)+1)
	for k, v := range m {
		n[k] = v
	}
	e := &deviceEntry{}
	e.p.Store(p)
	n[id] = e
	sh.m.Store(&n)
	x.count.Add(1)
}

// Delete removes a device; it reports whether the device was there.
func (x *DeviceIndex) Delete(id string) bool {
	sh := x.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	m := *sh.m.Load()
	if _, ok := m[id]; !ok {
		return false
	}
	n := make(map[string]*deviceEntry, len(m))
	for k, v := range m {
		if k != id {
			n[k] = v
		}
	}
	sh.m.Store(&n)
	x.count.Add(-1)
	return true
}

// PutMany sets many devices' states, copying each touched shard at most once.
func (x *DeviceIndex) PutMany(items []DeviceEntry) {
	x.putMany(items, false)
}

// Replace makes the index hold exactly items (for a resync after a list): devices not in
// items are removed. Readers see each shard switch atomically.
func (x *DeviceIndex) Replace(items []DeviceEntry) {
	x.putMany(items, true)
}

func (x *DeviceIndex) putMany(items []DeviceEntry, replace bool) {
	byShard := make([][]int32, deviceShards)
	for i := range items {
		h := maphash.String(x.seed, items[i].ID) & (deviceShards - 1)
		byShard[h] = append(byShard[h], int32(i))
	}
	for si := range x.shards {
		idxs := byShard[si]
		if len(idxs) == 0 && !replace {
			continue
		}
		sh := &x.shards[si]
		sh.mu.Lock()
		old := *sh.m.Load()
		var n map[string]*deviceEntry
		if replace {
			n = make(map[string]*deviceEntry, len(idxs))
		} else {
			n = make(map[string]*deviceEntry, len(old)+len(idxs))
			for k, v := range old {
				n[k] = v
			}
		}
		for _, i := range idxs {
			it := &items[i]
			st := it.State
			if e, ok := old[it.ID]; ok {
				// Keep the entry: a reader holding it sees the new state too.
				e.p.Store(&st)
				n[it.ID] = e
				continue
			}
			if e, ok := n[it.ID]; ok { // duplicate id within items: last wins
				e.p.Store(&st)
				continue
			}
			e := &deviceEntry{}
			e.p.Store(&st)
			n[it.ID] = e
		}
		x.count.Add(int64(len(n) - len(old)))
		sh.m.Store(&n)
		sh.mu.Unlock()
	}
}

// Range calls fn for every device until fn returns false (a consistent view per shard,
// not across shards).
func (x *DeviceIndex) Range(fn func(id string, st *DeviceState) bool) {
	for si := range x.shards {
		m := *x.shards[si].m.Load()
		for id, e := range m {
			if st := e.p.Load(); st != nil && !fn(id, st) {
				return
			}
		}
	}
}
