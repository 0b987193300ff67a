package main

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
)

// TestWatchDeviceFilter: each of the four event streams with device_id replays and
// tails only that device's events (the other device's are filtered by the server) and
// still ends its replay with a progress message; without the filter both devices'
// events come; an over-long device id is INVALID_ARGUMENT.
func TestWatchDeviceFilter(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, conn := startConsoleSuite(t, ctx)
	access := accessv1.NewAccessServiceClient(conn)
	waitDecision(t, ctx, access, accessv1.Decision_DECISION_ALLOW) // dev-1: a session opens
	if _, err := compliancev1.NewDeviceServiceClient(conn).EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
		DeviceId: "dev-2", DisplayName: "Other", Platform: commonv1.Platform_PLATFORM_WINDOWS, OsVersion: "10.0.22631", OwnerUserId: "u-1", Groups: []string{"finance"}}}); err != nil {
		t.Fatal(err)
	}
	risk := riskv1.NewRiskServiceClient(conn)
	for _, d := range []string{"dev-1", "dev-2"} {
		if _, err := risk.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{AlertId: "a-" + d, DeviceId: d, Severity: commonv1.Severity_SEVERITY_HIGH, Title: "x"}}); err != nil {
			t.Fatal(err)
		}
	}
	waitDecision(t, ctx, access, accessv1.Decision_DECISION_BLOCK) // dev-1: its session is revoked
	compliance := compliancev1.NewComplianceServiceClient(conn)
	remediation := remediationv1.NewRemediationServiceClient(conn)
	// Wait, on the investigation stream, until both devices' investigations are open.
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	inv, err := remediation.WatchInvestigationEvents(wctx, &remediationv1.WatchInvestigationEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for opened := map[string]bool{}; !opened["dev-1"] || !opened["dev-2"]; {
		m, err := inv.Recv()
		if err != nil {
			t.Fatalf("waiting for both investigations: %v (seen %v)", err, opened)
		}
		if d := m.GetEvent().GetInvestigationChanged().GetInvestigation().GetDeviceId(); d != "" {
			opened[d] = true
		}
	}
	wcancel()

	// replay reads a stream until its first progress message and returns the device
	// ids of the events before it.
	type recv func() (devices []string, progress bool, err error)
	replay := func(t *testing.T, r recv) []string {
		t.Helper()
		var out []string
		for {
			ds, progress, err := r()
			if err != nil {
				t.Fatalf("stream: %v", err)
			}
			if progress {
				return out
			}
			out = append(out, ds...)
		}
	}
	open := map[string]func(ctx context.Context, device string) (recv, error){
		"risk": func(ctx context.Context, device string) (recv, error) {
			s, err := risk.WatchRiskEvents(ctx, &riskv1.WatchRiskEventsRequest{DeviceId: device})
			return func() ([]string, bool, error) {
				if err != nil {
					return nil, false, err
				}
				m, err := s.Recv()
				e := m.GetEvent()
				return []string{e.GetDeviceRiskChanged().GetDeviceRisk().GetDeviceId() + e.GetAlertChanged().GetAlert().GetDeviceId()}, m.GetProgress() != nil, err
			}, nil
		},
		"compliance": func(ctx context.Context, device string) (recv, error) {
			s, err := compliance.WatchComplianceEvents(ctx, &compliancev1.WatchComplianceEventsRequest{DeviceId: device})
			return func() ([]string, bool, error) {
				if err != nil {
					return nil, false, err
				}
				m, err := s.Recv()
				e := m.GetEvent()
				return []string{e.GetDeviceComplianceChanged().GetDeviceCompliance().GetDeviceId() + e.GetDeviceChanged().GetDevice().GetDeviceId() + e.GetDeviceIdentityChanged().GetIdentity().GetDeviceId()}, m.GetProgress() != nil, err
			}, nil
		},
		"session": func(ctx context.Context, device string) (recv, error) {
			s, err := access.WatchSessionEvents(ctx, &accessv1.WatchSessionEventsRequest{DeviceId: device})
			return func() ([]string, bool, error) {
				if err != nil {
					return nil, false, err
				}
				m, err := s.Recv()
				e := m.GetEvent()
				return []string{e.GetSessionOpened().GetSession().GetDeviceId() + e.GetSessionRevoked().GetSession().GetDeviceId()}, m.GetProgress() != nil, err
			}, nil
		},
		"investigation": func(ctx context.Context, device string) (recv, error) {
			s, err := remediation.WatchInvestigationEvents(ctx, &remediationv1.WatchInvestigationEventsRequest{DeviceId: device})
			return func() ([]string, bool, error) {
				if err != nil {
					return nil, false, err
				}
				m, err := s.Recv()
				e := m.GetEvent()
				return []string{e.GetInvestigationChanged().GetInvestigation().GetDeviceId() + e.GetActionChanged().GetAction().GetDeviceId()}, m.GetProgress() != nil, err
			}, nil
		},
	}
	for name, o := range open {
		t.Run(name, func(t *testing.T) {
			sctx, scancel := context.WithCancel(ctx)
			defer scancel()
			r, _ := o(sctx, "dev-1")
			got := replay(t, r)
			if len(got) == 0 {
				t.Fatalf("no dev-1 event")
			}
			for _, d := range got {
				if d != "dev-1" {
					t.Errorf("filtered to dev-1, got an event of %q (all: %v)", d, got)
				}
			}
			if name != "session" { // dev-2 had no sign-in
				r, _ := o(sctx, "")
				all := replay(t, r)
				seen := map[string]bool{}
				for _, d := range all {
					seen[d] = true
				}
				if !seen["dev-1"] || !seen["dev-2"] {
					t.Errorf("unfiltered stream has devices %v, want dev-1 and dev-2", seen)
				}
			}
			r, _ = o(sctx, string(make([]byte, 129)))
			if _, _, err := r(); status.Code(err) != codes.InvalidArgument {
				t.Errorf("a 129-byte device id = %v, want INVALID_ARGUMENT", err)
			}
		})
	}
}
