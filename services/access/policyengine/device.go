package policyengine

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

const (
	deviceShardBits = 10
	deviceShards    = 1 << deviceShardBits
	inlineKey       = 39 // a GUID (36) fits; makes a devSlot one 64-byte cache line
)

// DeviceIndex is the device compliance index: written by the compliance feed, read by every
// decision. Get and Snapshot.EvaluateIn never wait for a writer: they do atomic loads only. Updating a
// known device is two atomic stores; adding or deleting a device copies one shard's table
// (about n/1024 slots), so bulk loads should use PutMany or Replace.
//
// Each shard is an open-addressing hash table (copy-on-write when a device is added or
// removed) of 64-byte slots, one cache line each: the key's hash, the id inline (when
// short), the state's hot fields packed in one atomic word (compliance state, risk,
// platform, revision: what a decision reads) and an atomic pointer to an immutable node
// with the whole DeviceState. A decision (Snapshot.EvaluateIn) reads one cache line per
// device; the node is read only for a cause chain (and by Get).
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
	hash uint64 // 0 = empty; keys hash to an odd value. Immutable once the table is published.
	hot  atomic.Uint64
	node atomic.Pointer[devNode]
	klen uint8 // 0xff: the id is longer than inlineKey; compare node.id
	key  [inlineKey]byte
}

// devNode is one device's state (immutable).
type devNode struct {
	st DeviceState
	id string
}

// Hot word layout: bit 63 set when valid; State bits 0-7, Risk 8-15, Platform 16-23,
// Revision 24-62. A state that does not fit (revision ≥ 2^39) has no hot word (0): its
// readers use the node.
const (
	hotValid  = 1 << 63
	hotRevMax = 1<<39 - 1
)

func packHot(st *DeviceState) uint64 {
	if st.Revision < 0 || st.Revision > hotRevMax {
		return 0
	}
	return hotValid | uint64(st.State) | uint64(st.Risk)<<8 | uint64(st.Platform)<<16 | uint64(st.Revision)<<24
}

func (sl *devSlot) setKey(id string) {
	if len(id) <= inlineKey {
		sl.klen = uint8(len(id))
		copy(sl.key[:], id)
	} else {
		sl.klen = 0xff
	}
}

// is reports whether the slot holds id (its hash already matched).
func (sl *devSlot) is(id string) bool {
	if sl.klen != 0xff {
		return int(sl.klen) == len(id) && string(sl.key[:sl.klen]) == id
	}
	n := sl.node.Load()
	return n != nil && n.id == id
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
		if sl.hash == h && sl.is(id) {
			return sl
		}
	}
}

// insert puts a device in a table being built (not yet published); the table must have
// room.
func (t *devTable) insert(h uint64, id string, n *devNode, hot uint64) {
	mask := uint64(len(t.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		sl := &t.slots[i]
		if sl.hash == 0 {
			sl.hash = h
			sl.setKey(id)
			sl.node.Store(n)
			sl.hot.Store(hot)
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
		n := sl.node.Load()
		nt.insert(sl.hash, n.id, n, sl.hot.Load())
	}
	return nt
}

// lookup returns id's slot, or nil.
func (x *DeviceIndex) lookup(id string) *devSlot {
	h := x.hash(id)
	return x.shards[shardOf(h)].tab.Load().find(h, id)
}

// Get returns the device's state (shared and immutable: do not modify), or nil, false.
func (x *DeviceIndex) Get(id string) (*DeviceState, bool) {
	sl := x.lookup(id)
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
	n := &devNode{st: st, id: id}
	hot := packHot(&st)
	sh := &x.shards[shardOf(h)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t := sh.tab.Load()
	if sl := t.find(h, id); sl != nil {
		// The node first: a reader that sees the new hot word finds a node at least as
		// new (EvaluateIn checks that they agree).
		sl.node.Store(n)
		sl.hot.Store(hot)
		return
	}
	t = t.rebuilt(1, nil) // copy on write: readers may be probing t
	t.insert(h, id, n, hot)
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
			n, hot := &devNode{st: it.State, id: it.ID}, packHot(&it.State)
			if sl := nt.find(p.h, it.ID); sl != nil { // known (or duplicate in items): last wins
				sl.node.Store(n)
				sl.hot.Store(hot)
				continue
			}
			nt.insert(p.h, it.ID, n, hot)
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
