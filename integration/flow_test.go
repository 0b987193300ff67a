package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/integration/harness"
	"github.com/condaccess/condaccess/internal/agent"
	"github.com/condaccess/condaccess/internal/pgtest"
)

func TestMain(m *testing.M) {
	code := harness.Main(m)
	pgtest.Stop()
	os.Exit(code)
}

// TestFlow plays the flow with the four services as separate processes, and each of
// the three ways out of the blocked state.
func TestFlow(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: starts real processes")
	}
	s := harness.StartSuite(t, harness.Options{})
	s.Setup(t)

	t.Run("remediation by the agent, approved", func(t *testing.T) {
		playRemediationFlow(t, s, "dev-1", harness.SemiGroup)
	})

	t.Run("remediation by the agent, fully automatic", func(t *testing.T) {
		playRemediationFlow(t, s, "dev-2", harness.AutoGroup)
	})

	t.Run("resolving the alerts", func(t *testing.T) {
		const dev, alert = "dev-resolve", "a-resolve"
		s.Enroll(t, dev, harness.ManualGroup)
		s.ReportAlert(t, alert, dev)
		s.WaitRisk(t, dev, commonv1.RiskLevel_RISK_LEVEL_HIGH)
		s.WaitCompliance(t, dev, commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT)
		blocked := s.WaitDecision(t, dev, accessv1.Decision_DECISION_BLOCK)
		if !harness.HasReason(blocked, "COMPLIANT_DEVICE_REQUIRED") {
			t.Errorf("block reasons %v lack COMPLIANT_DEVICE_REQUIRED", blocked.GetReasons())
		}
		// Automation NONE: the investigation takes no action, so the device stays blocked
		// until someone resolves the alert.
		s.WaitInvestigation(t, dev, "an investigation linking the alert", func(inv *remediationv1.Investigation) bool {
			return slices.Contains(inv.GetAlertIds(), alert)
		})
		if r, err := s.Evaluate(t.Context(), dev); err != nil || r.GetDecision() != accessv1.Decision_DECISION_BLOCK {
			t.Fatalf("without remediation the device must stay blocked: %v %v", r.GetDecision(), err)
		}
		s.ResolveAlert(t, alert)
		s.WaitRisk(t, dev, commonv1.RiskLevel_RISK_LEVEL_NONE)
		s.WaitCompliance(t, dev, commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT)
		s.WaitDecision(t, dev, accessv1.Decision_DECISION_ALLOW)
	})

	t.Run("excluding the device", func(t *testing.T) {
		const dev, alert = "dev-exclude", "a-exclude"
		s.Enroll(t, dev, harness.ManualGroup)
		s.ReportAlert(t, alert, dev)
		s.WaitCompliance(t, dev, commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT)
		s.WaitDecision(t, dev, accessv1.Decision_DECISION_BLOCK)

		ctx := t.Context()
		ex, err := s.Compliance.ExcludeDevice(ctx, &compliancev1.ExcludeDeviceRequest{DeviceId: dev, Reason: "known false positive, ticket 42"})
		if err != nil {
			t.Fatal(err)
		}
		if ex.GetExclusion().GetCreatedBy() == "" {
			t.Errorf("exclusion is not audited (no created_by): %v", ex.GetExclusion())
		}
		s.WaitCompliance(t, dev, commonv1.ComplianceState_COMPLIANCE_STATE_EXCLUDED)
		allowed := s.WaitDecision(t, dev, accessv1.Decision_DECISION_ALLOW)
		if !harness.HasReason(allowed, "DEVICE_EXCLUDED") {
			t.Errorf("allow reasons %v do not say the device is excluded (DEVICE_EXCLUDED)", allowed.GetReasons())
		}
		// The alert is still active: the risk stays HIGH; ending the exclusion blocks again.
		if r, err := s.Risk.GetDeviceRisk(ctx, &riskv1.GetDeviceRiskRequest{DeviceId: dev}); err != nil || r.GetDeviceRisk().GetLevel() != commonv1.RiskLevel_RISK_LEVEL_HIGH {
			t.Errorf("risk after exclusion = %v, %v; want HIGH (exclusion changes compliance, not risk)", r.GetDeviceRisk(), err)
		}
		if _, err := s.Compliance.RemoveExclusion(ctx, &compliancev1.RemoveExclusionRequest{DeviceId: dev, Comment: "ticket closed"}); err != nil {
			t.Fatal(err)
		}
		s.WaitCompliance(t, dev, commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT)
		s.WaitDecision(t, dev, accessv1.Decision_DECISION_BLOCK)
	})
}

// playRemediationFlow plays the whole flow on a device with a real agent: EICAR file →
// alert → risk HIGH → noncompliant → access blocked and the live session revoked →
// investigation → quarantine → alerts resolved → compliant → access allowed. In
// harness.SemiGroup the quarantine waits for an approval, given once the block is
// seen; in harness.AutoGroup it is automatic. It returns the alert ids.
func playRemediationFlow(t *testing.T, s *harness.Suite, dev, group string) []string {
	t.Helper()
	s.Enroll(t, dev, group)
	ctx := t.Context()

	// An allowed access opens a session that the block must revoke.
	first, err := s.Evaluate(ctx, dev)
	if err != nil {
		t.Fatal(err)
	}
	if first.GetSessionId() == "" {
		t.Errorf("an allowed access opened no session: %v", first)
	}

	watch := filepath.Join(s.Dir, "watch-"+dev)
	quarantine := filepath.Join(s.Dir, "quarantine-"+dev)
	s.StartAgent(t, harness.AgentOptions{DeviceID: dev, WatchDir: watch, QuarantineDir: quarantine})
	harness.Eventually(t, "the agent connected", func(ctx context.Context) (bool, string) {
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

	eicar := filepath.Join(watch, "invoice.pdf.exe")
	if err := os.WriteFile(eicar, agent.EICAR(), 0o644); err != nil {
		t.Fatal(err)
	}
	alerts := s.WaitAlerts(t, dev, "an alert from the agent", func(*riskv1.Alert) bool { return true })
	var ids []string
	for _, a := range alerts {
		ids = append(ids, a.GetAlertId())
	}
	if group == harness.SemiGroup {
		// Nothing lifts the block before the approval: see it, then approve.
		s.WaitRisk(t, dev, commonv1.RiskLevel_RISK_LEVEL_HIGH)
		s.WaitCompliance(t, dev, commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT)
		blocked := s.WaitDecision(t, dev, accessv1.Decision_DECISION_BLOCK)
		if !harness.HasReason(blocked, "COMPLIANT_DEVICE_REQUIRED") {
			t.Errorf("block reasons %v lack COMPLIANT_DEVICE_REQUIRED", blocked.GetReasons())
		}
		pending := s.WaitInvestigation(t, dev, "a quarantine waiting for approval", func(inv *remediationv1.Investigation) bool {
			return inv.GetState() == remediationv1.InvestigationState_INVESTIGATION_STATE_PENDING_APPROVAL
		})
		var approved bool
		for _, a := range pending.GetActions() {
			if a.GetType() == remediationv1.ActionType_ACTION_TYPE_QUARANTINE_FILE && a.GetState() == remediationv1.ActionState_ACTION_STATE_PENDING_APPROVAL {
				if _, err := s.Remediation.ApproveAction(ctx, &remediationv1.ApproveActionRequest{ActionId: a.GetActionId(), Comment: "approved by the test"}); err != nil {
					t.Fatal(err)
				}
				approved = true
			}
		}
		if !approved {
			t.Fatalf("no pending quarantine to approve: %v", pending.GetActions())
		}
		if r, err := s.Evaluate(ctx, dev); err != nil || (r.GetDecision() != accessv1.Decision_DECISION_BLOCK && r.GetDecision() != accessv1.Decision_DECISION_ALLOW) {
			t.Fatalf("evaluate: %v %v", r, err)
		}
	}
	// With full automation the whole flow may already be over; the block is checked
	// through its lasting effects (the revoked session, the risk history) below.
	inv := s.WaitInvestigation(t, dev, "a remediated investigation", func(inv *remediationv1.Investigation) bool {
		return inv.GetState() == remediationv1.InvestigationState_INVESTIGATION_STATE_REMEDIATED
	})
	var quarantined bool
	for _, a := range inv.GetActions() {
		if a.GetType() == remediationv1.ActionType_ACTION_TYPE_QUARANTINE_FILE && a.GetState() == remediationv1.ActionState_ACTION_STATE_SUCCEEDED {
			quarantined = true
		}
	}
	if !quarantined {
		t.Errorf("remediated investigation without a succeeded quarantine: %v", inv.GetActions())
	}
	if _, err := os.Stat(eicar); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the EICAR file is still in the watched folder after quarantine (stat: %v)", err)
	}
	s.WaitAlerts(t, dev, "every alert resolved", func(a *riskv1.Alert) bool {
		return a.GetStatus() == riskv1.AlertStatus_ALERT_STATUS_RESOLVED && a.GetInvestigationId() == inv.GetInvestigationId()
	})
	s.WaitRisk(t, dev, commonv1.RiskLevel_RISK_LEVEL_NONE)
	s.WaitCompliance(t, dev, commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT)
	s.WaitDecision(t, dev, accessv1.Decision_DECISION_ALLOW)

	// The block happened: the session opened before the alert was revoked (by the
	// time the device is allowed again in one process; with replicas, a session
	// another replica stored late is revoked by the consumer leader's re-check
	// within seconds).
	harness.Eventually(t, "the session opened before the alert revoked", func(ctx context.Context) (bool, string) {
		sessions, err := s.Access.ListSessions(ctx, &accessv1.ListSessionsRequest{DeviceId: dev})
		if err != nil {
			return false, err.Error()
		}
		revoked := slices.ContainsFunc(sessions.GetSessions(), func(x *accessv1.Session) bool {
			return x.GetSessionId() == first.GetSessionId() && x.GetState() == accessv1.SessionState_SESSION_STATE_REVOKED
		})
		return revoked, fmt.Sprintf("sessions %v", sessions.GetSessions())
	})
	history, err := s.Risk.ListDeviceRiskHistory(ctx, &riskv1.ListDeviceRiskHistoryRequest{DeviceId: dev})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(history.GetChanges(), func(c *riskv1.RiskChange) bool { return c.GetLevel() == commonv1.RiskLevel_RISK_LEVEL_HIGH }) {
		t.Errorf("risk history never reached HIGH: %v", history.GetChanges())
	}
	return ids
}

// TestKillEachServiceMidFlow kills each service in turn with SIGKILL in the middle of
// the flow, restarts it, and checks the final state.
func TestKillEachServiceMidFlow(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: starts real processes")
	}
	s := harness.StartSuite(t, harness.Options{})
	s.Setup(t)

	restart := func(t *testing.T, name string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := s.Procs[name].Restart(ctx); err != nil {
			t.Fatalf("restart %s: %v", name, err)
		}
	}

	for _, name := range []string{"risk", "compliance", "access"} {
		t.Run(name, func(t *testing.T) {
			dev, alert := "dev-kill-"+name, "a-kill-"+name
			s.Enroll(t, dev, harness.ManualGroup)

			// Killed right after the alert is recorded: the change must still reach access.
			s.ReportAlert(t, alert, dev)
			restart(t, name)
			s.WaitRisk(t, dev, commonv1.RiskLevel_RISK_LEVEL_HIGH)
			s.WaitCompliance(t, dev, commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT)
			s.WaitDecision(t, dev, accessv1.Decision_DECISION_BLOCK)

			// Killed right after the alert is resolved: access must come back.
			s.ResolveAlert(t, alert)
			restart(t, name)
			s.WaitRisk(t, dev, commonv1.RiskLevel_RISK_LEVEL_NONE)
			s.WaitCompliance(t, dev, commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT)
			s.WaitDecision(t, dev, accessv1.Decision_DECISION_ALLOW)

			// Nothing applied twice or lost: the risk history has exactly one rise and one fall.
			h, err := s.Risk.ListDeviceRiskHistory(t.Context(), &riskv1.ListDeviceRiskHistoryRequest{DeviceId: dev})
			if err != nil {
				t.Fatal(err)
			}
			var levels []commonv1.RiskLevel
			for _, c := range h.GetChanges() {
				levels = append(levels, c.GetLevel())
			}
			if want := []commonv1.RiskLevel{commonv1.RiskLevel_RISK_LEVEL_NONE, commonv1.RiskLevel_RISK_LEVEL_HIGH}; !slices.Equal(levels, want) {
				t.Errorf("risk history (newest first) = %v, want %v", levels, want)
			}
		})
	}

	t.Run("remediation", func(t *testing.T) {
		const dev = "dev-kill-remediation"
		s.Enroll(t, dev, harness.AutoGroup)
		watch := filepath.Join(s.Dir, "watch-"+dev)
		s.StartAgent(t, harness.AgentOptions{DeviceID: dev, WatchDir: watch, QuarantineDir: filepath.Join(s.Dir, "quarantine-"+dev)})
		harness.Eventually(t, "the agent connected", func(ctx context.Context) (bool, string) {
			r, err := s.Remediation.ListAgents(ctx, &remediationv1.ListAgentsRequest{})
			if err != nil {
				return false, err.Error()
			}
			return slices.ContainsFunc(r.GetAgents(), func(a *remediationv1.Agent) bool {
				return a.GetDeviceId() == dev && a.GetHealth() == remediationv1.AgentHealth_AGENT_HEALTH_HEALTHY
			}), fmt.Sprintf("agents %v", r.GetAgents())
		})
		if err := os.WriteFile(filepath.Join(watch, "eicar.com"), agent.EICAR(), 0o644); err != nil {
			t.Fatal(err)
		}
		// Killed as soon as the alert exists, while the investigation starts.
		s.WaitAlerts(t, dev, "an alert from the agent", func(*riskv1.Alert) bool { return true })
		restart(t, "remediation")
		s.WaitInvestigation(t, dev, "a remediated investigation after the restart", func(inv *remediationv1.Investigation) bool {
			return inv.GetState() == remediationv1.InvestigationState_INVESTIGATION_STATE_REMEDIATED
		})
		s.WaitAlerts(t, dev, "every alert resolved", func(a *riskv1.Alert) bool { return a.GetStatus() == riskv1.AlertStatus_ALERT_STATUS_RESOLVED })
		s.WaitCompliance(t, dev, commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT)
		s.WaitDecision(t, dev, accessv1.Decision_DECISION_ALLOW)
		r, err := s.Remediation.ListInvestigations(t.Context(), &remediationv1.ListInvestigationsRequest{DeviceId: dev})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(r.GetInvestigations()); n != 1 {
			t.Errorf("%d investigations for one alert after a restart, want 1: %v", n, r.GetInvestigations())
		}
	})
}

// BenchmarkW2 measures propagation (BENCHMARK.md W2) with the four services as
// separate processes on loopback: alert reported → EvaluateAccess answers BLOCK, and
// alert resolved → ALLOW again. "sqlite" is one process per service, each on its
// embedded store; "postgres-2-replicas" is W2-pg: two replicas of each service on
// one PostgreSQL, the alert sent to the first risk replica and access asked on the
// second access replica. Run it with at least 100 runs:
//
//	go test ./integration -run '^$' -bench W2 -benchtime 150x
func BenchmarkW2(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		s := harness.StartSuite(b, harness.Options{})
		s.Setup(b)
		benchW2(b, s, s)
	})
	b.Run("postgres-2-replicas", func(b *testing.B) {
		s := harness.StartSuite(b, harness.Options{Replicas: 2, DatabaseURL: pgtest.URL(b)})
		s.Setup(b)
		benchW2(b, s, s.OnReplica(b, 1))
	})
}

// benchW2 reports alerts and resolves them through report's risk service and waits
// for the decision on eval's access service.
func benchW2(b *testing.B, report, eval *harness.Suite) {
	const dev = "dev-w2"
	report.Enroll(b, dev, harness.ManualGroup)
	eval.WaitDecision(b, dev, accessv1.Decision_DECISION_ALLOW)
	ctx := context.Background()

	waitFor := func(want accessv1.Decision) time.Time {
		deadline := time.Now().Add(harness.Wait)
		for {
			r, err := eval.Evaluate(ctx, dev)
			if err != nil {
				b.Fatal(err)
			}
			if r.GetDecision() == want {
				return time.Now()
			}
			if time.Now().After(deadline) {
				b.Fatalf("no %s after %v: %v", want, harness.Wait, r.GetReasons())
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	var block, allow []time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		alert := fmt.Sprintf("a-w2-%d", i)
		start := time.Now()
		report.ReportAlert(b, alert, dev)
		block = append(block, waitFor(accessv1.Decision_DECISION_BLOCK).Sub(start))
		start = time.Now()
		report.ResolveAlert(b, alert)
		allow = append(allow, waitFor(accessv1.Decision_DECISION_ALLOW).Sub(start))
	}
	b.StopTimer()
	pct := func(name string, d []time.Duration) {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		at := func(p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
		b.ReportMetric(float64(at(0.50).Microseconds())/1000, name+"-p50-ms")
		b.ReportMetric(float64(at(0.99).Microseconds())/1000, name+"-p99-ms")
	}
	pct("block", block)
	pct("allow", allow)
	b.ReportMetric(float64(len(block)), "runs")
}

const cliFixture = `
kind: User
spec: {userId: u-1, displayName: Ada}
---
kind: Application
spec: {applicationId: payroll, displayName: Payroll}
---
kind: CompliancePolicy
spec:
  policyId: max-medium
  displayName: Device risk at or under medium
  maxDeviceRisk: RISK_LEVEL_MEDIUM
  assignment: {allDevices: true}
---
- kind: ConditionalAccessPolicy
  spec:
    policyId: payroll-compliant
    displayName: Payroll requires a compliant device
    state: POLICY_STATE_ENABLED
    users: {all: true}
    applications: {include: [payroll]}
    grantControls: {require: [GRANT_CONTROL_COMPLIANT_DEVICE]}
- kind: Device
  spec: {deviceId: dev-cli, platform: PLATFORM_LINUX, osVersion: "6.8", ownerUserId: u-1, groups: [manual]}
`

// TestCLIAgainstTheSuite drives the flow with the condaccess admin CLI, as a script
// would (-o json), against the services running as separate processes.
func TestCLIAgainstTheSuite(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: starts real processes")
	}
	s := harness.StartSuite(t, harness.Options{})
	ctx := t.Context()
	if _, err := s.Remediation.SetAutomationLevel(ctx, &remediationv1.SetAutomationLevelRequest{Setting: &remediationv1.AutomationLevelSetting{
		DeviceGroup: harness.ManualGroup, Level: remediationv1.AutomationLevel_AUTOMATION_LEVEL_NONE,
	}}); err != nil {
		t.Fatal(err)
	}
	cli := func(t *testing.T, args ...string) string {
		t.Helper()
		args = append(args, "--risk-addr", s.Addr("risk"), "--compliance-addr", s.Addr("compliance"),
			"--access-addr", s.Addr("access"), "--remediation-addr", s.Addr("remediation"))
		cmd := exec.CommandContext(ctx, s.Bin.Condaccess, args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("condaccess %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
		}
		return stdout.String()
	}
	decision := func(t *testing.T) string {
		t.Helper()
		var r struct {
			Decision string `json:"decision"`
		}
		out := cli(t, "access", "evaluate", "--user", "u-1", "--device", "dev-cli", "--app", "payroll", "-o", "json")
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("access evaluate -o json: %v\n%s", err, out)
		}
		return r.Decision
	}
	waitDecision := func(t *testing.T, want string) {
		t.Helper()
		harness.Eventually(t, "access "+want+" through the CLI", func(context.Context) (bool, string) {
			got := decision(t)
			return got == want, got
		})
	}

	file := filepath.Join(s.Dir, "fixture.yaml")
	if err := os.WriteFile(file, []byte(cliFixture), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := cli(t, "policies", "apply", "-f", file); strings.Count(out, "created") != 5 {
		t.Fatalf("policies apply should create 5 resources:\n%s", out)
	}
	if out := cli(t, "policies", "apply", "-f", file); strings.Count(out, "updated") != 5 {
		t.Fatalf("applying again should update the 5 resources (with their etags):\n%s", out)
	}
	waitDecision(t, "DECISION_ALLOW")

	cli(t, "alerts", "report", "a-cli", "--device", "dev-cli", "--severity", "high", "--title", "Malicious file opened")
	waitDecision(t, "DECISION_BLOCK")
	if out := cli(t, "compliance", "get", "dev-cli"); !strings.Contains(out, "NONCOMPLIANT") || !strings.Contains(out, "a-cli") {
		t.Errorf("compliance get does not explain the state with its alert:\n%s", out)
	}

	// The risk stream, as a script reads it: one protojson event per line.
	var kinds []string
	for _, line := range strings.Split(strings.TrimSpace(cli(t, "watch", "risk", "-n", "2", "-o", "json")), "\n") {
		ev := &riskv1.RiskEvent{}
		if err := protojson.Unmarshal([]byte(line), ev); err != nil {
			t.Fatalf("watch -o json line is not a RiskEvent: %v\n%s", err, line)
		}
		kinds = append(kinds, fmt.Sprintf("%d:%T", ev.GetRevision(), ev.GetPayload()))
	}
	if want := []string{"1:*riskv1.RiskEvent_AlertChanged", "2:*riskv1.RiskEvent_DeviceRiskChanged"}; !slices.Equal(kinds, want) {
		t.Errorf("watch risk = %v, want %v", kinds, want)
	}

	cli(t, "alerts", "resolve", "a-cli", "--classification", "false-positive", "--comment", "test file")
	waitDecision(t, "DECISION_ALLOW")

	// A bulk import streams in chunks and says what it imported.
	if out := cli(t, "directory", "import", "--w1-scale", "small", "--chunk", "500"); !strings.Contains(out, "imported 2000 users, 100 groups, 40 applications") {
		t.Errorf("directory import: %s", out)
	}

	cli(t, "policies", "delete", "payroll-compliant")
	if out := cli(t, "policies", "list", "-o", "json"); strings.Contains(out, "payroll-compliant") || !strings.Contains(out, "max-medium") {
		t.Errorf("after delete, policies list = %s", out)
	}
}
