package changefeed

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

type change struct {
	id, etag string
	deleted  bool
}

// TestFollow: the snapshot, synced, then creations, changes and deletions woken by
// Notify, and changes found by the periodic re-read without a Notify.
func TestFollow(t *testing.T) {
	var mu sync.Mutex
	state := map[string]string{"a": "1"}
	set := func(id, etag string) {
		mu.Lock()
		defer mu.Unlock()
		if etag == "" {
			delete(state, id)
		} else {
			state[id] = etag
		}
	}
	var n Notifier
	out := make(chan change, 16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Follow(ctx, Config{
			Wake: n.Wait,
			List: func(context.Context) (map[string]string, error) {
				mu.Lock()
				defer mu.Unlock()
				m := map[string]string{}
				for k, v := range state {
					m[k] = v
				}
				return m, nil
			},
			Change: func(id, etag string, deleted bool) error { out <- change{id, etag, deleted}; return nil },
			Synced: func() error { out <- change{id: "<synced>"}; return nil },
			Poll:   200 * time.Millisecond,
		})
	}()
	expect := func(want change) {
		t.Helper()
		select {
		case got := <-out:
			if got != want {
				t.Fatalf("got %+v, want %+v", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %+v", want)
		}
	}
	expect(change{"a", "1", false})
	expect(change{id: "<synced>"})
	for _, tt := range []struct {
		name     string
		id, etag string
		notify   bool
		want     change
	}{
		{"created", "b", "1", true, change{"b", "1", false}},
		{"changed", "a", "2", true, change{"a", "2", false}},
		{"deleted", "b", "", true, change{"b", "1", true}},
		{"another replica's change, found by the re-read", "c", "1", false, change{"c", "1", false}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			set(tt.id, tt.etag)
			if tt.notify {
				n.Notify()
			}
			expect(tt.want)
		})
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Follow after cancel = %v", err)
	}

	// A listing error ends the stream with it.
	boom := errors.New("boom")
	err := Follow(context.Background(), Config{List: func(context.Context) (map[string]string, error) { return nil, boom },
		Change: func(string, string, bool) error { return fmt.Errorf("unexpected") }})
	if !errors.Is(err, boom) {
		t.Errorf("Follow with a failing listing = %v, want %v", err, boom)
	}
}
