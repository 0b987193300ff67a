package compliancetest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
)

// BenchLatency runs the risk-to-compliance latency benchmark: a compliance service
// (started here against the risk service at addr, reached by rc) with the max-medium
// policy and one device; each op reports a HIGH alert and resolves it, and measures
// from start(risk revision, time of the call) until a WatchComplianceEvents client
// receives the NONCOMPLIANT, then the COMPLIANT event. Reports p50 and p99 in µs.
func BenchLatency(b *testing.B, rc riskv1.RiskServiceClient, addr string, start func(rev int64, called time.Time) time.Time) {
	ctx := context.Background()
	h := Start(b, addr, Options{})
	if _, err := h.Devices.EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
		DeviceId: "dev-1", Platform: commonv1.Platform_PLATFORM_WINDOWS, OsVersion: "10.0.22631",
	}}); err != nil {
		b.Fatal(err)
	}
	if _, err := h.Policies.CreateCompliancePolicy(ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
		PolicyId: "max-medium", DisplayName: "max medium", MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_MEDIUM,
		Assignment: &compliancev1.PolicyAssignment{AllDevices: true},
	}}); err != nil {
		b.Fatal(err)
	}
	list, err := h.Compliance.ListDeviceCompliance(ctx, &compliancev1.ListDeviceComplianceRequest{})
	if err != nil {
		b.Fatal(err)
	}
	stream, err := h.Compliance.WatchComplianceEvents(ctx, &compliancev1.WatchComplianceEventsRequest{StartRevision: list.GetRevision()})
	if err != nil {
		b.Fatal(err)
	}
	await := func(want commonv1.ComplianceState) time.Time {
		for {
			m, err := stream.Recv()
			if err != nil {
				b.Fatal(err)
			}
			if m.GetEvent().GetDeviceComplianceChanged().GetDeviceCompliance().GetState() == want {
				return time.Now()
			}
		}
	}
	lat := make([]time.Duration, 0, 2*b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		id := fmt.Sprintf("a-%d", i)
		called := time.Now()
		rep, err := rc.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{AlertId: id, DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "t"}})
		if err != nil {
			b.Fatal(err)
		}
		t0 := start(rep.GetDeviceRisk().GetRevision(), called)
		lat = append(lat, await(commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT).Sub(t0))
		called = time.Now()
		res, err := rc.ResolveAlert(ctx, &riskv1.ResolveAlertRequest{AlertId: id, Classification: riskv1.AlertClassification_ALERT_CLASSIFICATION_FALSE_POSITIVE})
		if err != nil {
			b.Fatal(err)
		}
		t0 = start(res.GetDeviceRisk().GetRevision(), called)
		lat = append(lat, await(commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT).Sub(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
