package access_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/condaccess/condaccess/services/access"
	"github.com/condaccess/condaccess/services/access/accessstore"
)

// TestRecorderNeverBlocks: with the writer not draining, a full queue drops
// and counts sign-ins instead of blocking the caller; once drained, what was
// queued is written.
func TestRecorderNeverBlocks(t *testing.T) {
	st, err := accessstore.Open(context.Background(), accessstore.Options{Path: filepath.Join(t.TempDir(), "a.db"), Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	drops := 0
	r := access.NewRecorder(access.RecorderConfig{Store: st, Buffer: 4, OnDrop: func() { drops++ }})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 10 {
			r.SignIn(access.SignIn{Time: time.Now(), UserID: "u", DeviceID: "d", AppID: "a", Decision: access.Decision(1 + i%2)}, nil, nil)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("SignIn blocked on a full queue")
	}
	if r.Dropped() != 6 || drops != 6 {
		t.Fatalf("dropped %d (hook %d), want 6", r.Dropped(), drops)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { r.Run(ctx); close(ran) }()
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-ran
	got, _, err := st.ListSignIns(context.Background(), access.SignInFilter{}, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || r.Written() != 4 {
		t.Fatalf("written %d (listed %d), want 4", r.Written(), len(got))
	}
	if got[0].ID == got[1].ID || got[0].ID == "" {
		t.Errorf("sign-in ids not unique: %q %q", got[0].ID, got[1].ID)
	}
}

func TestSessionsTouch(t *testing.T) {
	s := access.NewSessions()
	s.FlushEvery = time.Minute
	t0 := time.Now()
	a, write := s.Touch(context.Background(), "u", "d", "app", t0)
	if !write {
		t.Fatal("new session not written")
	}
	b, write := s.Touch(context.Background(), "u", "d", "app", t0.Add(time.Second))
	if b != a || write {
		t.Fatalf("refresh: same=%v write=%v, want same session, no write", b == a, write)
	}
	if _, write := s.Touch(context.Background(), "u", "d", "app", t0.Add(2*time.Minute)); !write {
		t.Fatal("refresh after FlushEvery not written")
	}
	other, _ := s.Touch(context.Background(), "u", "d", "other", t0)
	someone, _ := s.Touch(context.Background(), "v", "d2", "app", t0)
	if got := s.ForDevice("d"); len(got) != 2 {
		t.Fatalf("ForDevice = %d sessions, want 2", len(got))
	}
	if got := s.ForUser("u"); len(got) != 2 {
		t.Fatalf("ForUser = %d sessions, want 2", len(got))
	}
	s.Remove([]*access.LiveSession{a})
	if got := s.ForDevice("d"); len(got) != 1 || got[0] != other {
		t.Fatalf("after Remove: %v", got)
	}
	if got := s.ForUser("u"); len(got) != 1 || got[0] != other {
		t.Fatalf("ForUser after Remove: %v", got)
	}
	s.Remove([]*access.LiveSession{someone})
	if got := s.ForUser("v"); len(got) != 0 {
		t.Fatalf("ForUser(v) after Remove: %v", got)
	}
	c, write := s.Touch(context.Background(), "u", "d", "app", t0.Add(3*time.Minute))
	if c == a || !write || c.ID == a.ID {
		t.Fatal("a revoked session was reused")
	}
	if got := s.Expire(t0.Add(time.Minute)); len(got) != 1 || got[0] != other {
		t.Fatalf("Expire = %v, want the idle session only", got)
	}
	if s.Len() != 1 {
		t.Fatalf("Len = %d after expiry, want 1", s.Len())
	}
}
