package access

import (
	"context"
	"time"
)

// Change kinds besides the audited resource types.
const (
	ChangeDevice  = "device"  // one device's compliance was stored (ID: the device)
	ChangeDevices = "devices" // every device's compliance was replaced (a resync)
)

// Change is one entry of a shared store's change logs: what an admin change or
// the compliance consumer wrote, for the other replicas to reload.
type Change struct {
	Revision int64
	// Kind is an audited resource type (user, group, application,
	// conditional_access_policy, directory_import), "device" (ID: the device whose
	// compliance was stored) or "devices" (every device's compliance was replaced).
	Kind string
	ID   string
}

// ChangeFeed is implemented by a store that several replicas may share. Each
// replica keeps the whole decision engine in memory; it follows the change log so
// that what another replica wrote decides here too.
type ChangeFeed interface {
	// Replicated reports whether other processes may write the store (false: this
	// process makes every change itself and need not follow anything).
	Replicated() bool
	// ChangeHead is the committed head revision of the directory and policy
	// change log (the revisions ExpectChanges speaks of).
	ChangeHead(ctx context.Context) (int64, error)
	// WatchChanges replays the directory and policy changes after start, then
	// tails live ones; errors are those of eventlog's Watch (ErrCompacted when
	// start was compacted).
	WatchChanges(ctx context.Context, start int64, onChange func(Change) error, onProgress func(rev int64) error) error
	// DeviceChangeHead and WatchDeviceChanges are the same for the log of device
	// compliance changes (kinds ChangeDevice and ChangeDevices).
	DeviceChangeHead(ctx context.Context) (int64, error)
	WatchDeviceChanges(ctx context.Context, start int64, onChange func(Change) error, onProgress func(rev int64) error) error
	// LoadDevice returns one stored device compliance (ErrNotFound when absent).
	LoadDevice(ctx context.Context, id string) (*DeviceCompliance, error)
	// FeedContact returns the compliance cursor as the consumer (on whichever
	// replica leads) last saved it.
	FeedContact(ctx context.Context) (FeedContact, error)
	// NoteRiskAsOf records the compliance service's risk_as_of that this
	// process's consumer last heard, stored with its next cursor writes.
	NoteRiskAsOf(t time.Time)
}

// FeedContact is the consumer leader's last contact with the compliance feed.
type FeedContact struct {
	Revision int64
	// Contact is when it saved the cursor, RiskAsOf the compliance service's
	// risk_as_of it had heard (zero times: unknown).
	Contact, RiskAsOf time.Time
}

type expectKey struct{}

type expectation struct {
	rev  int64
	took *int64
}

// ExpectChanges returns ctx for one admin write that this replica validated
// against its in-memory state as of change revision rev. A shared store refuses
// the write with ErrEtagMismatch, storing nothing, when another replica's change
// has committed since rev; once the write commits it sets *took to the change
// revision the write took.
func ExpectChanges(ctx context.Context, rev int64, took *int64) context.Context {
	return context.WithValue(ctx, expectKey{}, expectation{rev, took})
}

// ExpectedChanges returns what ExpectChanges put in ctx (ok false when nothing).
func ExpectedChanges(ctx context.Context) (rev int64, took *int64, ok bool) {
	e, ok := ctx.Value(expectKey{}).(expectation)
	return e.rev, e.took, ok
}
