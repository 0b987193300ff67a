package accessstore

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/condaccess/condaccess/services/access"
)

// TestListSignInsBoundedScan: with a small scan bound, a rare filter is answered over
// several calls (short or empty pages with a token), and the pages together are exactly
// the matching sign-ins, newest first.
func TestListSignInsBoundedScan(t *testing.T) {
	defer func(v int) { maxHeadScan = v }(maxHeadScan)
	maxHeadScan = 64 // one chunk of headers per call
	ctx := context.Background()
	s, err := Open(ctx, Options{Path: filepath.Join(t.TempDir(), "access.db"), Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t0 := time.Unix(1_800_000_000, 0)
	var want []string
	n := 0
	for b := range 300 {
		var batch []*access.SignIn
		for range 3 {
			user := "u-common"
			if n%97 == 0 {
				user = "u-rare"
			}
			batch = append(batch, &access.SignIn{Time: t0.Add(time.Duration(n) * time.Millisecond), UserID: user, DeviceID: "d", AppID: "a",
				Decision: access.DecisionAllow, TraceID: fmt.Sprint(n)})
			n++
		}
		if err := s.WriteBatch(ctx, batch, nil); err != nil {
			t.Fatalf("batch %d: %v", b, err)
		}
		for _, si := range batch {
			if si.UserID == "u-rare" {
				want = append([]string{si.ID}, want...)
			}
		}
	}
	var got []string
	tok, calls, short := "", 0, 0
	for {
		page, next, err := s.ListSignIns(ctx, access.SignInFilter{UserID: "u-rare"}, tok, 5)
		if err != nil {
			t.Fatal(err)
		}
		calls++
		if len(page) < 5 && next != "" {
			short++
		}
		for _, si := range page {
			got = append(got, si.ID)
		}
		if next == "" {
			break
		}
		tok = next
		if calls > 100 {
			t.Fatal("no end")
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	if short == 0 {
		t.Fatalf("%d calls, no short page: the bound was not exercised", calls)
	}
}

// TestBatchEncoding: a batch decodes to what was encoded; a truncated body is an error,
// never a wrong sign-in.
func TestBatchEncoding(t *testing.T) {
	in := []*access.SignIn{
		{UserID: "u-1", DeviceID: "d-1", AppID: "a", Decision: access.DecisionAllow, TraceID: "t1", Detail: []byte{1, 2, 3}},
		{UserID: "", DeviceID: "d-2", AppID: "b", Decision: access.DecisionBlock, TraceID: "", Detail: nil},
		{UserID: "u-3", DeviceID: "d-3", AppID: "c", Decision: access.DecisionAllow, TraceID: "t3", Detail: make([]byte, 300)},
	}
	keys := []int64{1_000, 1_001, 5_000_000_000}
	var b batchBuf
	b.encode(in, keys)
	got, err := decodeBatch(nil, keys[0], b.body)
	if err != nil || len(got) != len(in) {
		t.Fatalf("decoded %d entries, %v", len(got), err)
	}
	for i, e := range got {
		si := in[i]
		if e.key != keys[i] || string(e.user) != si.UserID || string(e.device) != si.DeviceID || string(e.app) != si.AppID ||
			e.decision != si.Decision || string(e.trace) != si.TraceID || string(e.detail) != string(si.Detail) {
			t.Errorf("entry %d = %+v, want %+v at %d", i, e, si, keys[i])
		}
		for _, p := range []uint64{idHash(kindUser, si.UserID), idHash(kindDevice, si.DeviceID), idHash(kindApp, si.AppID)} {
			if !bloomHas(b.filter, p) {
				t.Errorf("entry %d: an id is not in the filter", i)
			}
		}
	}
	for n := 1; n < len(b.body); n++ {
		if es, err := decodeBatch(nil, keys[0], b.body[:n]); err == nil && len(es) != 1 && len(es) != 2 {
			t.Fatalf("body cut at %d decoded %d entries without error", n, len(es))
		}
	}
}

// TestSignInsAfterBoundedScan: a follower whose filter matches rarely gets short (even
// empty) pages, each looking at no more than maxFollowScan batches, with a cursor that
// always moves on while there is more, and every match exactly once.
func TestSignInsAfterBoundedScan(t *testing.T) {
	defer func(v int) { maxFollowScan = v }(maxFollowScan)
	maxFollowScan = 4
	ctx := context.Background()
	s, err := Open(ctx, Options{Path: filepath.Join(t.TempDir(), "access.db"), Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t0 := time.Unix(1_800_000_000, 0)
	var want []string
	for b := range 40 {
		user := "u-common"
		if b%13 == 5 {
			user = "u-rare"
		}
		batch := []*access.SignIn{{Time: t0.Add(time.Duration(b) * time.Millisecond), UserID: user, DeviceID: "d", AppID: "a", Decision: access.DecisionAllow}}
		if err := s.WriteBatch(ctx, batch, nil); err != nil {
			t.Fatal(err)
		}
		if user == "u-rare" {
			want = append(want, batch[0].ID)
		}
	}
	var got []string
	calls, cursor := 0, int64(0)
	for {
		page, reached, err := s.SignInsAfter(ctx, access.SignInFilter{UserID: "u-rare"}, cursor, 10)
		if err != nil {
			t.Fatal(err)
		}
		calls++
		for _, si := range page {
			got = append(got, si.ID)
		}
		if reached == cursor {
			break
		}
		cursor = reached
	}
	if !slices.Equal(got, want) {
		t.Errorf("followed %v, want %v", got, want)
	}
	// 40 batches, at most 4 (+ the one holding the cursor) per call.
	if calls < 10 {
		t.Errorf("%d calls: the scan was not bounded", calls)
	}
}
