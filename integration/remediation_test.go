package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	"github.com/condaccess/condaccess/integration/harness"
	"github.com/condaccess/condaccess/internal/agent"
)

// TestSemiAutomationOfflineAgentAndRestart plays the SEMI flow with real processes:
// nothing is done until ApproveAction; the approved action is queued while the agent
// is down; the remediation service is killed with SIGKILL mid-investigation; when both
// come back the action runs, the alerts are resolved and access is allowed again.
func TestSemiAutomationOfflineAgentAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: starts real processes")
	}
	s := harness.StartSuite(t, harness.Options{})
	s.Setup(t)
	const dev, group = "dev-semi", "semi"
	ctx := t.Context()
	if _, err := s.Remediation.SetAutomationLevel(ctx, &remediationv1.SetAutomationLevelRequest{Setting: &remediationv1.AutomationLevelSetting{
		DeviceGroup: group, Level: remediationv1.AutomationLevel_AUTOMATION_LEVEL_SEMI,
	}}); err != nil {
		t.Fatal(err)
	}
	s.Enroll(t, dev, group)

	watch, quarantine := filepath.Join(s.Dir, "watch-"+dev), filepath.Join(s.Dir, "quarantine-"+dev)
	ag := s.StartAgent(t, harness.AgentOptions{DeviceID: dev, WatchDir: watch, QuarantineDir: quarantine})
	waitAgent := func(want remediationv1.AgentHealth) {
		harness.Eventually(t, "agent "+want.String(), func(ctx context.Context) (bool, string) {
			r, err := s.Remediation.ListAgents(ctx, &remediationv1.ListAgentsRequest{})
			if err != nil {
				return false, err.Error()
			}
			for _, a := range r.GetAgents() {
				if a.GetDeviceId() == dev && a.GetHealth() == want {
					return true, ""
				}
			}
			return false, fmt.Sprintf("agents %v", r.GetAgents())
		})
	}
	waitAgent(remediationv1.AgentHealth_AGENT_HEALTH_HEALTHY)

	file := filepath.Join(watch, "report.docm")
	if err := os.WriteFile(file, agent.EICAR(), 0o644); err != nil { // built at run time
		t.Fatal(err)
	}
	s.WaitRisk(t, dev, commonv1.RiskLevel_RISK_LEVEL_HIGH)
	s.WaitDecision(t, dev, accessv1.Decision_DECISION_BLOCK)
	inv := s.WaitInvestigation(t, dev, "an investigation waiting for approval", func(inv *remediationv1.Investigation) bool {
		return inv.GetState() == remediationv1.InvestigationState_INVESTIGATION_STATE_PENDING_APPROVAL
	})
	if inv.GetAutomationLevel() != remediationv1.AutomationLevel_AUTOMATION_LEVEL_SEMI || len(inv.GetActions()) != 1 {
		t.Fatalf("investigation %v", inv)
	}
	action := inv.GetActions()[0]
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("the file was touched before any approval: %v", err)
	}

	// The agent goes away; the approval queues the action for it.
	if err := ag.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitAgent(remediationv1.AgentHealth_AGENT_HEALTH_DISCONNECTED)
	ap, err := s.Remediation.ApproveAction(ctx, &remediationv1.ApproveActionRequest{ActionId: action.GetActionId(), Comment: "confirmed malicious"})
	if err != nil {
		t.Fatal(err)
	}
	if ap.GetAction().GetState() != remediationv1.ActionState_ACTION_STATE_QUEUED {
		t.Fatalf("approved action %v", ap.GetAction())
	}
	// The service is killed mid-investigation and comes back.
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.Procs["remediation"].Restart(rctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("the file was touched while the agent was down: %v", err)
	}
	// The agent reconnects: the queued action runs.
	if err := ag.Start(); err != nil {
		t.Fatal(err)
	}
	done := s.WaitInvestigation(t, dev, "a remediated investigation", func(inv *remediationv1.Investigation) bool {
		return inv.GetState() == remediationv1.InvestigationState_INVESTIGATION_STATE_REMEDIATED
	})
	if got := done.GetActions()[0]; got.GetState() != remediationv1.ActionState_ACTION_STATE_SUCCEEDED || got.GetApproval().GetComment() != "confirmed malicious" {
		t.Errorf("action %v", got)
	}
	s.WaitRisk(t, dev, commonv1.RiskLevel_RISK_LEVEL_NONE)
	s.WaitDecision(t, dev, accessv1.Decision_DECISION_ALLOW)
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("the file is still in the watched folder (stat: %v)", err)
	}
	if m, _ := filepath.Glob(filepath.Join(quarantine, "q-*.json")); len(m) != 1 {
		t.Errorf("quarantine sidecars %v, want one", m)
	}
}
