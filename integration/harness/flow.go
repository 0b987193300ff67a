package harness

import (
	"context"
	"fmt"
	"slices"
	"strings"
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

// The fixture every flow uses: a user, an application, a compliance policy "risk at or
// under medium" for every device, and a Conditional Access policy "the app requires a
// compliant device".
const (
	User             = "u-1"
	App              = "payroll"
	CompliancePolicy = "max-medium"
	CAPolicy         = "payroll-compliant"
	// ManualGroup is a device group whose investigations take no action
	// (automation level NONE): its devices stay blocked until a person acts.
	ManualGroup = "manual"
	// AutoGroup is a device group with full automation (the default).
	AutoGroup = "auto"
	// SemiGroup is a device group whose remediation actions wait for a SecOps
	// approval (automation level SEMI).
	SemiGroup = "semi"
)

// Wait is how long a step of a flow may take before the test fails.
const Wait = 20 * time.Second

// Setup creates the fixture.
func (s *Suite) Setup(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	must(t, "CreateUser", err2(s.Directory.CreateUser(ctx, &accessv1.CreateUserRequest{User: &accessv1.User{UserId: User, DisplayName: "Ada"}})))
	must(t, "CreateApplication", err2(s.Directory.CreateApplication(ctx, &accessv1.CreateApplicationRequest{Application: &accessv1.Application{ApplicationId: App, DisplayName: "Payroll"}})))
	must(t, "CreateCompliancePolicy", err2(s.CompliancePolicies.CreateCompliancePolicy(ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
		PolicyId: CompliancePolicy, DisplayName: "Device risk at or under medium",
		MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_MEDIUM, Assignment: &compliancev1.PolicyAssignment{AllDevices: true},
	}})))
	must(t, "CreatePolicy", err2(s.CAPolicies.CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: &accessv1.ConditionalAccessPolicy{
		PolicyId: CAPolicy, DisplayName: "Payroll requires a compliant device", State: accessv1.PolicyState_POLICY_STATE_ENABLED,
		Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{Include: []string{App}},
		GrantControls: &accessv1.GrantControls{Require: []accessv1.GrantControl{accessv1.GrantControl_GRANT_CONTROL_COMPLIANT_DEVICE}},
	}})))
	must(t, "SetAutomationLevel", err2(s.Remediation.SetAutomationLevel(ctx, &remediationv1.SetAutomationLevelRequest{Setting: &remediationv1.AutomationLevelSetting{
		DeviceGroup: ManualGroup, Level: remediationv1.AutomationLevel_AUTOMATION_LEVEL_NONE,
	}})))
	must(t, "SetAutomationLevel", err2(s.Remediation.SetAutomationLevel(ctx, &remediationv1.SetAutomationLevelRequest{Setting: &remediationv1.AutomationLevelSetting{
		DeviceGroup: SemiGroup, Level: remediationv1.AutomationLevel_AUTOMATION_LEVEL_SEMI,
	}})))
}

// Enroll enrolls a device in a group and waits until access allows it.
func (s *Suite) Enroll(t testing.TB, deviceID, group string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	// A replica killed under the call (the chaos tests kill compliance leaders) ends it
	// UNAVAILABLE, committed or not: try again, as an admin would, until the replica is
	// back; ALREADY_EXISTS on a second try means the first one committed.
	for try := 1; ; try++ {
		_, err := s.Devices.EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
			DeviceId: deviceID, DisplayName: "Laptop " + deviceID, Platform: commonv1.Platform_PLATFORM_WINDOWS,
			OsVersion: "10.0.22631", OwnerUserId: User, Groups: []string{group},
		}})
		if status.Code(err) == codes.Unavailable && ctx.Err() == nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if status.Code(err) == codes.AlreadyExists && try > 1 {
			err = nil
		}
		must(t, "EnrollDevice", err)
		break
	}
	s.WaitDecision(t, deviceID, accessv1.Decision_DECISION_ALLOW)
}

// ReportAlert reports a HIGH alert on a device, as a sensor would.
func (s *Suite) ReportAlert(t testing.TB, alertID, deviceID string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	must(t, "ReportAlert", err2(s.Risk.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
		AlertId: alertID, DeviceId: deviceID, Severity: commonv1.Severity_SEVERITY_HIGH, Title: "Malicious file opened",
		Category: "Malware", DetectionSource: "integration-test",
	}})))
}

// ResolveAlert resolves an alert by hand.
func (s *Suite) ResolveAlert(t testing.TB, alertID string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	must(t, "ResolveAlert", err2(s.Risk.ResolveAlert(ctx, &riskv1.ResolveAlertRequest{
		AlertId: alertID, Classification: riskv1.AlertClassification_ALERT_CLASSIFICATION_TRUE_POSITIVE, Comment: "cleaned by hand",
	})))
}

// Evaluate asks the access service for a decision on the fixture's user and app.
func (s *Suite) Evaluate(ctx context.Context, deviceID string) (*accessv1.EvaluateAccessResponse, error) {
	return s.Access.EvaluateAccess(ctx, &accessv1.EvaluateAccessRequest{UserId: User, DeviceId: deviceID, ApplicationId: App})
}

// WaitDecision waits until EvaluateAccess gives want for the device, and returns it.
func (s *Suite) WaitDecision(t testing.TB, deviceID string, want accessv1.Decision) *accessv1.EvaluateAccessResponse {
	t.Helper()
	var got *accessv1.EvaluateAccessResponse
	Eventually(t, fmt.Sprintf("access %s for %s", want, deviceID), func(ctx context.Context) (bool, string) {
		r, err := s.Evaluate(ctx, deviceID)
		if err != nil {
			return false, err.Error()
		}
		got = r
		return r.GetDecision() == want, fmt.Sprintf("decision %s, reasons %v, compliance %v", r.GetDecision(), r.GetReasons(), r.GetDeviceCompliance())
	})
	return got
}

// WaitRisk waits until the device's risk level is want.
func (s *Suite) WaitRisk(t testing.TB, deviceID string, want commonv1.RiskLevel) *riskv1.DeviceRisk {
	t.Helper()
	var got *riskv1.DeviceRisk
	Eventually(t, fmt.Sprintf("risk %s for %s", want, deviceID), func(ctx context.Context) (bool, string) {
		r, err := s.Risk.GetDeviceRisk(ctx, &riskv1.GetDeviceRiskRequest{DeviceId: deviceID})
		if status.Code(err) == codes.NotFound && want == commonv1.RiskLevel_RISK_LEVEL_NONE {
			return true, ""
		}
		if err != nil {
			return false, err.Error()
		}
		got = r.GetDeviceRisk()
		return got.GetLevel() == want, fmt.Sprintf("risk %v", got)
	})
	return got
}

// WaitCompliance waits until the device's compliance state is want.
func (s *Suite) WaitCompliance(t testing.TB, deviceID string, want commonv1.ComplianceState) *compliancev1.DeviceCompliance {
	t.Helper()
	var got *compliancev1.DeviceCompliance
	Eventually(t, fmt.Sprintf("compliance %s for %s", want, deviceID), func(ctx context.Context) (bool, string) {
		r, err := s.Compliance.GetDeviceCompliance(ctx, &compliancev1.GetDeviceComplianceRequest{DeviceId: deviceID})
		if err != nil {
			return false, err.Error()
		}
		got = r.GetDeviceCompliance()
		return got.GetState() == want, fmt.Sprintf("compliance %v", got)
	})
	return got
}

// WaitInvestigation waits until an investigation of the device satisfies cond.
func (s *Suite) WaitInvestigation(t testing.TB, deviceID, what string, cond func(*remediationv1.Investigation) bool) *remediationv1.Investigation {
	t.Helper()
	var got *remediationv1.Investigation
	Eventually(t, what+" for "+deviceID, func(ctx context.Context) (bool, string) {
		r, err := s.Remediation.ListInvestigations(ctx, &remediationv1.ListInvestigationsRequest{DeviceId: deviceID})
		if err != nil {
			return false, err.Error()
		}
		for _, inv := range r.GetInvestigations() {
			full, err := s.Remediation.GetInvestigation(ctx, &remediationv1.GetInvestigationRequest{InvestigationId: inv.GetInvestigationId()})
			if err != nil {
				return false, err.Error()
			}
			if cond(full.GetInvestigation()) {
				got = full.GetInvestigation()
				return true, ""
			}
		}
		return false, fmt.Sprintf("investigations %v", r.GetInvestigations())
	})
	return got
}

// WaitAlerts waits until the device has alerts and every one satisfies cond; it
// returns them.
func (s *Suite) WaitAlerts(t testing.TB, deviceID, what string, cond func(*riskv1.Alert) bool) []*riskv1.Alert {
	t.Helper()
	var got []*riskv1.Alert
	Eventually(t, what+" for "+deviceID, func(ctx context.Context) (bool, string) {
		r, err := s.Risk.ListAlerts(ctx, &riskv1.ListAlertsRequest{DeviceId: deviceID})
		if err != nil {
			return false, err.Error()
		}
		got = r.GetAlerts()
		return len(got) > 0 && !slices.ContainsFunc(got, func(a *riskv1.Alert) bool { return !cond(a) }), fmt.Sprintf("alerts %v", got)
	})
	return got
}

// HasReason reports whether a decision carries the reason code.
func HasReason(r *accessv1.EvaluateAccessResponse, code string) bool {
	return slices.ContainsFunc(r.GetReasons(), func(x *accessv1.Reason) bool { return x.GetCode() == code })
}

// Eventually calls check until it returns true, at most Wait; the test fails with the
// last explanation otherwise. Each check gets a short deadline of its own.
func Eventually(t testing.TB, what string, check func(ctx context.Context) (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(Wait)
	var why string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ok, w := check(ctx)
		cancel()
		if ok {
			return
		}
		why = w
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s; last: %s", Wait, what, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func err2[T any](_ T, err error) error { return err }

func must(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// State describes what the suite holds, for a failing test's log: every device's
// risk, compliance, alerts and investigations (with their actions), and the agents.
// A service that does not answer is named with its error.
func (s *Suite) State(ctx context.Context) string {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	if s.Devices == nil || s.Risk == nil || s.Compliance == nil || s.Remediation == nil {
		// A process failed before the suite dialled its clients: its log says why.
		line("the suite's clients were not dialled yet (a process failed to start)")
		return b.String()
	}
	devs, err := s.Devices.ListDevices(ctx, &compliancev1.ListDevicesRequest{PageSize: 100})
	if err != nil {
		line("devices: %v", err)
	}
	for _, d := range devs.GetDevices() {
		id := d.GetDeviceId()
		line("device %s groups %v", id, d.GetGroups())
		if r, err := s.Risk.GetDeviceRisk(ctx, &riskv1.GetDeviceRiskRequest{DeviceId: id}); err != nil {
			line("  risk: %v", status.Code(err))
		} else {
			line("  risk %s (revision %d)", r.GetDeviceRisk().GetLevel(), r.GetDeviceRisk().GetRevision())
		}
		if c, err := s.Compliance.GetDeviceCompliance(ctx, &compliancev1.GetDeviceComplianceRequest{DeviceId: id}); err != nil {
			line("  compliance: %v", err)
		} else {
			line("  compliance %s", c.GetDeviceCompliance().GetState())
		}
		if r, err := s.Evaluate(ctx, id); err != nil {
			line("  access: %v", err)
		} else {
			line("  access %s reasons %v", r.GetDecision(), r.GetReasons())
		}
		if as, err := s.Risk.ListAlerts(ctx, &riskv1.ListAlertsRequest{DeviceId: id}); err != nil {
			line("  alerts: %v", err)
		} else {
			for _, a := range as.GetAlerts() {
				line("  alert %s %s %s resolved_by=%q investigation=%q evidence=%v", a.GetAlertId(), a.GetSeverity(), a.GetStatus(), a.GetResolvedBy(), a.GetInvestigationId(), a.GetEvidence())
			}
		}
		invs, err := s.Remediation.ListInvestigations(ctx, &remediationv1.ListInvestigationsRequest{DeviceId: id})
		if err != nil {
			line("  investigations: %v", err)
		}
		for _, inv := range invs.GetInvestigations() {
			full, err := s.Remediation.GetInvestigation(ctx, &remediationv1.GetInvestigationRequest{InvestigationId: inv.GetInvestigationId()})
			if err != nil {
				line("  investigation %s: %v", inv.GetInvestigationId(), err)
				continue
			}
			i := full.GetInvestigation()
			line("  investigation %s %s level %s alerts %v reason %q", i.GetInvestigationId(), i.GetState(), i.GetAutomationLevel(), i.GetAlertIds(), i.GetReason())
			for _, a := range i.GetActions() {
				line("    action %s %s %s target=%v result=%q approval=%v", a.GetActionId(), a.GetType(), a.GetState(), a.GetTarget(), a.GetResult(), a.GetApproval())
			}
		}
	}
	if ags, err := s.Remediation.ListAgents(ctx, &remediationv1.ListAgentsRequest{}); err != nil {
		line("agents: %v", err)
	} else {
		for _, a := range ags.GetAgents() {
			line("agent %s %s", a.GetDeviceId(), a.GetHealth())
		}
	}
	return b.String()
}
