package policyengine

import (
	"fmt"
	"strings"
	"testing"
	"unsafe"
)

func TestIDTable(t *testing.T) {
	var ids []string
	for i := range 3000 {
		id := fmt.Sprintf("user-%d@example.com", i)
		if i%3 == 0 {
			id = strings.Repeat("x", 40) + id // longer than idInline
		}
		ids = append(ids, id)
	}
	tab := newIDTable(ids)
	for i, id := range ids {
		if got, ok := tab.get(id); !ok || got != int32(i) {
			t.Fatalf("get(%q) = %d, %v; want %d", id, got, ok, i)
		}
		if _, ok := tab.get(id + "x"); ok {
			t.Fatalf("get(%q) found", id+"x")
		}
		if _, ok := tab.get(id[:len(id)-1]); ok {
			t.Fatalf("get(%q) found", id[:len(id)-1])
		}
	}
	if _, ok := newIDTable(nil).get("a"); ok {
		t.Fatal("empty table found a")
	}
}

func TestUserTable(t *testing.T) {
	if got := unsafe.Sizeof(userSlot{}); got != 128 {
		t.Errorf("userSlot is %d bytes, want 128 (two cache lines)", got)
	}
	var ids []string
	var users []cuser
	for i := range 3000 {
		id := fmt.Sprintf("user-%d@example.com", i)
		if i%3 == 0 {
			id = strings.Repeat("x", 40) + id // longer than idInline
		}
		ids = append(ids, id)
		users = append(users, cuser{gmask: uint64(i), disabled: i%7 == 0})
	}
	tab := newUserTable(ids, users)
	for i, id := range ids {
		got, u, ok := tab.get(id)
		if !ok || got != int32(i) || u.gmask != uint64(i) || u.disabled != (i%7 == 0) {
			t.Fatalf("get(%q) = %d, %+v, %v; want %d", id, got, u, ok, i)
		}
		if _, _, ok := tab.get(id + "x"); ok {
			t.Fatalf("get(%q) found", id+"x")
		}
	}
	if _, _, ok := newUserTable(nil, nil).get("a"); ok {
		t.Fatal("empty table found a")
	}
}
