package policyengine

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

const (
	deviceShardBits = 10
	deviceShards    = 1 << deviceShardBits
	inlineKey       = 36 // a GUID
)

// DeviceIndex is the device compliance index: written by the compliance feed, read by every
// decision. Get never waits for a writer: it does atomic loads only. Updating a known device
// is one atomic pointer store; adding or deleting a device copies one shard's table (about
// n/1024 slots), so bulk loads should use PutMany or Replace.
//
// Each shard is an open-addressing hash table (copy-on-write when a device is added or
// removed) whose slots hold the key's hash and an atomic pointer to a node that carries the
// device id inline next to its state, so a lookup costs about two cache misses.
type DeviceIndex struct {
	seed   maphash.Seed
	count  atomic.Int64
	shards [deviceShards]deviceShard
}

type deviceShard struct {
	mu  sync.Mutex // writers only
	tab atomic.Pointer[devTable]
	_   [48]byte // keep shards on separate cache lines
}

type devTable struct {
	slots []devSlot // power of two
	n     int
}

type devSlot struct {
	hash uint64 // 0 = empty; keys hash to an odd value
	node atomic.Pointer[devNode]
}

// devNode is one device: the id inline (when short), then the state, on the same cache line.
type devNode struct {
	klen uint8 // 0xff: the id is longer than inlineKey; compare id
	key  [inlineKey]byte
	st   DeviceState
	id   string
}

func newDevNode(id string, st *DeviceState) *devNode {
	n := &devNode{st: *st, id: id}
	if len(id) <= inlineKey {
		n.klen = uint8(len(id))
		copy(n.key[:], id)
	} else {
		n.klen = 0xff
	}
	return n
}

func (n *devNode) is(id string) bool {
	if n.klen != 0xff {
		return int(n.klen) == len(id) && string(n.key[:n.klen]) == id
	}
	return n.id == id
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
		x.shards[i].tab.Store(&devTable{slots: make([]devSlot, 8)})
	}
	return x
}

func (x *DeviceIndex) hash(id string) uint64 { return maphash.String(x.seed, id) | 1 }

func shardOf(h uint64) int { return int(h >> (64 - deviceShardBits)) }

// find returns the slot holding id in t, or nil.
func (t *devTable) find(h uint64, id string) *devSlot {
	mask := uint64(len(t.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		sl := &t.slots[i]
		if sl.hash == 0 {
			return nil
		}
		if sl.hash == h {
			if n := sl.node.Load(); n != nil && n.is(id) {
				return sl
			}
		}
	}
}

// insert puts a node in a table being built (not yet published); the table must have room.
func (t *devTable) insert(h uint64, n *devNode) {
	mask := uint64(len(t.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		sl := &t.slots[i]
		if sl.hash == 0 {
			sl.hash = h
			sl.node.Store(n)
			t.n++
			return
		}
	}
}

// rebuilt returns a copy of t with room for extra more entries, leaving out skip.
func (t *devTable) rebuilt(extra int, skip *devSlot) *devTable {
	size := 8
	for size < 2*(t.n+extra) {
		size *= 2
	}
	nt := &devTable{slots: make([]devSlot, size)}
	for i := range t.slots {
		sl := &t.slots[i]
		if sl.hash == 0 || sl == skip {
			continue
		}
		nt.insert(sl.hash, sl.node.Load())
	}
	return nt
}

// Get returns the device's state (shared and immutable: do not modify), or nil, false.
func (x *DeviceIndex) Get(id string) (*DeviceState, bool) {
	h := x.hash(id)
	sl := x.shards[shardOf(h)].tab.Load().find(h, id)
	if sl == nil {
		return nil, false
	}
	return &sl.node.Load().st, true
}

// Len is the number of devices.
func (x *DeviceIndex) Len() int { return int(x.count.Load()) }

// Put sets a device's state (taking ownership of st.AlertIDs).
func (x *DeviceIndex) Put(id string, st DeviceState) {
	h := x.hash(id)
	n := newDevNode(id, &st)
	sh := &x.shards[shardOf(h)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t := sh.tab.Load()
	if sl := t.find(h, id); sl != nil {
		sl.node.Store(n)
		return
	}
	t = t.rebuilt(1, nil) // copy on write: readers may be probing t
	t.insert(h, n)
	sh.tab.Store(t)
	x.count.Add(1)
}

// Delete removes a device; it reports whether the device was there.
func (x *DeviceIndex) Delete(id string) bool {
	h := x.hash(id)
	sh := &x.shards[shardOf(h)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t := sh.tab.Load()
	sl := t.find(h, id)
	if sl == nil {
		return false
	}
	sh.tab.Store(t.rebuilt(0, sl))
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
	type pending struct {
		h uint64
		i int32
	}
	byShard := make([][]pending, deviceShards)
	for i := range items {
		h := x.hash(items[i].ID)
		s := shardOf(h)
		byShard[s] = append(byShard[s], pending{h, int32(i)})
	}
	for si := range x.shards {
		ps := byShard[si]
		if len(ps) == 0 && !replace {
			continue
		}
		sh := &x.shards[si]
		sh.mu.Lock()
		old := sh.tab.Load()
		var nt *devTable
		if replace {
			nt = (&devTable{}).rebuilt(len(ps), nil)
		} else {
			nt = old.rebuilt(len(ps), nil)
		}
		for _, p := range ps {
			it := &items[p.i]
			n := newDevNode(it.ID, &it.State)
			if sl := nt.find(p.h, it.ID); sl != nil { // known (or duplicate in items): last wins
				sl.node.Store(n)
				continue
			}
			nt.insert(p.h, n)
		}
		x.count.Add(int64(nt.n - old.n))
		sh.tab.Store(nt)
		sh.mu.Unlock()
	}
}

// Range calls fn for every device until fn returns false (a consistent view per shard,
// not across shards).
func (x *DeviceIndex) Range(fn func(id string, st *DeviceState) bool) {
	for si := range x.shards {
		t := x.shards[si].tab.Load()
		for i := range t.slots {
			if t.slots[i].hash == 0 {
				continue
			}
			n := t.slots[i].node.Load()
			if !fn(n.id, &n.st) {
				return
			}
		}
	}
}
