package httpface

import (
	"bufio"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/auth"
)

// sessionAAD binds sealed cookies to their purpose (a blocked-page reference sealed
// by a key that happened to be the same would not open as a session).
var sessionAAD = []byte("condaccess console session v1")

// sealedSession is what the session cookie carries, sealed: the session id (for
// sign-out), the signed-in subject, its roles and the expiry.
type sealedSession struct {
	ID      string  `json:"i"`
	Subject string  `json:"s"`
	Roles   []int32 `json:"r,omitempty"`
	Expires int64   `json:"e"` // unix seconds
}

// sessions seals console sessions into their cookie with AES-256-GCM under a key
// every replica shares (--console-session-key-file), so a session survives a restart
// and is valid on any replica, with nothing stored per session. Signing out puts
// the session's id on a deny list until the session would have expired; the list is
// kept in a file (one "id expiry" line per sign-out), so a signed-out cookie stays
// refused after a restart. With a SignOuts store (replicas on one database) the
// sign-outs are kept there instead, and every replica asks it on each use of a
// cookie, so a sign-out on one replica is refused on all of them at once.
type sessions struct {
	aead     cipher.AEAD
	now      func() time.Time
	denyPath string
	store    SignOuts
	log      *slog.Logger

	mu   sync.Mutex
	deny map[string]int64 // session id -> expiry (unix seconds)
}

// SignOuts keeps signed-out console sessions where every replica sees them (the
// database with --database-url).
type SignOuts interface {
	// SignOut records that session id is signed out until expires.
	SignOut(ctx context.Context, id string, expires time.Time) error
	// SignedOut reports whether session id is signed out and not yet expired.
	SignedOut(ctx context.Context, id string) (bool, error)
}

// newStoredSessions returns the sealer for a 32-byte key whose sign-outs store keeps.
func newStoredSessions(key []byte, store SignOuts, log *slog.Logger) (*sessions, error) {
	s, err := newSessions(key, "")
	if err != nil {
		return nil, err
	}
	s.store = store
	if log != nil {
		s.log = log
	}
	return s, nil
}

// newSessions returns the sealer for a 32-byte key; denyPath ("" for none) keeps the
// sign-outs.
func newSessions(key []byte, denyPath string) (*sessions, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("console session key: %d bytes, want 32", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	s := &sessions{aead: aead, now: time.Now, denyPath: denyPath, deny: map[string]int64{}, log: slog.New(slog.DiscardHandler)}
	if err := s.loadDenyList(); err != nil {
		return nil, err
	}
	return s, nil
}

// loadDenyList reads the sign-outs still in force and rewrites the file without the
// expired ones.
func (s *sessions) loadDenyList() error {
	if s.denyPath == "" {
		return nil
	}
	f, err := os.Open(s.denyPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	now := s.now().Unix()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		id, exp, ok := strings.Cut(sc.Text(), " ")
		e, err := strconv.ParseInt(exp, 10, 64)
		if !ok || err != nil || id == "" {
			continue // a torn last line of a crash
		}
		if e > now {
			s.deny[id] = e
		}
	}
	f.Close()
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", s.denyPath, err)
	}
	var b strings.Builder
	for id, e := range s.deny {
		fmt.Fprintf(&b, "%s %d\n", id, e)
	}
	tmp := s.denyPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.denyPath)
}

// seal returns the cookie value of a new session for id, valid for ttl.
func (s *sessions) seal(id auth.Identity, ttl time.Duration) (string, error) {
	ss := sealedSession{ID: random(), Subject: id.ID, Expires: s.now().Add(ttl).Unix()}
	for _, r := range id.Roles {
		ss.Roles = append(ss.Roles, int32(r))
	}
	plain, err := json.Marshal(ss)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, plain, sessionAAD)), nil
}

// open returns the session of a cookie value: false when it is not one this key
// sealed, it expired, or it was signed out. When the sign-outs store cannot be read
// the session is refused (fail closed).
func (s *sessions) open(ctx context.Context, v string) (sealedSession, bool) {
	var ss sealedSession
	raw, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil || len(raw) < s.aead.NonceSize()+s.aead.Overhead() {
		return ss, false
	}
	plain, err := s.aead.Open(nil, raw[:s.aead.NonceSize()], raw[s.aead.NonceSize():], sessionAAD)
	if err != nil || json.Unmarshal(plain, &ss) != nil || ss.ID == "" || ss.Subject == "" {
		return sealedSession{}, false
	}
	if !s.valid(ctx, ss) {
		return sealedSession{}, false
	}
	return ss, true
}

// valid reports whether ss still holds: not expired, not signed out (false when the
// sign-outs cannot be read: fail closed).
func (s *sessions) valid(ctx context.Context, ss sealedSession) bool {
	if s.now().Unix() >= ss.Expires {
		return false
	}
	if s.store != nil {
		out, err := s.store.SignedOut(ctx, ss.ID)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("console session refused: the sign-outs could not be read", "err", err)
		}
		return err == nil && !out
	}
	s.mu.Lock()
	_, denied := s.deny[ss.ID]
	s.mu.Unlock()
	return !denied
}

// follow checks ss every interval while ctx lasts and calls end once it no longer
// holds; stop ends the checks. A call shorter than interval costs one timer.
func (s *sessions) follow(ctx context.Context, ss sealedSession, interval time.Duration, end func()) (stop func()) {
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	var check func()
	check = func() {
		if ctx.Err() != nil {
			return
		}
		if !s.valid(ctx, ss) {
			end()
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			t = time.AfterFunc(interval, check)
		}
	}
	mu.Lock()
	t = time.AfterFunc(interval, check)
	mu.Unlock()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}

// identity is the caller identity of a session.
func (ss sealedSession) identity() auth.Identity {
	id := auth.Identity{Kind: auth.KindConsoleSession, Subject: "oidc:" + ss.Subject, ID: ss.Subject}
	for _, r := range ss.Roles {
		id.Roles = append(id.Roles, commonv1.Role(r))
	}
	return id
}

// revoke signs ss out: its id is refused until it would have expired.
func (s *sessions) revoke(ctx context.Context, ss sealedSession) error {
	if s.store != nil {
		return s.store.SignOut(ctx, ss.ID, time.Unix(ss.Expires, 0))
	}
	now := s.now().Unix()
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, e := range s.deny {
		if e <= now {
			delete(s.deny, id)
		}
	}
	s.deny[ss.ID] = ss.Expires
	if s.denyPath == "" {
		return nil
	}
	f, err := os.OpenFile(s.denyPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(f, "%s %d\n", ss.ID, ss.Expires); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
