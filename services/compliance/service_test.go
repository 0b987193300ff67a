package compliance_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/condaccess/condaccess/services/compliance"
	"github.com/condaccess/condaccess/services/compliance/compliancegrpc"
	"github.com/condaccess/condaccess/services/compliance/compliancestore"
)

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type fixture struct {
	t     *testing.T
	ctx   context.Context
	st    *compliancestore.Store
	svc   *compliance.Service
	clock *clock
	path  string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, ctx: context.Background(), clock: &clock{now: time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)},
		path: filepath.Join(t.TempDir(), "c.db")}
	f.open()
	return f
}

// open opens the store and a Service without Run: background steps are driven by hand.
func (f *fixture) open() {
	st, err := compliancestore.Open(f.ctx, compliancestore.Options{Path: f.path, Synchronous: "NORMAL"})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { st.Close() })
	f.st = st
	f.svc = compliance.New(compliance.Config{Store: st, Encode: compliancegrpc.EncodeEvent, Now: f.clock.Now, SweepBatch: 2})
}

func (f *fixture) state(id string) compliance.State {
	f.t.Helper()
	c, err := f.svc.GetDeviceCompliance(f.ctx, id)
	if err != nil {
		f.t.Fatal(err)
	}
	return c.State
}

func (f *fixture) must(err error) {
	f.t.Helper()
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) enroll(id string) {
	f.t.Helper()
	_, err := f.svc.EnrollDevice(f.ctx, compliance.Device{ID: id, Platform: compliance.PlatformLinux, OSVersion: "6.1"})
	f.must(err)
}

// createPolicy stores a policy and runs its sweep by hand.
func (f *fixture) putPolicy(p compliance.Policy) {
	f.t.Helper()
	f.must(f.st.Update(f.ctx, func(tx compliance.Tx) error {
		p.Version = 1
		if err := tx.PutPolicy(f.ctx, &p); err != nil {
			return err
		}
		st, err := tx.Sweep(f.ctx)
		if err != nil {
			return err
		}
		return tx.PutSweep(f.ctx, compliance.SweepState{Active: true, Generation: st.Generation + 1})
	}))
}

func (f *fixture) sweep() int {
	f.t.Helper()
	steps := 0
	for {
		done, err := f.svc.SweepStep(f.ctx)
		f.must(err)
		steps++
		if done {
			return steps
		}
	}
}

func TestGraceAndExclusionDeadlines(t *testing.T) {
	f := newFixture(t)
	f.enroll("d1")
	f.putPolicy(compliance.Policy{ID: "p", DisplayName: "P", MaxDeviceRisk: compliance.RiskLow, Assignment: compliance.Assignment{AllDevices: true},
		Actions: compliance.Actions{Grace: time.Hour}})
	f.sweep()
	f.must(f.svc.ApplyRisk(f.ctx, 1, compliance.DeviceRisk{DeviceID: "d1", Level: compliance.RiskMedium, ActiveAlertIDs: []string{"m"}}))
	if got := f.state("d1"); got != compliance.StateInGrace {
		t.Fatalf("MEDIUM with 1h grace: %v, want IN_GRACE_PERIOD", got)
	}
	next, ok, err := f.st.NextEvaluation(f.ctx)
	if err != nil || !ok || !next.Equal(f.clock.Now().Add(time.Hour)) {
		t.Fatalf("NextEvaluation = %v %v %v, want in 1h", next, ok, err)
	}
	// The risk changes within the grace period: the grace keeps running from the start.
	f.clock.Add(30 * time.Minute)
	f.must(f.svc.ApplyRisk(f.ctx, 2, compliance.DeviceRisk{DeviceID: "d1", Level: compliance.RiskMedium, ActiveAlertIDs: []string{"m", "m2"}}))
	f.clock.Add(29 * time.Minute)
	if n, err := f.svc.DueStep(f.ctx); n != 0 || err != nil {
		t.Fatalf("DueStep before the deadline evaluated %d (%v)", n, err)
	}
	f.clock.Add(time.Minute)
	if n, err := f.svc.DueStep(f.ctx); n != 1 || err != nil {
		t.Fatalf("DueStep at the deadline evaluated %d (%v), want 1", n, err)
	}
	if got := f.state("d1"); got != compliance.StateNoncompliant {
		t.Fatalf("after the grace period: %v, want NONCOMPLIANT", got)
	}

	// An expiring exclusion lapses at its deadline, ended by "system".
	x, dc, err := f.svc.ExcludeDevice(f.ctx, "d1", "ticket 1", f.clock.Now().Add(10*time.Minute), "alice")
	f.must(err)
	if dc.State != compliance.StateExcluded || x.CreatedBy != "alice" {
		t.Fatalf("ExcludeDevice: %v by %q", dc.State, x.CreatedBy)
	}
	f.clock.Add(10 * time.Minute)
	if n, err := f.svc.DueStep(f.ctx); n != 1 || err != nil {
		t.Fatalf("DueStep at the exclusion's end evaluated %d (%v), want 1", n, err)
	}
	if got := f.state("d1"); got != compliance.StateNoncompliant {
		t.Fatalf("after the exclusion expired: %v, want NONCOMPLIANT", got)
	}
	xs, err := f.svc.ListExclusions(f.ctx, compliance.ExclusionFilter{DeviceID: "d1"})
	f.must(err)
	if len(xs) != 1 || xs[0].EndedBy != compliance.SystemSubject || !xs[0].EndTime.Equal(x.ExpireTime) {
		t.Fatalf("exclusion after expiry = %+v, want ended by system at its expiry", xs)
	}

	// Retiring ends an active exclusion.
	_, _, err = f.svc.ExcludeDevice(f.ctx, "d1", "ticket 2", time.Time{}, "bob")
	f.must(err)
	_, err = f.svc.RetireDevice(f.ctx, "d1")
	f.must(err)
	xs, err = f.svc.ListExclusions(f.ctx, compliance.ExclusionFilter{DeviceID: "d1", ActiveOnly: true})
	f.must(err)
	if len(xs) != 0 || f.state("d1") != compliance.StateNotEvaluated {
		t.Fatalf("after retiring: active exclusions %v, state %v", xs, f.state("d1"))
	}
}

func TestRiskEventsAppliedOnce(t *testing.T) {
	f := newFixture(t)
	f.enroll("d1")
	f.putPolicy(compliance.Policy{ID: "p", DisplayName: "P", MaxDeviceRisk: compliance.RiskMedium, Assignment: compliance.Assignment{AllDevices: true}})
	f.sweep()
	f.must(f.svc.ApplyRisk(f.ctx, 5, compliance.DeviceRisk{DeviceID: "d1", Level: compliance.RiskHigh, ActiveAlertIDs: []string{"a"}}))
	rev := f.st.Revision()
	// A replayed older event changes nothing, not even the event log.
	f.must(f.svc.ApplyRisk(f.ctx, 4, compliance.DeviceRisk{DeviceID: "d1", Level: compliance.RiskNone}))
	f.must(f.svc.ApplyRisk(f.ctx, 5, compliance.DeviceRisk{DeviceID: "d1", Level: compliance.RiskNone}))
	if got := f.state("d1"); got != compliance.StateNoncompliant || f.st.Revision() != rev {
		t.Fatalf("after replays: %v, revision %d→%d; want NONCOMPLIANT and no event", got, rev, f.st.Revision())
	}
	// Skipped events advance the cursor.
	f.must(f.svc.SkipRisk(f.ctx, 9))
	if cur, _, _ := f.svc.RiskCursor(f.ctx); cur != 9 {
		t.Fatalf("cursor %d, want 9", cur)
	}
	// A resync replaces every risk and re-evaluates in a sweep.
	f.must(f.svc.ResyncRisks(f.ctx, []compliance.DeviceRisk{{DeviceID: "other", Level: compliance.RiskLow}}, 20))
	if cur, _, _ := f.svc.RiskCursor(f.ctx); cur != 20 {
		t.Fatalf("cursor after resync %d, want 20", cur)
	}
	f.sweep()
	if got := f.state("d1"); got != compliance.StateCompliant {
		t.Fatalf("after resync without d1's risk: %v, want COMPLIANT", got)
	}
}

// TestSweepResumesAfterRestart: a sweep interrupted between batches continues where it
// stopped when the service starts again.
func TestSweepResumesAfterRestart(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"d1", "d2", "d3", "d4", "d5"} {
		f.enroll(id)
	}
	f.putPolicy(compliance.Policy{ID: "p", DisplayName: "P", MaxDeviceRisk: compliance.RiskMedium, Assignment: compliance.Assignment{AllDevices: true}})
	if done, err := f.svc.SweepStep(f.ctx); done || err != nil {
		t.Fatalf("first batch: done %v, %v", done, err)
	}
	if f.state("d1") != compliance.StateCompliant || f.state("d5") != compliance.StateNoncompliant {
		t.Fatalf("after one batch of 2: d1 %v, d5 %v", f.state("d1"), f.state("d5"))
	}
	st, err := f.st.Sweep(f.ctx)
	f.must(err)
	if !st.Active || st.After != "d2" {
		t.Fatalf("sweep state %+v, want active after d2", st)
	}
	f.st.Close()
	f.open()
	if steps := f.sweep(); steps != 2 {
		t.Errorf("resumed sweep took %d steps, want 2 (d3-d4, d5)", steps)
	}
	for _, id := range []string{"d1", "d2", "d3", "d4", "d5"} {
		if got := f.state(id); got != compliance.StateCompliant {
			t.Errorf("%s: %v, want COMPLIANT", id, got)
		}
	}
}

func TestUpdatePolicyMask(t *testing.T) {
	f := newFixture(t)
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(f.ctx)
	go func() { defer close(done); _ = f.svc.Run(ctx) }()
	defer func() { cancel(); <-done }()
	p, err := f.svc.CreatePolicy(f.ctx, compliance.Policy{ID: "p", DisplayName: "P", MaxDeviceRisk: compliance.RiskMedium,
		Assignment: compliance.Assignment{IncludeGroups: []string{"a"}, ExcludeGroups: []string{"kiosk"}},
		Actions:    compliance.Actions{Grace: time.Hour}})
	f.must(err)
	tests := []struct {
		name  string
		paths []string
		in    compliance.Policy
		check func(p *compliance.Policy) bool
		err   error
	}{
		{"one assignment sub-field keeps the others", []string{"assignment.include_groups"},
			compliance.Policy{Assignment: compliance.Assignment{IncludeGroups: []string{"b"}}},
			func(p *compliance.Policy) bool {
				return p.Assignment.IncludeGroups[0] == "b" && p.Assignment.ExcludeGroups[0] == "kiosk" && p.Actions.Grace == time.Hour
			}, nil},
		{"a whole message", []string{"actions"}, compliance.Policy{},
			func(p *compliance.Policy) bool {
				return p.Actions.Grace == 0 && p.MaxDeviceRisk == compliance.RiskMedium
			}, nil},
		{"unknown path", []string{"assignment.everyone"}, compliance.Policy{}, nil, compliance.ErrInvalid},
		{"immutable path", []string{"create_time"}, compliance.Policy{}, nil, compliance.ErrInvalid},
		{"result must stay valid", []string{"display_name"}, compliance.Policy{}, nil, compliance.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.ID = "p"
			got, err := f.svc.UpdatePolicy(f.ctx, tt.in, tt.paths, p.Etag())
			if !errors.Is(err, tt.err) {
				t.Fatalf("UpdatePolicy = %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			if !tt.check(got) {
				t.Errorf("policy after update = %+v", got)
			}
			p = got
		})
	}
	if _, err := f.svc.UpdatePolicy(f.ctx, compliance.Policy{ID: "p"}, []string{"description"}, "1"); !errors.Is(err, compliance.ErrEtagMismatch) {
		t.Errorf("stale etag: %v, want ErrEtagMismatch", err)
	}
}
