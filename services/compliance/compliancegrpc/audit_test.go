package compliancegrpc_test

import (
	"database/sql"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
)

// With the audit log failing (an injected trigger, from a second connection), an
// admin change through the real handler fails and stores nothing: the change and its
// audit event share one transaction.
func TestAuditFailureRollsBackAdminChanges(t *testing.T) {
	e := newEnv(t)
	e.enroll("dev-1", "finance")
	// busy_timeout: the service's writer (its startup sweep) may hold the lock.
	db, err := sql.Open("sqlite", "file:"+filepath.Join(e.h.DataDir, "compliance.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(e.ctx, `CREATE TRIGGER fail_audit BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'injected audit failure'); END`); err != nil {
		t.Fatal(err)
	}

	if _, err := e.h.Compliance.ExcludeDevice(e.ctx, &compliancev1.ExcludeDeviceRequest{DeviceId: "dev-1", Reason: "ticket 1"}); status.Code(err) != codes.Internal {
		t.Errorf("ExcludeDevice with a failing audit log = %v, want INTERNAL", err)
	}
	if xs, err := e.h.Compliance.ListExclusions(e.ctx, &compliancev1.ListExclusionsRequest{DeviceId: "dev-1"}); err != nil || len(xs.GetExclusions()) != 0 {
		t.Errorf("exclusions after the failed call = %v (%v), want none", xs.GetExclusions(), err)
	}
	if _, err := e.h.Policies.CreateCompliancePolicy(e.ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
		PolicyId: "max-medium", DisplayName: "x", MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_MEDIUM, Assignment: &compliancev1.PolicyAssignment{AllDevices: true},
	}}); status.Code(err) != codes.Internal {
		t.Errorf("CreateCompliancePolicy with a failing audit log = %v, want INTERNAL", err)
	}
	if _, err := e.h.Policies.GetCompliancePolicy(e.ctx, &compliancev1.GetCompliancePolicyRequest{PolicyId: "max-medium"}); status.Code(err) != codes.NotFound {
		t.Errorf("policy after the failed create: %v, want NOT_FOUND", err)
	}
	if _, err := e.h.Devices.RetireDevice(e.ctx, &compliancev1.RetireDeviceRequest{DeviceId: "dev-1"}); status.Code(err) != codes.Internal {
		t.Errorf("RetireDevice with a failing audit log = %v, want INTERNAL", err)
	}
	if d, err := e.h.Devices.GetDevice(e.ctx, &compliancev1.GetDeviceRequest{DeviceId: "dev-1"}); err != nil || d.GetDevice().GetRetired() {
		t.Errorf("device after the failed retire = %v (%v), want not retired", d.GetDevice(), err)
	}
}
