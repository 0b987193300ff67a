package compliancegrpc_test

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

// TestFlowWithRealRisk is the definition of done against the real risk service.
func TestFlowWithRealRisk(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rc, addr := startRealRisk(t)
	e := &env{t: t, ctx: ctx, rc: rc, addr: addr, h: compliancetest.Start(t, addr, compliancetest.Options{})}
	e.enroll("dev-1", "finance")
	e.maxMedium()
	w := e.watch()
	e.report("a-1", "dev-1", commonv1.Severity_SEVERITY_HIGH)
	ev := w.until("dev-1", stateNoncompliant)
	if r := ev.GetDeviceComplianceChanged().GetDeviceCompliance().GetReason(); !strings.Contains(r, "risk HIGH above allowed MEDIUM, from alert a-1") {
		t.Errorf("reason %q does not name the cause", r)
	}
	if tp := ev.GetTraceContext().GetTraceparent(); tp == "" {
		t.Error("compliance event carries no trace context")
	}
	e.resolve("a-1")
	w.until("dev-1", stateCompliant)
	e.report("a-2", "dev-1", commonv1.Severity_SEVERITY_HIGH)
	w.until("dev-1", stateNoncompliant)
	if _, err := e.h.Compliance.ExcludeDevice(ctx, &compliancev1.ExcludeDeviceRequest{DeviceId: "dev-1", Reason: "known false positive, ticket 42"}); err != nil {
		t.Fatal(err)
	}
	if dc := e.compliance("dev-1"); dc.GetState() != stateExcluded {
		t.Errorf("after exclusion: %v, want EXCLUDED", dc.GetState())
	}
}
