package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/server"
	"github.com/condaccess/condaccess/services/compliance/complianceapp"
)

// TestStuckConsumerFailsClosed is the audit's second attack, with the fault injected
// directly: the compliance service's risk consumer cannot apply one event (a HIGH
// alert). It stops there; access, whose own hop to compliance stays healthy, still
// blocks the compliance-requiring app with COMPLIANCE_STATE_STALE within the staleness
// bound, because compliance's risk_as_of stops advancing; health says NOT_SERVING for
// the compliance service. Once the event applies, the block is for the real reason.
func TestStuckConsumerFailsClosed(t *testing.T) {
	const bound = 2 * time.Second
	var failing atomic.Bool
	facs := factories()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	for _, f := range facs {
		f.RegisterFlags(fs)
		if c, ok := f.(*complianceapp.Factory); ok {
			c.ApplyFault = func(rev int64) error {
				if failing.Load() {
					return errors.New("injected: cannot apply")
				}
				return nil
			}
		}
	}
	if err := fs.Set("access-staleness-bound", bound.String()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	o := serveOptions{grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", dataDir: t.TempDir(),
		services: "risk,compliance,access,remediation", stopTimeout: 5 * time.Second, factories: facs}
	s, err := startSuite(ctx, o, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	opts, err := server.DialOptions(auth.ClientConfig{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(s.GRPCAddr(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	dir, cap, cp := accessv1.NewDirectoryServiceClient(conn), accessv1.NewConditionalAccessPolicyServiceClient(conn), compliancev1.NewCompliancePolicyServiceClient(conn)
	must(dir.CreateUser(ctx, &accessv1.CreateUserRequest{User: &accessv1.User{UserId: "u-1", DisplayName: "Ada"}}))
	must(dir.CreateApplication(ctx, &accessv1.CreateApplicationRequest{Application: &accessv1.Application{ApplicationId: "payroll", DisplayName: "Payroll"}}))
	must(cp.CreateCompliancePolicy(ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
		PolicyId: "max-medium", DisplayName: "max medium", MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_MEDIUM,
		Assignment: &compliancev1.PolicyAssignment{AllDevices: true}}}))
	must(compliancev1.NewDeviceServiceClient(conn).EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
		DeviceId: "dev-1", DisplayName: "laptop", Platform: commonv1.Platform_PLATFORM_WINDOWS, OsVersion: "10.0.22631", OwnerUserId: "u-1"}}))
	must(cap.CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: &accessv1.ConditionalAccessPolicy{
		PolicyId: "payroll-compliant", DisplayName: "payroll needs compliant", State: accessv1.PolicyState_POLICY_STATE_ENABLED,
		Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{Include: []string{"payroll"}},
		GrantControls: &accessv1.GrantControls{Require: []accessv1.GrantControl{accessv1.GrantControl_GRANT_CONTROL_COMPLIANT_DEVICE}}}}))

	acc := accessv1.NewAccessServiceClient(conn)
	health := healthpb.NewHealthClient(conn)
	// waitFor polls the decision until its reason codes contain code; it returns when.
	waitFor := func(what string, decision accessv1.Decision, code string) time.Time {
		t.Helper()
		var last *accessv1.EvaluateAccessResponse
		for ctx.Err() == nil {
			r, err := acc.EvaluateAccess(ctx, &accessv1.EvaluateAccessRequest{UserId: "u-1", DeviceId: "dev-1", ApplicationId: "payroll"})
			if err != nil {
				t.Fatal(err)
			}
			if last = r; r.GetDecision() == decision && strings.Contains(reasonCodes(r.GetReasons()), code) {
				return time.Now()
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("%s: last decision %v (%s)", what, last.GetDecision(), reasonCodes(last.GetReasons()))
		return time.Time{}
	}
	healthOf := func(name string) healthpb.HealthCheckResponse_ServingStatus {
		r, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: name})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetStatus()
	}
	waitFor("allowed before the alert", accessv1.Decision_DECISION_ALLOW, "")

	failing.Store(true)
	reported := time.Now()
	must(riskv1.NewRiskServiceClient(conn).ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
		AlertId: "a-1", DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "Malicious file"}}))
	blocked := waitFor("blocked as stale while compliance is stuck", accessv1.Decision_DECISION_BLOCK, "COMPLIANCE_STATE_STALE")
	// risk_as_of froze at the last contact before the alert; the chain is stale once it
	// is older than the bound, plus at most one progress interval of the risk feed.
	if took := blocked.Sub(reported); took > bound+2*time.Second {
		t.Errorf("blocked %v after the alert, want within the bound (%v) plus a progress interval", took, bound)
	}
	t.Logf("stuck event: blocked COMPLIANCE_STATE_STALE %v after the alert (bound %v)", blocked.Sub(reported).Round(time.Millisecond), bound)
	if got := healthOf(compliancev1.ComplianceService_ServiceDesc.ServiceName); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health of the stuck compliance service = %v, want NOT_SERVING", got)
	}
	if got := healthOf(accessv1.AccessService_ServiceDesc.ServiceName); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health of access = %v, want SERVING (its own feed is fine)", got)
	}
	status := accessStatus(t, s.HTTPAddr())
	if status["stale"] != true || status["risk_as_of"] == nil {
		t.Errorf("/access/status compliance_feed = %v, want stale with risk_as_of", status)
	}

	failing.Store(false)
	waitFor("blocked for the real reason once the event applies", accessv1.Decision_DECISION_BLOCK, "COMPLIANT_DEVICE_REQUIRED")
	deadline := time.Now().Add(10 * time.Second)
	for healthOf(compliancev1.ComplianceService_ServiceDesc.ServiceName) != healthpb.HealthCheckResponse_SERVING {
		if time.Now().After(deadline) {
			t.Fatal("compliance health did not return to SERVING")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// accessStatus returns /access/status's compliance_feed object.
func accessStatus(t *testing.T, addr string) map[string]any {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/access/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Feed map[string]any `json:"compliance_feed"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body.Feed
}
