package compliance_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/condaccess/condaccess/services/compliance"
	"github.com/condaccess/condaccess/services/compliance/compliancegrpc"
	"github.com/condaccess/condaccess/services/compliance/compliancestore"
)

// TestObserveFollowsAnotherReplica: two Services on one store, as two replicas on
// one database: the leader runs the background work, the follower does not. With
// Observe running on both, a policy created on the follower returns once the
// leader has swept, and a deadline the follower stores (an exclusion that expires)
// wakes the leader's timer, which re-evaluates the device when it passes. Without
// Observe the follower's policy change waits for a sweep it never hears of.
func TestObserveFollowsAnotherReplica(t *testing.T) {
	tests := []struct {
		name    string
		observe bool
		wantErr error
	}{
		{"observing", true, nil},
		{"not observing", false, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			st, err := compliancestore.Open(ctx, compliancestore.Options{Path: filepath.Join(t.TempDir(), "c.db"), Synchronous: "NORMAL"})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			leader := compliance.New(compliance.Config{Store: st, Encode: compliancegrpc.EncodeEvent})
			follower := compliance.New(compliance.Config{Store: st, Encode: compliancegrpc.EncodeEvent})
			done := make(chan struct{})
			go func() { defer close(done); leader.Run(ctx) }()
			defer func() { cancel(); <-done }()
			if tt.observe {
				for _, s := range []*compliance.Service{leader, follower} {
					go func() {
						for ctx.Err() == nil {
							_ = s.Observe(ctx)
							select {
							case <-ctx.Done():
							case <-time.After(10 * time.Millisecond):
							}
						}
					}()
				}
			}
			if _, err := follower.EnrollDevice(ctx, compliance.Device{ID: "dev-1", DisplayName: "laptop", Platform: compliance.PlatformWindows, OSVersion: "10.0", OwnerUserID: "u-1"}); err != nil {
				t.Fatal(err)
			}
			pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
			_, err = follower.CreatePolicy(pctx, compliance.Policy{ID: "max-medium", DisplayName: "max medium", MaxDeviceRisk: compliance.RiskMedium,
				Assignment: compliance.Assignment{AllDevices: true}})
			pcancel()
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("CreatePolicy on the follower = %v, want %v", err, tt.wantErr)
			}
			if !tt.observe {
				return
			}
			if err := follower.ApplyRisk(ctx, 1, compliance.DeviceRisk{DeviceID: "dev-1", Level: compliance.RiskHigh}); err != nil {
				t.Fatal(err)
			}
			state := func() compliance.State {
				c, err := follower.GetDeviceCompliance(ctx, "dev-1")
				if err != nil {
					t.Fatal(err)
				}
				return c.State
			}
			if got := state(); got != compliance.StateNoncompliant {
				t.Fatalf("dev-1 at HIGH = %v, want NONCOMPLIANT", got)
			}
			if _, _, err := follower.ExcludeDevice(ctx, "dev-1", "travel", time.Now().Add(300*time.Millisecond), "admin"); err != nil {
				t.Fatal(err)
			}
			if got := state(); got == compliance.StateNoncompliant {
				t.Fatalf("dev-1 excluded = %v, want not NONCOMPLIANT", got)
			}
			end := time.Now().Add(5 * time.Second)
			for state() != compliance.StateNoncompliant {
				if time.Now().After(end) {
					t.Fatalf("dev-1 = %v after its exclusion expired, want NONCOMPLIANT (the leader's timer was not woken)", state())
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}
