package integration

import (
	"context"
	"testing"
	"time"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/integration/harness"
)

// TestAccessRevocationAndStaleness runs the four services as separate processes:
// a WatchSessionEvents subscriber receives the revocation of a device's session
// when a HIGH alert makes it noncompliant; with the compliance process stopped
// past the staleness bound, the app that requires a compliant device is blocked
// with COMPLIANCE_STATE_STALE, and allowed again once compliance is back.
func TestAccessRevocationAndStaleness(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: starts real processes")
	}
	s := harness.StartSuite(t, harness.Options{ServeArgs: []string{"--access-staleness-bound", "3s"}})
	s.Setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*harness.Wait)
	defer cancel()

	const dev, alert = "dev-cae", "a-cae"
	s.Enroll(t, dev, harness.ManualGroup)
	allowed := s.WaitDecision(t, dev, accessv1.Decision_DECISION_ALLOW)
	sid := allowed.GetSessionId()
	if sid == "" {
		t.Fatal("an allowed access opened no session")
	}
	watch, err := s.Access.WatchSessionEvents(ctx, &accessv1.WatchSessionEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	s.ReportAlert(t, alert, dev)
	for {
		m, err := watch.Recv()
		if err != nil {
			t.Fatalf("WatchSessionEvents: %v", err)
		}
		rv := m.GetEvent().GetSessionRevoked()
		if rv == nil || rv.GetSession().GetSessionId() != sid {
			continue
		}
		if rv.GetReasonCode() != "DEVICE_NONCOMPLIANT" || rv.GetComplianceRevision() == 0 || m.GetEvent().GetTraceContext().GetTraceparent() == "" {
			t.Errorf("revocation = %v (trace %v)", rv, m.GetEvent().GetTraceContext())
		}
		break
	}
	blocked := s.WaitDecision(t, dev, accessv1.Decision_DECISION_BLOCK)
	if !harness.HasReason(blocked, "COMPLIANT_DEVICE_REQUIRED") {
		t.Errorf("reasons %v", blocked.GetReasons())
	}
	found := false
	for _, c := range blocked.GetCauseChain() {
		found = found || (c.GetKind() == accessv1.CauseKind_CAUSE_KIND_ALERT && c.GetId() == alert)
	}
	if !found {
		t.Errorf("cause chain %v lacks alert %s", blocked.GetCauseChain(), alert)
	}

	// Staleness: a compliant device, then the compliance service goes away.
	const ok = "dev-stale"
	s.Enroll(t, ok, harness.ManualGroup)
	comp := s.Procs["compliance"]
	if err := comp.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	stale := s.WaitDecision(t, ok, accessv1.Decision_DECISION_BLOCK)
	if !harness.HasReason(stale, "COMPLIANCE_STATE_STALE") || !stale.GetDeviceCompliance().GetStale() ||
		stale.GetDeviceCompliance().GetState() != commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT {
		t.Errorf("stale decision = %v %v", stale.GetReasons(), stale.GetDeviceCompliance())
	}
	if err := comp.Start(); err != nil {
		t.Fatal(err)
	}
	if err := comp.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	fresh := s.WaitDecision(t, ok, accessv1.Decision_DECISION_ALLOW)
	if fresh.GetDeviceCompliance().GetStale() {
		t.Errorf("allowed while stale: %v", fresh.GetDeviceCompliance())
	}
}
