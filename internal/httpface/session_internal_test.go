package httpface

import (
	"crypto/rand"
	"path/filepath"
	"slices"
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
			ss, ok := tt.s.open(tt.cookie)
			if ok != tt.ok {
				t.Fatalf("open = %v, want %v", ok, tt.ok)
			}
			if got := ss.identity(); ok && (got.Subject != alice.Subject || got.ID != alice.ID || got.Kind != auth.KindConsoleSession || !slices.Equal(got.Roles, alice.Roles)) {
				t.Errorf("identity = %+v, want %+v", got, alice)
			}
		})
	}

	// Sign-out: refused here, and after a restart (a new sealer over the same files).
	ss, _ := s.open(cookie)
	if err := s.revoke(ss); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.open(cookie); ok {
		t.Error("a signed-out session still opens")
	}
	restarted, err := newSessions(key, deny)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := restarted.open(cookie); ok {
		t.Error("a signed-out session opens after a restart")
	}
	fresh, _ := restarted.seal(alice, time.Hour)
	if _, ok := restarted.open(fresh); !ok {
		t.Error("a new session after the restart does not open")
	}
	if _, err := newSessions(key[:16], ""); err == nil {
		t.Error("a 16-byte key was accepted")
	}
}
