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
	size := 16
	for size < 2*len(ids) {
		size *= 2
	}
	t := &idTable{seed: maphash.MakeSeed(), mask: uint64(size - 1), slots: make([]idSlot, size), ids: ids}
	for i, id := range ids {
		h := maphash.String(t.seed, id) | 1
		for j := h & t.mask; ; j = (j + 1) & t.mask {
			sl := &t.slots[j]
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
	return t
}

// get returns id's index.
func (t *idTable) get(id string) (int32, bool) {
	h := maphash.String(t.seed, id) | 1
	for j := h & t.mask; ; j = (j + 1) & t.mask {
		sl := &t.slots[j]
		if sl.hash == 0 {
			return 0, false
		}
		if sl.hash == h {
			if sl.klen != 0xff {
				if int(sl.klen) == len(id) && string(sl.key[:sl.klen]) == id {
					return sl.idx, true
				}
			} else if t.ids[sl.idx] == id {
				return sl.idx, true
			}
		}
	}
}
