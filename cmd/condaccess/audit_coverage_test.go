package main

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	auditv1 "github.com/condaccess/condaccess/gen/go/condaccess/audit/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/devca"
	"github.com/condaccess/condaccess/internal/pgtest"
)

// mutatingPrefixes name the RPCs that change state (AIP verbs and the custom ones).
var mutatingPrefixes = []string{"Create", "Update", "Delete", "Set", "Exclude", "Remove", "Resolve", "Approve",
	"Reject", "Undo", "Cancel", "Submit", "Start", "Enroll", "Retire", "Add", "Import", "Report", "Revoke", "Renew"}

// notAdminChanges are the mutating RPCs that are not admin changes, or cannot be
// exercised here, and why.
var notAdminChanges = map[string]string{
	"/condaccess.risk.v1.RiskService/ReportAlert":  "sensor telemetry, not an admin change (the alert itself is the record)",
	"/condaccess.risk.v1.RiskService/ReportAlerts": "sensor telemetry, not an admin change",
	"/condaccess.compliance.v1.DeviceIdentityService/EnrollDeviceIdentity": "a device's own enrollment with its single-use " +
		"token, not an admin change: the token's creation and the identity's revocation are audited, the issue is an identity event",
	"/condaccess.compliance.v1.DeviceIdentityService/RenewDeviceCertificate": "a device renewing its own certificate " +
		"(needs its device certificate, not an admin change)",
	"/condaccess.remediation.v1.RemediationService/UndoAction": "needs an agent's succeeded quarantine: its audit is checked " +
		"in remediationgrpc's TestUndoRestoresQuarantine",
}

// TestEveryAdminMutationIsAudited makes every state-changing RPC of every service (found
// in the descriptors, so a new one fails this test until it is covered) and checks that
// each left an audit event with its method. A new mutating RPC must be added to calls
// (and audited) or to notAdminChanges with the reason.
func TestEveryAdminMutationIsAudited(t *testing.T) { testEveryAdminMutationIsAudited(t, "") }

// TestEveryAdminMutationIsAuditedOnPostgres: the same with every store on PostgreSQL
// (serve --database-url): AuditService lists the events each store recorded there.
func TestEveryAdminMutationIsAuditedOnPostgres(t *testing.T) {
	testEveryAdminMutationIsAudited(t, pgtest.URL(t))
}

// testEveryAdminMutationIsAudited runs the test on the stores of databaseURL ("":
// embedded SQLite).
func testEveryAdminMutationIsAudited(t *testing.T, databaseURL string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", dataDir: t.TempDir(), services: "risk,compliance,access,remediation", stopTimeout: 5 * time.Second,
		databaseURL: databaseURL}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dir, ca := accessv1.NewDirectoryServiceClient(conn), accessv1.NewConditionalAccessPolicyServiceClient(conn)
	devs, cpol, comp := compliancev1.NewDeviceServiceClient(conn), compliancev1.NewCompliancePolicyServiceClient(conn), compliancev1.NewComplianceServiceClient(conn)
	risk, rem := riskv1.NewRiskServiceClient(conn), remediationv1.NewRemediationServiceClient(conn)
	ident := compliancev1.NewDeviceIdentityServiceClient(conn)
	mask := func(p ...string) *fieldmaskpb.FieldMask { return &fieldmaskpb.FieldMask{Paths: p} }
	file := func(p string) *commonv1.Evidence {
		return &commonv1.Evidence{Kind: &commonv1.Evidence_File{File: &commonv1.FileEvidence{Path: p, Sha256: strings.Repeat("cd", 32), SizeBytes: 68}}}
	}
	var pending []string // actions waiting for approval
	calls := []struct {
		method string
		call   func() error
	}{
		{"/condaccess.access.v1.DirectoryService/CreateUser", func() error {
			_, err := dir.CreateUser(ctx, &accessv1.CreateUserRequest{User: &accessv1.User{UserId: "u-1", DisplayName: "Ada"}})
			return err
		}},
		{"/condaccess.access.v1.DirectoryService/UpdateUser", func() error {
			_, err := dir.UpdateUser(ctx, &accessv1.UpdateUserRequest{User: &accessv1.User{UserId: "u-1", DisplayName: "Ada L."}, UpdateMask: mask("display_name")})
			return err
		}},
		{"/condaccess.access.v1.DirectoryService/CreateGroup", func() error {
			_, err := dir.CreateGroup(ctx, &accessv1.CreateGroupRequest{Group: &accessv1.Group{GroupId: "g-1", DisplayName: "G", MemberUserIds: []string{"u-1"}}})
			return err
		}},
		{"/condaccess.access.v1.DirectoryService/UpdateGroup", func() error {
			_, err := dir.UpdateGroup(ctx, &accessv1.UpdateGroupRequest{Group: &accessv1.Group{GroupId: "g-1", DisplayName: "G2"}, UpdateMask: mask("display_name")})
			return err
		}},
		{"/condaccess.access.v1.DirectoryService/DeleteGroup", func() error {
			_, err := dir.DeleteGroup(ctx, &accessv1.DeleteGroupRequest{GroupId: "g-1"})
			return err
		}},
		{"/condaccess.access.v1.DirectoryService/DeleteUser", func() error {
			_, err := dir.DeleteUser(ctx, &accessv1.DeleteUserRequest{UserId: "u-1"})
			return err
		}},
		{"/condaccess.access.v1.DirectoryService/CreateApplication", func() error {
			_, err := dir.CreateApplication(ctx, &accessv1.CreateApplicationRequest{Application: &accessv1.Application{ApplicationId: "wiki", DisplayName: "Wiki"}})
			return err
		}},
		{"/condaccess.access.v1.DirectoryService/UpdateApplication", func() error {
			_, err := dir.UpdateApplication(ctx, &accessv1.UpdateApplicationRequest{Application: &accessv1.Application{ApplicationId: "wiki", DisplayName: "Wiki 2"}, UpdateMask: mask("display_name")})
			return err
		}},
		{"/condaccess.access.v1.DirectoryService/DeleteApplication", func() error {
			_, err := dir.DeleteApplication(ctx, &accessv1.DeleteApplicationRequest{ApplicationId: "wiki"})
			return err
		}},
		{"/condaccess.access.v1.DirectoryService/ImportDirectory", func() error {
			st, err := dir.ImportDirectory(ctx)
			if err != nil {
				return err
			}
			if err := st.Send(&accessv1.ImportDirectoryRequest{Users: []*accessv1.User{{UserId: "u-2", DisplayName: "Bob"}},
				Applications: []*accessv1.Application{{ApplicationId: "payroll", DisplayName: "Payroll"}}}); err != nil {
				return err
			}
			_, err = st.CloseAndRecv()
			return err
		}},
		{"/condaccess.access.v1.ConditionalAccessPolicyService/CreatePolicy", func() error {
			_, err := ca.CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: &accessv1.ConditionalAccessPolicy{
				PolicyId: "p-1", DisplayName: "P", State: accessv1.PolicyState_POLICY_STATE_REPORT_ONLY, Users: &accessv1.UserAssignment{All: true},
				Applications: &accessv1.ApplicationAssignment{Include: []string{"payroll"}}, GrantControls: &accessv1.GrantControls{Block: true}}})
			return err
		}},
		{"/condaccess.access.v1.ConditionalAccessPolicyService/UpdatePolicy", func() error {
			_, err := ca.UpdatePolicy(ctx, &accessv1.UpdatePolicyRequest{Policy: &accessv1.ConditionalAccessPolicy{
				PolicyId: "p-1", DisplayName: "P2", State: accessv1.PolicyState_POLICY_STATE_REPORT_ONLY, Users: &accessv1.UserAssignment{All: true},
				Applications: &accessv1.ApplicationAssignment{Include: []string{"payroll"}}, GrantControls: &accessv1.GrantControls{Block: true}}})
			return err
		}},
		{"/condaccess.access.v1.ConditionalAccessPolicyService/DeletePolicy", func() error {
			_, err := ca.DeletePolicy(ctx, &accessv1.DeletePolicyRequest{PolicyId: "p-1"})
			return err
		}},
		{"/condaccess.compliance.v1.DeviceService/EnrollDevice", func() error {
			for _, id := range []string{"dev-1", "dev-2"} {
				if _, err := devs.EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{DeviceId: id, DisplayName: id,
					Platform: commonv1.Platform_PLATFORM_WINDOWS, OsVersion: "10.0.22631", OwnerUserId: "u-2", Groups: []string{"semi"}}}); err != nil {
					return err
				}
			}
			return nil
		}},
		{"/condaccess.compliance.v1.DeviceIdentityService/CreateEnrollmentToken", func() error {
			resp, err := ident.CreateEnrollmentToken(ctx, &compliancev1.CreateEnrollmentTokenRequest{DeviceId: "dev-1"})
			if err != nil {
				return err
			}
			// The device enrolls with it (not an admin change: the device's own act,
			// recorded as the identity event), so that there is an identity to revoke.
			_, csr, err := devca.NewCSR()
			if err != nil {
				return err
			}
			_, err = ident.EnrollDeviceIdentity(ctx, &compliancev1.EnrollDeviceIdentityRequest{Token: resp.GetToken(), CsrPem: string(csr)})
			return err
		}},
		{"/condaccess.compliance.v1.DeviceIdentityService/RevokeDeviceIdentity", func() error {
			_, err := ident.RevokeDeviceIdentity(ctx, &compliancev1.RevokeDeviceIdentityRequest{DeviceId: "dev-1", Reason: "lost"})
			return err
		}},
		{"/condaccess.compliance.v1.DeviceService/UpdateDevice", func() error {
			_, err := devs.UpdateDevice(ctx, &compliancev1.UpdateDeviceRequest{Device: &compliancev1.Device{DeviceId: "dev-1", DisplayName: "Laptop",
				Platform: commonv1.Platform_PLATFORM_WINDOWS}, UpdateMask: mask("display_name")})
			return err
		}},
		{"/condaccess.compliance.v1.DeviceService/RetireDevice", func() error {
			_, err := devs.RetireDevice(ctx, &compliancev1.RetireDeviceRequest{DeviceId: "dev-2"})
			return err
		}},
		{"/condaccess.compliance.v1.CompliancePolicyService/CreateCompliancePolicy", func() error {
			_, err := cpol.CreateCompliancePolicy(ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
				PolicyId: "max-medium", DisplayName: "Max medium", MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_MEDIUM, Assignment: &compliancev1.PolicyAssignment{AllDevices: true}}})
			return err
		}},
		{"/condaccess.compliance.v1.CompliancePolicyService/UpdateCompliancePolicy", func() error {
			_, err := cpol.UpdateCompliancePolicy(ctx, &compliancev1.UpdateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{PolicyId: "max-medium", DisplayName: "Max 2",
				Assignment: &compliancev1.PolicyAssignment{AllDevices: true}}, UpdateMask: mask("display_name")})
			return err
		}},
		{"/condaccess.compliance.v1.CompliancePolicyService/DeleteCompliancePolicy", func() error {
			_, err := cpol.DeleteCompliancePolicy(ctx, &compliancev1.DeleteCompliancePolicyRequest{PolicyId: "max-medium"})
			return err
		}},
		{"/condaccess.compliance.v1.ComplianceService/ExcludeDevice", func() error {
			_, err := comp.ExcludeDevice(ctx, &compliancev1.ExcludeDeviceRequest{DeviceId: "dev-1", Reason: "ticket 7"})
			return err
		}},
		{"/condaccess.compliance.v1.ComplianceService/RemoveExclusion", func() error {
			_, err := comp.RemoveExclusion(ctx, &compliancev1.RemoveExclusionRequest{DeviceId: "dev-1", Comment: "done"})
			return err
		}},
		{"/condaccess.compliance.v1.ComplianceService/UpdateComplianceSettings", func() error {
			_, err := comp.UpdateComplianceSettings(ctx, &compliancev1.UpdateComplianceSettingsRequest{Settings: &compliancev1.ComplianceSettings{DevicesWithoutPolicyCompliant: true},
				UpdateMask: mask("devices_without_policy_compliant")})
			return err
		}},
		{"/condaccess.remediation.v1.RemediationService/SetAutomationLevel", func() error {
			_, err := rem.SetAutomationLevel(ctx, &remediationv1.SetAutomationLevelRequest{Setting: &remediationv1.AutomationLevelSetting{DeviceGroup: "semi", Level: remediationv1.AutomationLevel_AUTOMATION_LEVEL_SEMI}})
			return err
		}},
		{"/condaccess.risk.v1.RiskService/UpdateAlert", func() error {
			for _, id := range []string{"a-1", "a-2"} {
				if _, err := risk.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{AlertId: id, DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_LOW,
					Title: "t", Evidence: []*commonv1.Evidence{file("/tmp/" + id)}}}); err != nil {
					return err
				}
			}
			_, err := risk.UpdateAlert(ctx, &riskv1.UpdateAlertRequest{AlertId: "a-1", AssignedTo: "ada", UpdateMask: mask("assigned_to")})
			return err
		}},
		{"/condaccess.risk.v1.RiskService/AddAlertComment", func() error {
			_, err := risk.AddAlertComment(ctx, &riskv1.AddAlertCommentRequest{AlertId: "a-1", Text: "looking"})
			return err
		}},
		{"/condaccess.remediation.v1.RemediationService/StartInvestigation", func() error {
			_, err := rem.StartInvestigation(ctx, &remediationv1.StartInvestigationRequest{DeviceId: "dev-1", AlertIds: []string{"a-1", "a-2"}})
			if err != nil {
				return err
			}
			inv, err := rem.ListActions(ctx, &remediationv1.ListActionsRequest{DeviceId: "dev-1", State: remediationv1.ActionState_ACTION_STATE_PENDING_APPROVAL})
			for _, a := range inv.GetActions() {
				pending = append(pending, a.GetActionId())
			}
			return err
		}},
		{"/condaccess.remediation.v1.RemediationService/ApproveAction", func() error {
			_, err := rem.ApproveAction(ctx, &remediationv1.ApproveActionRequest{ActionId: pending[0]})
			return err
		}},
		{"/condaccess.remediation.v1.RemediationService/RejectAction", func() error {
			_, err := rem.RejectAction(ctx, &remediationv1.RejectActionRequest{ActionId: pending[1], Comment: "no"})
			return err
		}},
		{"/condaccess.remediation.v1.RemediationService/SubmitAction", func() error {
			_, err := rem.SubmitAction(ctx, &remediationv1.SubmitActionRequest{DeviceId: "dev-1", Type: remediationv1.ActionType_ACTION_TYPE_RUN_SCAN})
			return err
		}},
		{"/condaccess.remediation.v1.RemediationService/CancelInvestigation", func() error {
			l, err := rem.ListInvestigations(ctx, &remediationv1.ListInvestigationsRequest{DeviceId: "dev-1"})
			if err != nil || len(l.GetInvestigations()) == 0 {
				return err
			}
			_, err = rem.CancelInvestigation(ctx, &remediationv1.CancelInvestigationRequest{InvestigationId: l.GetInvestigations()[0].GetInvestigationId(), Comment: "enough"})
			return err
		}},
		{"/condaccess.risk.v1.RiskService/ResolveAlert", func() error {
			_, err := risk.ResolveAlert(ctx, &riskv1.ResolveAlertRequest{AlertId: "a-2", Classification: riskv1.AlertClassification_ALERT_CLASSIFICATION_FALSE_POSITIVE})
			return err
		}},
	}
	for _, c := range calls {
		if err := c.call(); err != nil {
			t.Fatalf("%s: %v", c.method, err)
		}
	}

	// Every mutating RPC in the contracts is covered here or exempt with a reason.
	covered := map[string]bool{}
	for _, c := range calls {
		covered[c.method] = true
	}
	var mutating []string
	for _, svc := range fuzzedServices {
		for _, m := range methodsOf(t, svc) {
			name := m[strings.LastIndex(m, "/")+1:]
			if slices.ContainsFunc(mutatingPrefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
				mutating = append(mutating, m)
			}
		}
	}
	if len(mutating) < 30 {
		t.Fatalf("only %d mutating RPCs found: %v", len(mutating), mutating)
	}
	audit := auditv1.NewAuditServiceClient(conn)
	for _, m := range mutating {
		t.Run(m[strings.LastIndex(m, "/")+1:], func(t *testing.T) {
			if why, ok := notAdminChanges[m]; ok {
				t.Skipf("not audited here: %s", why)
			}
			if !covered[m] {
				t.Fatalf("%s changes state but this test does not call it: add it to calls (and audit it) or to notAdminChanges with the reason", m)
			}
			resp, err := audit.ListAuditEvents(ctx, &auditv1.ListAuditEventsRequest{Method: m})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.GetEvents()) == 0 {
				t.Fatalf("no audit event for %s", m)
			}
			for _, e := range resp.GetEvents() {
				if e.GetActor().GetSubject() != "dev" || e.GetResourceId() == "" || (e.GetBefore() == nil && e.GetAfter() == nil) {
					t.Errorf("event %v", e)
				}
			}
		})
	}
}

// methodsOf lists the full names of a service's RPCs, except server-streaming ones
// (watches and the agent channel: they change no admin state).
func methodsOf(t *testing.T, svc string) []string {
	t.Helper()
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	ms := d.(protoreflect.ServiceDescriptor).Methods()
	for i := range ms.Len() {
		if m := ms.Get(i); !m.IsStreamingServer() {
			out = append(out, "/"+svc+"/"+string(m.Name()))
		}
	}
	return out
}
