package remediationgrpc_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/apierr"
)

// firstAction waits until the device's investigation has an action and returns it.
func (e *env) firstAction(device string) *remediationv1.Action {
	e.t.Helper()
	inv := e.waitInvestigation(device, func(inv *remediationv1.Investigation) bool { return len(inv.GetActions()) > 0 })
	return inv.GetActions()[0]
}

func wantAction(t *testing.T, a *remediationv1.Action, st remediationv1.ActionState, reason string) {
	t.Helper()
	if a.GetState() != st {
		t.Errorf("action state %v (reason %q), want %v", a.GetState(), a.GetApprovalReason(), st)
	}
	if reason == "" && a.GetApprovalReason() != "" || !strings.Contains(a.GetApprovalReason(), reason) {
		t.Errorf("approval reason %q, want it to say %q", a.GetApprovalReason(), reason)
	}
}

func firstWith(inv *remediationv1.Investigation, path string) *remediationv1.Action {
	for _, a := range inv.GetActions() {
		if a.GetTarget().GetFile().GetPath() == path {
			return a
		}
	}
	return nil
}

func fileAt(path, sha256 string) *commonv1.Evidence {
	return &commonv1.Evidence{Kind: &commonv1.Evidence_File{File: &commonv1.FileEvidence{Path: path, Sha256: sha256}}}
}

// TestAutomationOnlyOnOwnEvidence: under FULL automation (the default) an action runs
// without approval only when its evidence came from the device's own identity, names
// a file by SHA-256 and lies under the agent's detection roots; every other row waits
// for approval and says why.
func TestAutomationOnlyOnOwnEvidence(t *testing.T) {
	queued, pending := remediationv1.ActionState_ACTION_STATE_QUEUED, remediationv1.ActionState_ACTION_STATE_PENDING_APPROVAL
	t.Run("the device's own evidence (development mode configured as the device)", func(t *testing.T) {
		e := newEnv(t, options{})
		tests := []struct {
			name   string
			ev     *commonv1.Evidence
			state  remediationv1.ActionState
			reason string
		}{
			{"hashed file under a root runs", fileEvidence("/dl/evil.exe"), queued, ""},
			{"file outside the roots", fileAt("/etc/passwd", sha), pending, "outside the agent's detection roots"},
			{"root prefix is not a root", fileAt(watchedRoot+"-other/x", sha), pending, "outside the agent's detection roots"},
			{"dot-dot out of a root", fileAt(watchedRoot+"/../etc/shadow", sha), pending, "outside the agent's detection roots"},
			{"the root itself", fileAt(watchedRoot, sha), pending, "outside the agent's detection roots"},
			{"file without SHA-256", fileAt(watchedRoot+"/dl/x", ""), pending, "not named by its SHA-256"},
			{"process matched by name", &commonv1.Evidence{Kind: &commonv1.Evidence_Process{Process: &commonv1.ProcessEvidence{Pid: 4242, Name: "evil"}}}, pending, "killing a process always waits"},
			{"process with an image hash", &commonv1.Evidence{Kind: &commonv1.Evidence_Process{Process: &commonv1.ProcessEvidence{Pid: 4243, Name: "evil", ImageSha256: sha}}}, pending, "killing a process always waits"},
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				device := "own-" + string(rune('a'+i))
				e.report("a-"+device, device, commonv1.Severity_SEVERITY_HIGH, tt.ev)
				wantAction(t, e.firstAction(device), tt.state, tt.reason)
			})
		}
	})
	t.Run("development mode is not the device unless configured", func(t *testing.T) {
		e := newEnv(t, options{untrustedReporter: true})
		e.report("a-dev", "d-dev", commonv1.Severity_SEVERITY_HIGH, fileEvidence("/dl/evil.exe"))
		wantAction(t, e.firstAction("d-dev"), pending, "unauthenticated development-mode caller")
	})
	t.Run("certificates that are not the device", func(t *testing.T) {
		ca := newTestCA(t)
		e := newEnv(t, options{riskAuth: &riskTLS{ca: ca}})
		sensor, _ := e.riskH.Dial(t, ca.client("siem-connector", nil, commonv1.Role_ROLE_SENSOR))
		admin, _ := e.riskH.Dial(t, ca.client("ada", nil, commonv1.Role_ROLE_SECOPS_ADMIN))
		// d-up's own identity: a device certificate (it may also hold the sensor role).
		device, _ := e.riskH.Dial(t, ca.device("d-up"))
		// A device certificate of another device reporting for d-other.
		otherDevice, _ := e.riskH.Dial(t, ca.device("d-x"))
		// A role certificate carrying a device URI SAN is not that device.
		roleWithDeviceURI, _ := e.riskH.Dial(t, ca.client("d-y", []string{"spiffe://condaccess/device/cert-e"}, commonv1.Role_ROLE_SENSOR))
		tests := []struct {
			name   string
			client riskv1.RiskServiceClient
			reason string
		}{
			{"static sensor naming a hashed file under the roots", sensor, `static sensor "siem-connector"`},
			{"administrator", admin, `administrator "ada"`},
			{"role certificate with a device URI", roleWithDeviceURI, `static sensor "d-y"`},
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				device := "cert-" + string(rune('a'+i))
				e.reportWith(tt.client, "a-"+device, device, commonv1.Severity_SEVERITY_HIGH, fileEvidence("/dl/evil.exe"))
				wantAction(t, e.firstAction(device), pending, tt.reason)
			})
		}
		// Neither another device's identity nor a service may report for a device: the
		// alert is refused, so it cannot propose any action.
		for _, c := range []struct {
			name   string
			client riskv1.RiskServiceClient
			code   codes.Code
			reason string
		}{
			{"another device's identity", otherDevice, codes.PermissionDenied, "DEVICE_MISMATCH"},
			{"service", e.risk, codes.PermissionDenied, "ROLE_NOT_ALLOWED"},
		} {
			t.Run(c.name+" is refused", func(t *testing.T) {
				_, err := c.client.ReportAlert(testCtx(t), &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
					AlertId: "a-refused-" + c.reason, DeviceId: "cert-refused", Severity: commonv1.Severity_SEVERITY_HIGH,
					Title: "Malicious file", Evidence: []*commonv1.Evidence{fileEvidence("/dl/evil.exe")},
				}})
				if status.Code(err) != c.code || apierr.Reason(err) != c.reason {
					t.Fatalf("ReportAlert for another device: %v (reason %q), want %v %s", err, apierr.Reason(err), c.code, c.reason)
				}
			})
		}
		t.Run("a sensor's malicious verdict does not run the device's suspicious evidence", func(t *testing.T) {
			e.reportWith(device, "a-own-high", "d-up", commonv1.Severity_SEVERITY_HIGH, fileEvidence("/dl/b"))
			e.reportWith(device, "a-own-medium", "d-up", commonv1.Severity_SEVERITY_MEDIUM, fileEvidence("/dl/a"))
			suspicious := func(inv *remediationv1.Investigation) *remediationv1.Action {
				for _, a := range inv.GetActions() {
					if a.GetTarget().GetFile().GetPath() == watchedRoot+"/dl/a" {
						return a
					}
				}
				return nil
			}
			inv := e.waitInvestigation("d-up", func(inv *remediationv1.Investigation) bool { return suspicious(inv) != nil })
			wantAction(t, suspicious(inv), pending, "only suspicious")
			e.reportWith(sensor, "a-sensor-up", "d-up", commonv1.Severity_SEVERITY_HIGH, fileEvidence("/dl/a"))
			inv = e.waitInvestigation("d-up", func(inv *remediationv1.Investigation) bool { return len(inv.GetAlertIds()) == 3 })
			wantAction(t, suspicious(inv), pending, "not reported by the device's own identity")
			if got := firstWith(inv, watchedRoot+"/dl/b"); got.GetState() != queued {
				t.Errorf("the device's own malicious evidence: %v (%q), want QUEUED", got.GetState(), got.GetApprovalReason())
			}
		})
	})
	t.Run("a sensor's verdict while the roots are unknown does not run at hello", func(t *testing.T) {
		ca := newTestCA(t)
		e := newEnv(t, options{riskAuth: &riskTLS{ca: ca}, unknownAgents: true})
		sensor, _ := e.riskH.Dial(t, ca.client("siem-connector", nil, commonv1.Role_ROLE_SENSOR))
		device, _ := e.riskH.Dial(t, ca.device("d-w"))
		e.reportWith(device, "a-w-high", "d-w", commonv1.Severity_SEVERITY_HIGH, fileEvidence("/dl/b"))
		e.reportWith(device, "a-w-medium", "d-w", commonv1.Severity_SEVERITY_MEDIUM, fileEvidence("/dl/a"))
		e.waitInvestigation("d-w", func(inv *remediationv1.Investigation) bool { return len(inv.GetActions()) == 2 })
		e.reportWith(sensor, "a-w-sensor", "d-w", commonv1.Severity_SEVERITY_HIGH, fileEvidence("/dl/a"))
		e.waitInvestigation("d-w", func(inv *remediationv1.Investigation) bool { return len(inv.GetAlertIds()) == 3 })
		ag := e.connect("d-w")
		b := ag.command() // the device's own malicious evidence runs
		if b.GetTarget().GetFile().GetPath() != watchedRoot+"/dl/b" {
			t.Errorf("command %v, want the quarantine of %s/dl/b", b, watchedRoot)
		}
		inv := e.waitInvestigation("d-w", func(inv *remediationv1.Investigation) bool {
			a := firstWith(inv, watchedRoot+"/dl/a")
			return a != nil && !strings.Contains(a.GetApprovalReason(), "has not reported")
		})
		wantAction(t, firstWith(inv, watchedRoot+"/dl/a"), pending, "not reported by the device's own identity")
	})
	t.Run("roots unknown until the agent's hello", func(t *testing.T) {
		e := newEnv(t, options{unknownAgents: true})
		e.report("a-in", "d-in", commonv1.Severity_SEVERITY_HIGH, fileEvidence("/dl/evil.exe"))
		waiting := e.firstAction("d-in")
		wantAction(t, waiting, pending, "has not reported its detection roots")
		if got := e.connect("d-in").command(); got.GetActionId() != waiting.GetActionId() || got.GetAdminApproved() {
			t.Errorf("command %v, want %s without admin approval", got, waiting.GetActionId())
		}
		e.waitInvestigation("d-in", func(inv *remediationv1.Investigation) bool {
			return inv.GetActions()[0].GetState() == remediationv1.ActionState_ACTION_STATE_SENT && inv.GetActions()[0].GetApprovalReason() == ""
		})
		agents, err := e.client.ListAgents(testCtx(t), &remediationv1.ListAgentsRequest{})
		if err != nil || len(agents.GetAgents()) != 1 || strings.Join(agents.GetAgents()[0].GetDetectionRoots(), ",") != watchedRoot {
			t.Errorf("ListAgents = %v, %v; want d-in with detection roots [%s]", agents, err, watchedRoot)
		}

		e.report("a-out", "d-out", commonv1.Severity_SEVERITY_HIGH, fileAt("/opt/other/evil.exe", sha))
		wantAction(t, e.firstAction("d-out"), pending, "has not reported its detection roots")
		e.connect("d-out")
		inv := e.waitInvestigation("d-out", func(inv *remediationv1.Investigation) bool {
			return !strings.Contains(inv.GetActions()[0].GetApprovalReason(), "has not reported")
		})
		wantAction(t, inv.GetActions()[0], pending, "/opt/other/evil.exe lies outside the agent's detection roots")
	})
	t.Run("SEMI automation waits for approval on the device's own evidence", func(t *testing.T) {
		e := newEnv(t, options{})
		if _, err := e.client.SetAutomationLevel(testCtx(t), &remediationv1.SetAutomationLevelRequest{Setting: &remediationv1.AutomationLevelSetting{DeviceGroup: "*", Level: remediationv1.AutomationLevel_AUTOMATION_LEVEL_SEMI}}); err != nil {
			t.Fatal(err)
		}
		e.report("a-semi", "d-semi", commonv1.Severity_SEVERITY_HIGH, fileEvidence("/dl/evil.exe"))
		wantAction(t, e.firstAction("d-semi"), pending, "automation level SEMI")
	})
}
