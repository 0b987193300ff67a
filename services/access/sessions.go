package access

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/propagation"
)

// Sessions is the in-memory table of active sessions, one per (user, device,
// application). The decision path reads it without locks; opening a new
// session and revoking take a short mutex that no store call ever holds.
type Sessions struct {
	byKey sync.Map // sessionKey -> *LiveSession

	mu       sync.Mutex
	byDevice map[string]map[*LiveSession]struct{}
	byUser   map[string]map[*LiveSession]struct{}

	prefix string
	seq    atomic.Uint64
	// FlushEvery bounds how often a refreshed session is written back.
	FlushEvery time.Duration
}

type sessionKey struct{ user, device, app string }

// LiveSession is one active session.
type LiveSession struct {
	Session                    // immutable identity and CreateTime
	last, flushed atomic.Int64 // unix nanos
	revoked       atomic.Bool
}

// Snapshot returns the session with its current last access time.
func (l *LiveSession) Snapshot() Session {
	s := l.Session
	s.LastAccessTime = time.Unix(0, l.last.Load()).UTC()
	return s
}

// NewSessions returns an empty table.
func NewSessions() *Sessions {
	var b [6]byte
	rand.Read(b[:])
	return &Sessions{byDevice: map[string]map[*LiveSession]struct{}{}, byUser: map[string]map[*LiveSession]struct{}{}, prefix: "s-" + hex.EncodeToString(b[:]) + "-", FlushEvery: 30 * time.Second}
}

// Load adds stored active sessions (at start-up).
func (s *Sessions) Load(ss []*Session) {
	for _, x := range ss {
		l := &LiveSession{Session: *x}
		l.Session.State = SessionActive
		l.last.Store(x.LastAccessTime.UnixNano())
		l.flushed.Store(x.LastAccessTime.UnixNano())
		s.insert(sessionKey{x.UserID, x.DeviceID, x.AppID}, l)
	}
}

func (s *Sessions) insert(k sessionKey, l *LiveSession) *LiveSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.byKey.Load(k); ok {
		return cur.(*LiveSession)
	}
	s.byKey.Store(k, l)
	addTo(s.byDevice, l.DeviceID, l)
	addTo(s.byUser, l.UserID, l)
	return l
}

func addTo(idx map[string]map[*LiveSession]struct{}, key string, l *LiveSession) {
	m := idx[key]
	if m == nil {
		m = map[*LiveSession]struct{}{}
		idx[key] = m
	}
	m[l] = struct{}{}
}

func removeFrom(idx map[string]map[*LiveSession]struct{}, key string, l *LiveSession) {
	if m := idx[key]; m != nil {
		delete(m, l)
		if len(m) == 0 {
			delete(idx, key)
		}
	}
}

var w3c = propagation.TraceContext{}

// Touch opens or refreshes the session of (user, device, app) at now. It
// returns the session and whether it must be written (new, or last written
// more than FlushEvery ago). A new session keeps the trace context of ctx (the
// decision that opened it) for its session_opened event.
func (s *Sessions) Touch(ctx context.Context, user, device, app string, now time.Time) (l *LiveSession, write bool) {
	k := sessionKey{user, device, app}
	n := now.UnixNano()
	if v, ok := s.byKey.Load(k); ok {
		l = v.(*LiveSession)
		if !l.revoked.Load() {
			l.last.Store(n)
			if f := l.flushed.Load(); n-f > int64(s.FlushEvery) && l.flushed.CompareAndSwap(f, n) {
				return l, true
			}
			return l, false
		}
	}
	nl := &LiveSession{Session: Session{
		ID: s.prefix + strconv.FormatUint(s.seq.Add(1), 36), UserID: user, DeviceID: device, AppID: app,
		State: SessionActive, CreateTime: now.UTC(),
	}}
	c := propagation.MapCarrier{}
	w3c.Inject(ctx, c)
	nl.TraceParent, nl.TraceState = c.Get("traceparent"), c.Get("tracestate")
	nl.last.Store(n)
	nl.flushed.Store(n)
	l = s.insert(k, nl)
	return l, l == nl
}

// ForDevice returns the device's active sessions.
func (s *Sessions) ForDevice(device string) []*LiveSession {
	return s.active(s.byDevice, device)
}

// ForUser returns the user's active sessions.
func (s *Sessions) ForUser(user string) []*LiveSession {
	return s.active(s.byUser, user)
}

func (s *Sessions) active(idx map[string]map[*LiveSession]struct{}, key string) []*LiveSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*LiveSession, 0, len(idx[key]))
	for l := range idx[key] {
		if !l.revoked.Load() {
			out = append(out, l)
		}
	}
	return out
}

// Remove marks sessions revoked and drops them from the table.
func (s *Sessions) Remove(ls []*LiveSession) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range ls {
		l.revoked.Store(true)
		k := sessionKey{l.UserID, l.DeviceID, l.AppID}
		if cur, ok := s.byKey.Load(k); ok && cur == l {
			s.byKey.Delete(k)
		}
		removeFrom(s.byDevice, l.DeviceID, l)
		removeFrom(s.byUser, l.UserID, l)
	}
}

// Expire drops the sessions whose last access is before cutoff and returns
// them. It scans without the table's mutex (decisions opening sessions never
// wait for the scan) and removes in small batches.
func (s *Sessions) Expire(cutoff time.Time) []*LiveSession {
	c := cutoff.UnixNano()
	var out []*LiveSession
	s.byKey.Range(func(_, v any) bool {
		if l := v.(*LiveSession); l.last.Load() < c {
			out = append(out, l)
		}
		return true
	})
	for lo := 0; lo < len(out); lo += 256 {
		s.Remove(out[lo:min(len(out), lo+256)])
	}
	return out
}

// Len returns the number of active sessions.
func (s *Sessions) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, m := range s.byDevice {
		n += len(m)
	}
	return n
}
