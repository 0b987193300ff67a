// Package revocation feeds a process's device revocation set (auth.Revocations) from the compliance event stream, so that every service refuses a revoked device within a second, without a CRL.
package revocation

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/consumer"
)

// Feed follows the compliance service's device identity events into Set.
type Feed struct {
	// Compliance is the compliance service's event and compliance API.
	Compliance compliancev1.ComplianceServiceClient
	// Identities lists identities when the feed (re)starts from a snapshot.
	Identities compliancev1.DeviceIdentityServiceClient
	// Set receives revocations and re-enrollments; it is marked current while the
	// feed has caught up and heard from the compliance service within StaleAfter.
	Set    *auth.Revocations
	Logger *slog.Logger
	// StaleAfter bounds how long the set stays current without contact (a progress
	// message or an event); default DefaultStaleAfter.
	StaleAfter time.Duration

	cursor atomic.Int64
	known  atomic.Bool
	c      *consumer.Consumer[*compliancev1.ComplianceEvent]
}

// DefaultStaleAfter is the default Feed.StaleAfter: a few idle progress intervals.
const DefaultStaleAfter = 5 * time.Second

// Run follows the feed until ctx ends (it replays from a listing, then watches).
// The set is not current (it refuses every device) until the first listing, and
// again whenever the feed has been silent for StaleAfter. Mark the set not current
// (SetCurrent(false)) before serving, so that no device passes before Run starts.
func (f *Feed) Run(ctx context.Context) error {
	if f.Logger == nil {
		f.Logger = slog.New(slog.DiscardHandler)
	}
	if f.StaleAfter <= 0 {
		f.StaleAfter = DefaultStaleAfter
	}
	f.Set.SetCurrent(false)
	f.c = consumer.New(consumer.Config[*compliancev1.ComplianceEvent]{
		Name:   "device-revocations",
		Source: source{f.Compliance},
		Cursor: func(context.Context) (int64, bool, error) { return f.cursor.Load(), f.known.Load(), nil },
		Resync: f.resync,
		Apply: func(_ context.Context, ev *compliancev1.ComplianceEvent, rev int64) error {
			if id := ev.GetDeviceIdentityChanged().GetIdentity(); id != nil {
				f.apply(id)
			}
			f.cursor.Store(rev)
			return nil
		},
		OnProgress: func(_ context.Context, rev int64) error { f.cursor.Store(rev); return nil },
		MinBackoff: 50 * time.Millisecond,
		MaxBackoff: time.Second,
		Logger:     f.Logger,
	})
	done := make(chan struct{})
	defer close(done)
	go f.watchStaleness(done)
	return f.c.Run(ctx)
}

// watchStaleness marks the set current while the feed caught up and heard from the
// compliance service within StaleAfter.
func (f *Feed) watchStaleness(done <-chan struct{}) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	was := false
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		st := f.c.Status()
		current := f.known.Load() && !st.LastContact.IsZero() && time.Since(st.LastContact) < f.StaleAfter
		f.Set.SetCurrent(current)
		if current != was {
			if current {
				f.Logger.Info("device revocations are current", "revision", st.Revision)
			} else {
				f.Logger.Warn("device revocations are not current: device certificates are refused until the compliance feed is back",
					"last_contact", st.LastContact)
			}
			was = current
		}
	}
}

func (f *Feed) apply(id *compliancev1.DeviceIdentity) {
	switch id.GetState() {
	case compliancev1.DeviceIdentityState_DEVICE_IDENTITY_STATE_REVOKED:
		f.Set.Revoke(id.GetDeviceId(), id.GetRevokeTime().AsTime())
		f.Logger.Info("device identity revoked", "device_id", id.GetDeviceId(), "revoke_time", id.GetRevokeTime().AsTime())
	case compliancev1.DeviceIdentityState_DEVICE_IDENTITY_STATE_ACTIVE:
		f.Set.Reissued(id.GetDeviceId())
	}
}

// resync reads the event revision first, then every identity: the listing reflects
// at least that revision, and the events after it are applied again (idempotent).
func (f *Feed) resync(ctx context.Context) (int64, error) {
	r, err := f.Compliance.ListDeviceCompliance(ctx, &compliancev1.ListDeviceComplianceRequest{PageSize: 1})
	if err != nil {
		return 0, fmt.Errorf("read revision: %w", err)
	}
	rev := r.GetRevision()
	tok := ""
	for {
		resp, err := f.Identities.ListDeviceIdentities(ctx, &compliancev1.ListDeviceIdentitiesRequest{PageSize: 1000, PageToken: tok})
		if err != nil {
			return 0, fmt.Errorf("list device identities: %w", err)
		}
		for _, id := range resp.GetIdentities() {
			f.apply(id)
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
	f.cursor.Store(rev)
	f.known.Store(true)
	return rev, nil
}

type source struct {
	c compliancev1.ComplianceServiceClient
}

func (s source) Watch(ctx context.Context, start int64) (consumer.Stream[*compliancev1.ComplianceEvent], error) {
	st, err := s.c.WatchComplianceEvents(ctx, &compliancev1.WatchComplianceEventsRequest{StartRevision: start})
	if err != nil {
		return nil, err
	}
	return stream{st}, nil
}

type stream struct {
	s compliancev1.ComplianceService_WatchComplianceEventsClient
}

func (st stream) Recv() (*compliancev1.ComplianceEvent, int64, bool, error) {
	m, err := st.s.Recv()
	if err != nil {
		return nil, 0, false, err
	}
	if p := m.GetProgress(); p != nil {
		return nil, p.GetRevision(), true, nil
	}
	if e := m.GetEvent(); e != nil {
		return e, e.GetRevision(), false, nil
	}
	return nil, 0, false, fmt.Errorf("compliance watch: empty message")
}
