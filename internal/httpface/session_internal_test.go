package httpface

import (
	"context"
	"crypto/rand"
	"errors"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/auth"
)

func testKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// TestSealedSessions: a session cookie opens, with its identity, under the same key
// (another replica, or the same server after a restart); it is refused when forged,
// changed, sealed under another key, expired, or signed out, and a sign-out holds
// after a restart.
func TestSealedSessions(t *testing.T) {
	key := testKey(t)
	deny := filepath.Join(t.TempDir(), "console-signouts")
	s, err := newSessions(key, deny)
	if err != nil {
		t.Fatal(err)
	}
	alice := auth.Identity{Kind: auth.KindConsoleSession, Subject: "oidc:alice", ID: "alice", Roles: []commonv1.Role{commonv1.Role_ROLE_READER, commonv1.Role_ROLE_SECOPS_ADMIN}}
	cookie, err := s.seal(alice, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := newSessions(testKey(t), "")
	foreign, _ := other.seal(alice, time.Hour)
	expired, _ := s.seal(alice, -time.Second)
	flipped := []byte(cookie)
	if flipped[10] == 'A' {
		flipped[10] = 'B'
	} else {
		flipped[10] = 'A'
	}
	replica, err := newSessions(key, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		s      *sessions
		cookie string
		ok     bool
	}{
		{"the session", s, cookie, true},
		{"another replica with the same key", replica, cookie, true},
		{"sealed under another key", s, foreign, false},
		{"one character changed", s, string(flipped), false},
		{"expired", s, expired, false},
		{"an old in-memory session id (not sealed)", s, random(), false},
		{"empty", s, "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ss, ok := tt.s.open(context.Background(), tt.cookie)
			if ok != tt.ok {
				t.Fatalf("open = %v, want %v", ok, tt.ok)
			}
			if got := ss.identity(); ok && (got.Subject != alice.Subject || got.ID != alice.ID || got.Kind != auth.KindConsoleSession || !slices.Equal(got.Roles, alice.Roles)) {
				t.Errorf("identity = %+v, want %+v", got, alice)
			}
		})
	}

	// Sign-out: refused here, and after a restart (a new sealer over the same files).
	ss, _ := s.open(context.Background(), cookie)
	if err := s.revoke(context.Background(), ss); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.open(context.Background(), cookie); ok {
		t.Error("a signed-out session still opens")
	}
	restarted, err := newSessions(key, deny)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := restarted.open(context.Background(), cookie); ok {
		t.Error("a signed-out session opens after a restart")
	}
	fresh, _ := restarted.seal(alice, time.Hour)
	if _, ok := restarted.open(context.Background(), fresh); !ok {
		t.Error("a new session after the restart does not open")
	}
	if _, err := newSessions(key[:16], ""); err == nil {
		t.Error("a 16-byte key was accepted")
	}
}

// memSignOuts is a SignOuts shared by two sealers (two replicas on one database).
type memSignOuts struct {
	mu     sync.Mutex
	out    map[string]time.Time
	fail   error
	checks map[string]int // SignedOut calls per id
}

func (m *memSignOuts) SignOut(_ context.Context, id string, exp time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	m.out[id] = exp
	return nil
}

func (m *memSignOuts) SignedOut(_ context.Context, id string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.checks == nil {
		m.checks = map[string]int{}
	}
	m.checks[id]++
	if m.fail != nil {
		return false, m.fail
	}
	_, ok := m.out[id]
	return ok, nil
}

// TestStoredSignOuts: with a shared sign-outs store, a sign-out on one replica is
// refused on the other at once (no file, no wait for expiry); another session stays
// valid; when the store cannot be read, sessions are refused (fail closed) and a
// sign-out that cannot be recorded is an error.
func TestStoredSignOuts(t *testing.T) {
	key := testKey(t)
	store := &memSignOuts{out: map[string]time.Time{}}
	a, err := newStoredSessions(key, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := newStoredSessions(key, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	alice := auth.Identity{Kind: auth.KindConsoleSession, Subject: "oidc:alice", ID: "alice"}
	cookie, _ := a.seal(alice, time.Hour)
	other, _ := a.seal(alice, time.Hour)
	ctx := context.Background()
	if _, ok := b.open(ctx, cookie); !ok {
		t.Fatal("a cookie sealed on A does not open on B")
	}
	ss, _ := a.open(ctx, cookie)
	if err := a.revoke(ctx, ss); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		s      *sessions
		cookie string
		ok     bool
	}{
		{"signed out, on A", a, cookie, false},
		{"signed out on A, used on B", b, cookie, false},
		{"another session of the same person, on B", b, other, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, ok := tt.s.open(ctx, tt.cookie); ok != tt.ok {
				t.Errorf("open = %v, want %v", ok, tt.ok)
			}
		})
	}
	if got := store.out[ss.ID]; got.Unix() != ss.Expires {
		t.Errorf("sign-out kept until %v, want the session's expiry %v", got, time.Unix(ss.Expires, 0))
	}
	store.fail = errors.New("database down")
	if _, ok := b.open(ctx, other); ok {
		t.Error("a session opened while the sign-outs could not be read")
	}
	if err := b.revoke(ctx, sealedSession{ID: "x", Subject: "alice", Expires: time.Now().Add(time.Hour).Unix()}); err == nil {
		t.Error("a sign-out that could not be recorded reported success")
	}
}

// TestSessionFollow: a call still running with a session (a server stream) is ended
// once the session is signed out on another replica, or expires; a call of another
// session, checked meanwhile, is not.
func TestSessionFollow(t *testing.T) {
	key := testKey(t)
	store := &memSignOuts{out: map[string]time.Time{}}
	a, _ := newStoredSessions(key, store, nil)
	b, _ := newStoredSessions(key, store, nil)
	var mu sync.Mutex
	now := time.Now()
	b.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	alice := auth.Identity{Kind: auth.KindConsoleSession, Subject: "oidc:alice", ID: "alice"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seal := func(ttl time.Duration) sealedSession {
		c, _ := b.seal(alice, ttl)
		ss, ok := b.open(ctx, c)
		if !ok {
			t.Fatal("a fresh session does not open")
		}
		return ss
	}
	signedOut, kept, expiring := seal(time.Hour), seal(time.Hour), seal(time.Minute)
	ended := func(ss sealedSession) (chan struct{}, func()) {
		ch := make(chan struct{})
		var once sync.Once
		stop := b.follow(ctx, ss, 5*time.Millisecond, func() { once.Do(func() { close(ch) }) })
		return ch, stop
	}
	wait := func(ch chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("%s: the call was not ended", what)
		}
	}
	endOut, stopOut := ended(signedOut)
	defer stopOut()
	endKept, stopKept := ended(kept)
	defer stopKept()
	endExp, stopExp := ended(expiring)
	defer stopExp()
	if err := a.revoke(ctx, signedOut); err != nil {
		t.Fatal(err)
	}
	wait(endOut, "signed out on the other replica")
	store.mu.Lock()
	base := store.checks[kept.ID]
	store.mu.Unlock()
	for {
		store.mu.Lock()
		n := store.checks[kept.ID]
		store.mu.Unlock()
		if n >= base+3 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the other session's call was not checked again")
		}
		runtime.Gosched()
	}
	select {
	case <-endKept:
		t.Fatal("the call of a session that was not signed out was ended")
	case <-endExp:
		t.Fatal("the call of a session that has not expired was ended")
	default:
	}
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	wait(endExp, "expired")
}
