package integration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/integration/harness"
	"github.com/condaccess/condaccess/internal/agent"
)

func sha256Hex(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// TestAgentActsOnlyOnItsOwnEvidence plays issue 11's endpoint attacks with real
// processes (development mode, whose alerts are not configured to count as the
// device's own: reporter DEVELOPMENT, as a static sensor's would be):
//   - a HIGH alert naming a file outside the agent's detection roots opens an
//     investigation whose action waits for approval under FULL automation; once an
//     administrator approves that exact path the agent quarantines it;
//   - a quarantine of a file whose hash differs from the evidence is refused by the
//     agent even when approved, and the file stays;
//   - a restore through a parent folder replaced by a symbolic link is refused and the
//     file stays in quarantine.
func TestAgentActsOnlyOnItsOwnEvidence(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: starts real processes")
	}
	s := harness.StartSuite(t, harness.Options{UntrustedDevReporter: true})
	s.Setup(t)
	const dev = "dev-own"
	s.Enroll(t, dev, "staff") // FULL automation: the default
	ctx := t.Context()
	watch, quarantine := filepath.Join(s.Dir, "watch-"+dev), filepath.Join(s.Dir, "quarantine-"+dev)
	outside, elsewhere := filepath.Join(s.Dir, "outside"), filepath.Join(s.Dir, "elsewhere")
	for _, d := range []string{filepath.Join(watch, "sub"), outside, elsewhere} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s.StartAgent(t, harness.AgentOptions{DeviceID: dev, WatchDir: watch, QuarantineDir: quarantine})
	harness.Eventually(t, "the agent's hello with its roots", func(ctx context.Context) (bool, string) {
		r, err := s.Remediation.ListAgents(ctx, &remediationv1.ListAgentsRequest{})
		if err != nil {
			return false, err.Error()
		}
		for _, a := range r.GetAgents() {
			if a.GetDeviceId() == dev && a.GetHealth() == remediationv1.AgentHealth_AGENT_HEALTH_HEALTHY {
				return true, ""
			}
		}
		return false, fmt.Sprintf("agents %v", r.GetAgents())
	})

	actionOn := func(path string) func(*remediationv1.Investigation) *remediationv1.Action {
		return func(inv *remediationv1.Investigation) *remediationv1.Action {
			for _, a := range inv.GetActions() {
				if a.GetTarget().GetFile().GetPath() == path && a.GetType() == remediationv1.ActionType_ACTION_TYPE_QUARANTINE_FILE {
					return a
				}
			}
			return nil
		}
	}
	waitAction := func(id, what string, cond func(*remediationv1.Action) bool) *remediationv1.Action {
		t.Helper()
		var got *remediationv1.Action
		harness.Eventually(t, what, func(ctx context.Context) (bool, string) {
			r, err := s.Remediation.GetAction(ctx, &remediationv1.GetActionRequest{ActionId: id})
			if err != nil {
				return false, err.Error()
			}
			got = r.GetAction()
			return cond(got), fmt.Sprintf("action %v", got)
		})
		return got
	}
	approve := func(id string) {
		t.Helper()
		if _, err := s.Remediation.ApproveAction(ctx, &remediationv1.ApproveActionRequest{ActionId: id, Comment: "checked by hand"}); err != nil {
			t.Fatal(err)
		}
	}
	report := func(id string, ev *commonv1.FileEvidence) {
		t.Helper()
		_, err := s.Risk.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
			AlertId: id, DeviceId: dev, Severity: commonv1.Severity_SEVERITY_HIGH, Title: "SIEM detection",
			DetectionSource: "siem", Evidence: []*commonv1.Evidence{{Kind: &commonv1.Evidence_File{File: ev}}},
		}})
		if err != nil {
			t.Fatal(err)
		}
	}

	// 1. A HIGH alert naming a file outside the roots: the action waits for approval.
	outsideFile := filepath.Join(outside, "payroll.xlsx")
	outsideContent := []byte("quarterly figures")
	if err := os.WriteFile(outsideFile, outsideContent, 0o644); err != nil {
		t.Fatal(err)
	}
	report("siem-outside", &commonv1.FileEvidence{Path: outsideFile, Sha256: sha256Hex(outsideContent)})
	inv := s.WaitInvestigation(t, dev, "an action on the outside file", func(inv *remediationv1.Investigation) bool { return actionOn(outsideFile)(inv) != nil })
	out := actionOn(outsideFile)(inv)
	if inv.GetAutomationLevel() != remediationv1.AutomationLevel_AUTOMATION_LEVEL_FULL || out.GetState() != remediationv1.ActionState_ACTION_STATE_PENDING_APPROVAL ||
		!strings.Contains(out.GetApprovalReason(), "not by the device's own identity") {
		t.Fatalf("investigation level %v, action %v: want FULL and the action waiting for approval because of its reporter", inv.GetAutomationLevel(), out)
	}
	if _, err := os.Stat(outsideFile); err != nil {
		t.Fatalf("the outside file was touched before any approval: %v", err)
	}

	// 2. A quarantine of a file whose hash differs is refused by the agent, even approved.
	changed := filepath.Join(watch, "notes.txt")
	if err := os.WriteFile(changed, []byte("edited since"), 0o644); err != nil {
		t.Fatal(err)
	}
	report("siem-changed", &commonv1.FileEvidence{Path: changed, Sha256: sha256Hex([]byte("as the sensor saw it"))})
	inv = s.WaitInvestigation(t, dev, "an action on the changed file", func(inv *remediationv1.Investigation) bool { return actionOn(changed)(inv) != nil })
	ch := actionOn(changed)(inv)
	approve(ch.GetActionId())
	ch = waitAction(ch.GetActionId(), "the agent's refusal of a changed file", func(a *remediationv1.Action) bool {
		return a.GetState() == remediationv1.ActionState_ACTION_STATE_FAILED
	})
	if !strings.Contains(ch.GetResult(), "the file changed") {
		t.Errorf("result %q, want the agent to say the file changed", ch.GetResult())
	}
	if got, err := os.ReadFile(changed); err != nil || string(got) != "edited since" {
		t.Errorf("the changed file: %q, %v; want it untouched", got, err)
	}

	// The approved outside file: the administrator approved that exact path.
	approve(out.GetActionId())
	waitAction(out.GetActionId(), "the approved quarantine of the outside file", func(a *remediationv1.Action) bool {
		return a.GetState() == remediationv1.ActionState_ACTION_STATE_SUCCEEDED
	})
	if _, err := os.Stat(outsideFile); !os.IsNotExist(err) {
		t.Errorf("the approved outside file is still there: %v", err)
	}

	// 3. The agent's own detection, quarantined, then restored through a symlinked parent.
	evil := filepath.Join(watch, "sub", "invoice.docm")
	if err := os.WriteFile(evil, agent.EICAR(), 0o644); err != nil {
		t.Fatal(err)
	}
	inv = s.WaitInvestigation(t, dev, "an action on the detected file", func(inv *remediationv1.Investigation) bool { return actionOn(evil)(inv) != nil })
	q := actionOn(evil)(inv)
	if q.GetState() == remediationv1.ActionState_ACTION_STATE_PENDING_APPROVAL {
		approve(q.GetActionId()) // development mode is not configured as the device
	}
	q = waitAction(q.GetActionId(), "the quarantine of the detected file", func(a *remediationv1.Action) bool {
		return a.GetState() == remediationv1.ActionState_ACTION_STATE_SUCCEEDED
	})
	data := filepath.Join(quarantine, q.GetQuarantineId()+".quarantined")
	if _, err := os.Stat(data); err != nil {
		t.Fatalf("quarantined file: %v", err)
	}
	if err := os.Rename(filepath.Join(watch, "sub"), filepath.Join(watch, "sub.old")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, filepath.Join(watch, "sub")); err != nil {
		t.Fatal(err)
	}
	undo, err := s.Remediation.UndoAction(ctx, &remediationv1.UndoActionRequest{ActionId: q.GetActionId(), Comment: "false positive"})
	if err != nil {
		t.Fatal(err)
	}
	r := waitAction(undo.GetRestoreAction().GetActionId(), "the refused restore", func(a *remediationv1.Action) bool {
		return a.GetState() == remediationv1.ActionState_ACTION_STATE_FAILED
	})
	if !strings.Contains(r.GetResult(), "symbolic link") || !strings.Contains(r.GetResult(), "stays in quarantine") {
		t.Errorf("restore result %q, want a refusal because of the symbolic link", r.GetResult())
	}
	if _, err := os.Stat(data); err != nil {
		t.Errorf("the file left quarantine: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(elsewhere, "invoice.docm")); !os.IsNotExist(err) {
		t.Errorf("the restore wrote through the symbolic link: %v", err)
	}
	if got := waitAction(q.GetActionId(), "the quarantine still in effect", func(*remediationv1.Action) bool { return true }); got.GetState() != remediationv1.ActionState_ACTION_STATE_SUCCEEDED {
		t.Errorf("the quarantine action is %v after a refused undo, want SUCCEEDED", got.GetState())
	}
}
