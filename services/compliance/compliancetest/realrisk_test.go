package compliancetest_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/services/compliance/compliancetest"
	"github.com/condaccess/condaccess/services/risk/risktest"
)

// startRealRisk runs the real risk service in-process on a loopback TCP address.
func startRealRisk(tb testing.TB) (riskv1.RiskServiceClient, string) {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	h := risktest.StartWith(tb, risktest.Options{Listener: lis, ProgressInterval: 200 * time.Millisecond})
	return h.Client, h.Addr
}

// TestFlowWithRealRisk is issue #4's definition of done against the real risk service.
func TestFlowWithRealRisk(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rc, addr := startRealRisk(t)
	h := compliancetest.Start(t, addr, compliancetest.Options{})
	if _, err := h.Devices.EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
		DeviceId: "dev-1", DisplayName: "Laptop 1", Platform: commonv1.Platform_PLATFORM_WINDOWS, OsVersion: "10.0.22631",
		OwnerUserId: "u-1", Groups: []string{"finance"},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Policies.CreateCompliancePolicy(ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
		PolicyId: "max-medium", DisplayName: "Device risk at or under medium", MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_MEDIUM,
		Assignment: &compliancev1.PolicyAssignment{AllDevices: true},
	}}); err != nil {
		t.Fatal(err)
	}
	list, err := h.Compliance.ListDeviceCompliance(ctx, &compliancev1.ListDeviceComplianceRequest{})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := h.Compliance.WatchComplianceEvents(ctx, &compliancev1.WatchComplianceEventsRequest{StartRevision: list.GetRevision()})
	if err != nil {
		t.Fatal(err)
	}
	until := func(want commonv1.ComplianceState) *compliancev1.ComplianceEvent {
		t.Helper()
		for {
			m, err := stream.Recv()
			if err != nil {
				t.Fatalf("waiting for %v: %v", want, err)
			}
			if m.GetEvent().GetDeviceComplianceChanged().GetDeviceCompliance().GetState() == want {
				return m.GetEvent()
			}
		}
	}
	report := func(id string) {
		t.Helper()
		if _, err := rc.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{AlertId: id, DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "Malicious file opened"}}); err != nil {
			t.Fatal(err)
		}
	}
	report("a-1")
	ev := until(commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT)
	if r := ev.GetDeviceComplianceChanged().GetDeviceCompliance().GetReason(); !strings.Contains(r, "risk HIGH above allowed MEDIUM, from alert a-1") {
		t.Errorf("reason %q does not name the cause", r)
	}
	if ev.GetTraceContext().GetTraceparent() == "" {
		t.Error("compliance event carries no trace context")
	}
	if _, err := rc.ResolveAlert(ctx, &riskv1.ResolveAlertRequest{AlertId: "a-1", Classification: riskv1.AlertClassification_ALERT_CLASSIFICATION_TRUE_POSITIVE, Comment: "cleaned"}); err != nil {
		t.Fatal(err)
	}
	until(commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT)
	report("a-2")
	until(commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT)
	ex, err := h.Compliance.ExcludeDevice(ctx, &compliancev1.ExcludeDeviceRequest{DeviceId: "dev-1", Reason: "known false positive, ticket 42"})
	if err != nil {
		t.Fatal(err)
	}
	if got := ex.GetDeviceCompliance().GetState(); got != commonv1.ComplianceState_COMPLIANCE_STATE_EXCLUDED {
		t.Errorf("after exclusion: %v, want EXCLUDED", got)
	}
}

// BenchmarkRiskToComplianceLatencyRealRisk measures, against the real risk service
// in-process, from before the ReportAlert/ResolveAlert call (so including the risk RPC
// and its durable commit) until the compliance event arrives at a watcher.
func BenchmarkRiskToComplianceLatencyRealRisk(b *testing.B) {
	rc, addr := startRealRisk(b)
	compliancetest.BenchLatency(b, rc, addr, func(_ int64, called time.Time) time.Time { return called })
}
