package access

import (
	"context"
	"time"
)

// Change is one entry of a shared store's change log: what an admin change or the
// compliance consumer wrote, for the other replicas to reload.
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
	// ChangeHead is the change log's committed head revision.
	ChangeHead(ctx context.Context) (int64, error)
	// WatchChanges replays the changes after start, then tails live ones; errors
	// are those of eventlog's Watch (OUT_OF_RANGE when start was compacted).
	WatchChanges(ctx context.Context, start int64, onChange func(Change) error, onProgress func(rev int64) error) error
	// LoadDevice returns one stored device compliance (ErrNotFound when absent).
	LoadDevice(ctx context.Context, id string) (*DeviceCompliance, error)
	// FeedContact returns the compliance cursor and when the consumer (on whichever
	// replica leads) last saved it; the zero time when unknown.
	FeedContact(ctx context.Context) (rev int64, contact time.Time, err error)
}
