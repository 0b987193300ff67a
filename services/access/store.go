package access

import (
	"context"
	"time"
)

// Store persists the access service's state. List methods take the opaque
// page token a previous call returned ("" for the first page) and return the
// next one ("" on the last page). Writes that take an etag fail with
// ErrEtagMismatch when it is non-empty and differs from the stored one.
type Store interface {
	CreateUser(ctx context.Context, u *User) error
	// GetUser fills GroupIDs with the user's direct groups.
	GetUser(ctx context.Context, id string) (*User, error)
	// UserByExternalID returns the user whose ExternalID is ext (without GroupIDs),
	// or ErrNotFound. CreateUser, UpdateUser and ImportDirectory fail with
	// ErrAlreadyExists when another user has the same non-empty ExternalID.
	UserByExternalID(ctx context.Context, ext string) (*User, error)
	ListUsers(ctx context.Context, pageToken string, limit int) ([]*User, string, error)
	// UpdateUser replaces the user's mutable fields, UpdateTime and Etag, and
	// applies revs (as RevokeSessions) in the same transaction.
	UpdateUser(ctx context.Context, u *User, etag string, revs []Revocation) error
	// DeleteUser deletes the user and its group memberships, and applies revs (as
	// RevokeSessions) in the same transaction.
	DeleteUser(ctx context.Context, id, etag string, revs []Revocation) error

	// CreateGroup fails with ErrNotFound when a member does not exist.
	CreateGroup(ctx context.Context, g *Group) error
	GetGroup(ctx context.Context, id string) (*Group, error)
	ListGroups(ctx context.Context, pageToken string, limit int) ([]*Group, string, error)
	UpdateGroup(ctx context.Context, g *Group, etag string) error
	// DeleteGroup deletes the group, its memberships and its membership in other groups.
	DeleteGroup(ctx context.Context, id, etag string) error

	CreateApplication(ctx context.Context, a *Application) error
	GetApplication(ctx context.Context, id string) (*Application, error)
	ListApplications(ctx context.Context, pageToken string, limit int) ([]*Application, string, error)
	UpdateApplication(ctx context.Context, a *Application, etag string) error
	DeleteApplication(ctx context.Context, id, etag string) error

	// ImportDirectory creates or replaces users, groups (with their members) and
	// applications, in as many transactions as it needs.
	ImportDirectory(ctx context.Context, d *Directory) error
	// LoadDirectory returns the whole directory (users without group ids).
	LoadDirectory(ctx context.Context) (*Directory, error)

	CreatePolicy(ctx context.Context, p *Policy) error
	GetPolicy(ctx context.Context, id string) (*Policy, error)
	// ListPolicies lists by id; state 0 lists every state.
	ListPolicies(ctx context.Context, state PolicyState, pageToken string, limit int) ([]*Policy, string, error)
	UpdatePolicy(ctx context.Context, p *Policy, etag string) error
	DeletePolicy(ctx context.Context, id, etag string) error
	LoadPolicies(ctx context.Context) ([]*Policy, error)

	// FeedCursor returns the last applied compliance revision.
	FeedCursor(ctx context.Context) (rev int64, ok bool, err error)
	// SaveFeedCursor stores the cursor (progress).
	SaveFeedCursor(ctx context.Context, rev int64) error
	// ReplaceDevices replaces every stored device compliance and the cursor in one
	// transaction; after runs once it has committed.
	ReplaceDevices(ctx context.Context, devs []*DeviceCompliance, rev int64, after func()) error
	// ApplyDevice stores one device's compliance, the cursor and the revocations
	// (session rows and session_revoked events) in one transaction; a revoked
	// session not yet stored is stored first with its session_opened event. after
	// runs once it has committed.
	ApplyDevice(ctx context.Context, d *DeviceCompliance, rev int64, revs []Revocation, after func()) error
	// RevokeSessions stores revocations (session rows and session_revoked events;
	// a session not stored yet is stored first with its session_opened event; a
	// session already revoked is left as is) in one transaction; after runs once it
	// has committed.
	RevokeSessions(ctx context.Context, revs []Revocation, after func()) error
	// LoadDevices calls fn for every stored device compliance.
	LoadDevices(ctx context.Context, fn func(*DeviceCompliance)) error

	// WriteBatch records sign-ins and upserts sessions in one transaction. It sets
	// each sign-in's ID, and may move its Time by a few nanoseconds to keep sign-ins
	// strictly ordered. A session
	// stored for the first time appends its session_opened event. A session whose
	// stored state is REVOKED keeps that state.
	WriteBatch(ctx context.Context, signIns []*SignIn, sessions []*Session) error
	// DeleteSessions deletes sessions (idle ones that expired), without events.
	DeleteSessions(ctx context.Context, ids []string) error
	// LoadActiveSessions returns every ACTIVE session.
	LoadActiveSessions(ctx context.Context) ([]*Session, error)
	ListSessions(ctx context.Context, f SessionFilter, pageToken string, limit int) ([]*Session, string, error)
	// ListSignIns lists newest first.
	ListSignIns(ctx context.Context, f SignInFilter, pageToken string, limit int) ([]*SignIn, string, error)
	// LastSignInKey returns the newest stored sign-in's key (0 when none).
	LastSignInKey(ctx context.Context) (int64, error)
	// SignInsAfter lists, oldest first, at most limit sign-ins matching f (its
	// Before and After are ignored) whose key is above after, and returns the key it
	// reached: call it again with that key for what follows (it returns after when
	// nothing newer is stored). Keys are assigned in commit order, on every replica
	// of a shared store, so a follower that goes on from the returned key misses no
	// sign-in, however late it was written. Each call looks at a bounded number of
	// batches, so a page may be short (even empty) with more to come.
	SignInsAfter(ctx context.Context, f SignInFilter, after int64, limit int) ([]*SignIn, int64, error)
	// SignInsChanged returns a channel closed when another process sharing the
	// store may have stored sign-ins (nil when there is none, or no notification).
	SignInsChanged() <-chan struct{}
	// DeleteSignInsBefore deletes the sign-ins older than t and returns how many.
	DeleteSignInsBefore(ctx context.Context, t time.Time) (int64, error)
	// WatchSessionEvents replays the session events after start, then tails live
	// ones; errors are those of eventlog.Log.Watch.
	WatchSessionEvents(ctx context.Context, start int64, onEvent func(*SessionEvent) error, onProgress func(rev int64) error) error
	// SessionRevision is the last session event revision.
	SessionRevision() int64
}
