package remediationgrpc_test

import (
	"testing"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
)

// TestWatchDeviceRemediations: the snapshot holds the devices with an open
// investigation and their state, then "synced", then each device's changes as its
// investigation waits, runs and ends; no alert or action detail is in the stream.
func TestWatchDeviceRemediations(t *testing.T) {
	e := newEnv(t, options{})
	ctx := testCtx(t)
	e.devices.groups["dev-semi"] = []string{"semi"}
	e.devices.groups["dev-auto"] = []string{"auto"}
	if _, err := e.client.SetAutomationLevel(ctx, &remediationv1.SetAutomationLevelRequest{Setting: &remediationv1.AutomationLevelSetting{DeviceGroup: "semi", Level: remediationv1.AutomationLevel_AUTOMATION_LEVEL_SEMI}}); err != nil {
		t.Fatal(err)
	}
	e.report("a-1", "dev-semi", commonv1.Severity_SEVERITY_HIGH, fileEvidence("/x"))
	pending := e.waitInvestigation("dev-semi", state(remediationv1.InvestigationState_INVESTIGATION_STATE_PENDING_APPROVAL))

	stream, err := e.client.WatchDeviceRemediations(ctx, &remediationv1.WatchDeviceRemediationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	snapshot := map[string]remediationv1.DeviceRemediationState{}
	for {
		m, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.GetSynced() {
			break
		}
		if d := m.GetDevice(); d != nil {
			snapshot[d.GetDeviceId()] = d.GetState()
		}
	}
	if want := remediationv1.DeviceRemediationState_DEVICE_REMEDIATION_STATE_PENDING_APPROVAL; len(snapshot) != 1 || snapshot["dev-semi"] != want {
		t.Fatalf("snapshot = %v, want only dev-semi %v", snapshot, want)
	}
	// next returns the next state sent for device, skipping progress and others.
	next := func(device string) remediationv1.DeviceRemediationState {
		t.Helper()
		for {
			m, err := stream.Recv()
			if err != nil {
				t.Fatalf("waiting for %s: %v", device, err)
			}
			if d := m.GetDevice(); d.GetDeviceId() == device {
				return d.GetState()
			}
		}
	}

	// FULL automation, no agent yet: the quarantine is queued, the investigation runs.
	e.report("a-2", "dev-auto", commonv1.Severity_SEVERITY_HIGH, fileEvidence("/y"))
	if got := next("dev-auto"); got != remediationv1.DeviceRemediationState_DEVICE_REMEDIATION_STATE_RUNNING {
		t.Fatalf("dev-auto = %v, want RUNNING", got)
	}
	ag := e.connect("dev-auto")
	cmd := ag.command()
	ag.result(cmd.GetActionId(), true, "q-1")
	for got := next("dev-auto"); got != remediationv1.DeviceRemediationState_DEVICE_REMEDIATION_STATE_REMEDIATED; got = next("dev-auto") {
		if got != remediationv1.DeviceRemediationState_DEVICE_REMEDIATION_STATE_RUNNING {
			t.Fatalf("dev-auto = %v before REMEDIATED", got)
		}
	}

	// A cancelled investigation leaves nothing running: NONE (the end user contacts IT).
	if _, err := e.client.CancelInvestigation(ctx, &remediationv1.CancelInvestigationRequest{InvestigationId: pending.GetInvestigationId(), Comment: "by hand"}); err != nil {
		t.Fatal(err)
	}
	if got := next("dev-semi"); got != remediationv1.DeviceRemediationState_DEVICE_REMEDIATION_STATE_NONE {
		t.Fatalf("dev-semi after cancel = %v, want NONE", got)
	}
}
