package policyengine

import "hash/maphash"

const idInline = 35

// idTable is an immutable open-addressing hash table from id to a dense index, with the id
// stored inline in the slot (when short), so that a lookup usually costs one cache miss
// instead of the three or four of a map[string]int32 (control word, slot, key bytes).
type idTable struct {
	seed  maphash.Seed
	mask  uint64
	slots []idSlot
	ids   []string // by index, for ids longer than idInline
}

type idSlot struct {
	hash uint64 // 0 = empty
	idx  int32
	klen uint8 // 0xff: longer than idInline, compare ids[idx]
	key  [idInline]byte
}

func newIDTable(ids []string) *idTable {
	t := &idTable{seed: maphash.MakeSeed(), ids: ids}
	t.mask, t.slots = placeIDs(t.seed, ids, func(size int) []idSlot { return make([]idSlot, size) },
		func(s []idSlot, j uint64) *idSlot { return &s[j] })
	return t
}

// placeIDs builds the slots of a table of ids (at most half full) and returns its mask.
func placeIDs[S any](seed maphash.Seed, ids []string, mk func(int) []S, at func([]S, uint64) *idSlot) (uint64, []S) {
	size := 16
	for size < 2*len(ids) {
		size *= 2
	}
	mask := uint64(size - 1)
	slots := mk(size)
	for i, id := range ids {
		h := maphash.String(seed, id) | 1
		for j := h & mask; ; j = (j + 1) & mask {
			sl := at(slots, j)
			if sl.hash == 0 {
				sl.hash, sl.idx = h, int32(i)
				if len(id) <= idInline {
					sl.klen = uint8(len(id))
					copy(sl.key[:], id)
				} else {
					sl.klen = 0xff
				}
				break
			}
		}
	}
	return mask, slots
}

// is reports whether the slot (with hash h) holds id.
func (sl *idSlot) is(h uint64, id string, ids []string) bool {
	if sl.hash != h {
		return false
	}
	if sl.klen != 0xff {
		return int(sl.klen) == len(id) && string(sl.key[:sl.klen]) == id
	}
	return ids[sl.idx] == id
}

// get returns id's index.
func (t *idTable) get(id string) (int32, bool) {
	h := maphash.String(t.seed, id) | 1
	for j := h & t.mask; ; j = (j + 1) & t.mask {
		sl := &t.slots[j]
		if sl.hash == 0 {
			return 0, false
		}
		if sl.is(h, id, t.ids) {
			return sl.idx, true
		}
	}
}

// userTable is an idTable of the users whose slots also hold a copy of the user's record
// (cuser: groups, Bloom filter, flags): a decision finds the user's groups in the slot's two
// adjacent cache lines (one 128-byte-aligned pair, fetched together) instead of following
// the index to dirIndex.users, one dependent cache miss less on its critical path.
type userTable struct {
	seed  maphash.Seed
	mask  uint64
	slots []userSlot
	ids   []string
}

type userSlot struct {
	id idSlot // 48 bytes
	u  cuser  // 40 bytes
	_  [128 - 48 - 40]byte
}

func newUserTable(ids []string, users []cuser) *userTable {
	t := &userTable{seed: maphash.MakeSeed(), ids: ids}
	t.mask, t.slots = placeIDs(t.seed, ids, func(size int) []userSlot { return make([]userSlot, size) },
		func(s []userSlot, j uint64) *idSlot { return &s[j].id })
	for i := range t.slots {
		if sl := &t.slots[i]; sl.id.hash != 0 {
			sl.u = users[sl.id.idx]
		}
	}
	return t
}

// get returns id's index and record.
func (t *userTable) get(id string) (int32, *cuser, bool) {
	h := maphash.String(t.seed, id) | 1
	for j := h & t.mask; ; j = (j + 1) & t.mask {
		sl := &t.slots[j]
		if sl.id.hash == 0 {
			return 0, nil, false
		}
		if sl.id.is(h, id, t.ids) {
			return sl.id.idx, &sl.u, true
		}
	}
}
