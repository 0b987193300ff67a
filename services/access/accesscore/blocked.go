package accesscore

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/condaccess/condaccess/internal/keyfile"
	pe "github.com/condaccess/condaccess/services/access/policyengine"
)

// ErrBlockedRefNotFound: a blocked-page reference that is malformed, forged, expired
// or sealed by another key. Deliberately one error: the caller learns nothing else.
var ErrBlockedRefNotFound = errors.New("no blocked sign-in with this reference")

// BlockedSignIn is what a blocked-page reference carries: the sign-in and the request
// it decided, so that its status can be evaluated again without the sign-in log (the
// sign-in may not be written yet, or dropped under load).
type BlockedSignIn struct {
	SignInID string     `json:"s"`
	UserID   string     `json:"u,omitempty"`
	DeviceID string     `json:"d,omitempty"`
	AppID    string     `json:"a"`
	IP       netip.Addr `json:"i,omitzero"`
	MFADone  bool       `json:"m,omitempty"`
	Time     time.Time  `json:"t"`
	// TokenGroups are the token's directory groups the decision counted
	// (Request.TokenGroups), so that the page's re-evaluation sees them too.
	TokenGroups []string `json:"g,omitempty"`
}

// blockedRefAAD binds the sealed references to their purpose.
var blockedRefAAD = []byte("condaccess blocked-page reference v1")

// BlockedRefs seals and opens the end user's blocked-page references: AES-256-GCM
// (random 96-bit nonce) over the BlockedSignIn, base64url. A reference cannot be
// guessed (the tag is 128 bits) nor read (the ids are encrypted).
type BlockedRefs struct {
	aead cipher.AEAD
	ttl  time.Duration
	now  func() time.Time
}

// NewBlockedRefs returns the sealer for a 32-byte key; references older than ttl are
// refused as not found.
func NewBlockedRefs(key []byte, ttl time.Duration) (*BlockedRefs, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("blocked-page key: %d bytes, want 32", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &BlockedRefs{aead: aead, ttl: ttl, now: time.Now}, nil
}

// LoadOrCreateBlockedRefKey reads the 32-byte key in path, creating it (mode 0600,
// from crypto/rand) when it does not exist, so references survive a restart.
func LoadOrCreateBlockedRefKey(path string) ([]byte, error) {
	return keyfile.LoadOrCreate(path, 32)
}

// Seal returns the reference of b.
func (r *BlockedRefs) Seal(b BlockedSignIn) (string, error) {
	plain, err := json.Marshal(b)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, r.aead.NonceSize(), r.aead.NonceSize()+len(plain)+r.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(r.aead.Seal(nonce, nonce, plain, blockedRefAAD)), nil
}

// Open returns the sign-in a reference carries, or ErrBlockedRefNotFound.
func (r *BlockedRefs) Open(ref string) (BlockedSignIn, error) {
	var b BlockedSignIn
	raw, err := base64.RawURLEncoding.DecodeString(ref)
	if err != nil || len(raw) < r.aead.NonceSize()+r.aead.Overhead() {
		return b, ErrBlockedRefNotFound
	}
	plain, err := r.aead.Open(nil, raw[:r.aead.NonceSize()], raw[r.aead.NonceSize():], blockedRefAAD)
	if err != nil {
		return b, ErrBlockedRefNotFound
	}
	if err := json.Unmarshal(plain, &b); err != nil || b.SignInID == "" {
		return BlockedSignIn{}, ErrBlockedRefNotFound
	}
	if age := r.now().Sub(b.Time); age > r.ttl || age < -time.Minute {
		return BlockedSignIn{}, ErrBlockedRefNotFound
	}
	return b, nil
}

// BlockedProblem is a category of what blocks a sign-in, for the end user.
type BlockedProblem int

// The problem categories (values as in accessv1.BlockedProblem).
const (
	ProblemThreat BlockedProblem = iota + 1
	ProblemOSVersion
	ProblemPlatform
	ProblemRequirement
	ProblemDeviceUnknown
	ProblemSignIn
)

// BlockedStatus is a blocked sign-in's status now.
type BlockedStatus struct {
	Restored bool
	DeviceID string
	Problems []BlockedProblem
	AppName  string
	Time     time.Time
	// Remediation is, when a threat blocks the sign-in, whether it is being removed.
	Remediation Remediation
}

// BlockedStatus evaluates the sign-in's request again, without side effects (no
// sign-in, no session), and says in categories what blocks it. It never returns
// policy names, reason codes or alert ids. appName also looks up the application's
// display name.
func (s *Service) BlockedStatus(ctx context.Context, b BlockedSignIn, appName bool) BlockedStatus {
	r := pe.Request{UserID: b.UserID, DeviceID: b.DeviceID, AppID: b.AppID, IP: b.IP, MFADone: b.MFADone, TokenGroups: b.TokenGroups, OnlyApplied: true}
	var res pe.Result
	s.Evaluate(&r, &res)
	st := BlockedStatus{DeviceID: b.DeviceID, Time: b.Time, Restored: res.Decision == pe.DecisionAllow}
	if appName {
		if a, err := s.store.GetApplication(ctx, b.AppID); err == nil {
			st.AppName = a.DisplayName
		}
	}
	if st.Restored {
		return st
	}
	st.Problems = problems(s, b.DeviceID)
	for _, p := range st.Problems {
		if p == ProblemThreat {
			st.Remediation = s.Remediation(b.DeviceID)
		}
	}
	return st
}

func problems(s *Service, deviceID string) []BlockedProblem {
	if deviceID == "" {
		return []BlockedProblem{ProblemSignIn}
	}
	if s.cfg.Revocations != nil && s.cfg.Revocations.IsRevoked(deviceID) {
		return []BlockedProblem{ProblemRequirement}
	}
	d, ok := s.devices.Load().Get(deviceID)
	if !ok || d == nil {
		return []BlockedProblem{ProblemDeviceUnknown}
	}
	if d.State.CountsAsCompliant() {
		return []BlockedProblem{ProblemSignIn}
	}
	var out []BlockedProblem
	if d.Risk >= pe.RiskMedium || len(d.AlertIDs) > 0 {
		out = append(out, ProblemThreat)
	}
	switch setting := strings.ToLower(d.Setting); {
	case strings.Contains(setting, "os_version") || strings.Contains(setting, "osversion"):
		out = append(out, ProblemOSVersion)
	case strings.Contains(setting, "platform"):
		out = append(out, ProblemPlatform)
	case len(out) == 0:
		out = append(out, ProblemRequirement)
	}
	return out
}

// changes wakes the watchers of blocked statuses when something a decision depends
// on changed (a compliance event applied, a resync, a policy or directory change).
type changes struct {
	mu sync.Mutex
	ch chan struct{}
}

// wait returns a channel closed at the next change.
func (c *changes) wait() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch == nil {
		c.ch = make(chan struct{})
	}
	return c.ch
}

func (c *changes) notify() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch != nil {
		close(c.ch)
		c.ch = nil
	}
}

// Changed returns a channel closed at the next change that may alter a decision.
func (s *Service) Changed() <-chan struct{} { return s.changes.wait() }
