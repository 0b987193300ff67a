package main

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
)

// waitGone waits until no element matches sel in tab, at most d.
func waitGone(t *testing.T, tab context.Context, d time.Duration, sel, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, d)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector(`+jsString(sel)+`) === null`)); err != nil {
		t.Fatalf("%s: %s still present after %v (%v)", what, sel, d, err)
	}
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string { return strconv.Quote(s) }

// startDevSuite runs the four services in one process in development mode on free
// loopback ports, and returns it and a gRPC connection to it; both stop with the test.
func startDevSuite(t *testing.T, ctx context.Context) (*runningSuite, *grpc.ClientConn) {
	t.Helper()
	s, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", dataDir: t.TempDir(),
		services: "risk,compliance,access,remediation", stopTimeout: 5 * time.Second}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return s, conn
}

// startConsoleSuite is startDevSuite with the flow's directory, policies and device;
// it returns the console's base URL and a gRPC connection.
func startConsoleSuite(t *testing.T, ctx context.Context) (string, *grpc.ClientConn) {
	t.Helper()
	s, conn := startDevSuite(t, ctx)
	setupFlow(t, ctx, conn)
	return "http://" + s.HTTPAddr(), conn
}

// TestConsoleDevicesLive: the devices page filtered to noncompliant devices gains the
// device's row when a HIGH alert makes it noncompliant and loses it when the alert is
// resolved, without a reload; a page filtered to another group never shows it; the
// device page, opened after the alert, shows the resolution live.
func TestConsoleDevicesLive(t *testing.T) {
	chromiumPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base, conn := startConsoleSuite(t, ctx)
	risk := riskv1.NewRiskServiceClient(conn)
	tab := browser(t, ctx)
	other, cancelOther := chromedp.NewContext(tab) // a second tab: another group
	defer cancelOther()
	noncompliant := "/devices?state=" + strconv.Itoa(int(commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT))
	for _, tt := range []struct {
		tab  context.Context
		path string
	}{{tab, noncompliant}, {other, "/devices?group=sales"}} {
		if err := chromedp.Do(tt.tab, chromedp.Navigate(base+tt.path)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, tt.tab, 10*time.Second, `#devices`, tt.path)
		ctx2, c := context.WithTimeout(tt.tab, 10*time.Second)
		if _, err := chromedp.Run(ctx2, chromedp.Poll[bool](`document.querySelector('p[role="status"]')?.textContent === "No devices match."`)); err != nil {
			t.Fatalf("%s: not empty before the alert (%v)", tt.path, err)
		}
		c()
	}
	row := `#devices tr[data-device="dev-1"]`
	if _, err := risk.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
		AlertId: "a-1", DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "Suspicious script"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, 10*time.Second, row+`[data-state="NONCOMPLIANT"]`, "noncompliant device inserted without reload")
	// The device page replays the device's history (filtered by the server), then
	// follows the shared feeds: the resolution below appears on it live.
	page, cancelPage := chromedp.NewContext(tab)
	defer cancelPage()
	if err := chromedp.Do(page, chromedp.Navigate(base+"/devices/dev-1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, page, 10*time.Second, `#timeline li[data-kind="alert"]`, "device page replays the alert")
	if _, err := risk.ResolveAlert(ctx, &riskv1.ResolveAlertRequest{AlertId: "a-1",
		Classification: riskv1.AlertClassification_ALERT_CLASSIFICATION_FALSE_POSITIVE}); err != nil {
		t.Fatal(err)
	}
	waitGone(t, tab, 10*time.Second, row, "compliant again: the row leaves the noncompliant page")
	waitFor(t, page, 10*time.Second, `#timeline li[data-kind="alert-resolved"]`, "device page shows the resolution live")
	if n, err := chromedp.Run(other, chromedp.Evaluate[int](`document.querySelectorAll(`+jsString(row)+`).length`)); err != nil || n != 0 {
		t.Errorf("the sales page shows dev-1 (finance) %d times (%v)", n, err)
	}
}

// TestConsoleSignInsLive: the sign-in log filtered to blocked sign-ins shows a new
// blocked sign-in at the top without a reload, with its per-policy detail on demand,
// and not an allowed one.
func TestConsoleSignInsLive(t *testing.T) {
	chromiumPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base, conn := startConsoleSuite(t, ctx)
	access := accessv1.NewAccessServiceClient(conn)
	waitDecision(t, ctx, access, accessv1.Decision_DECISION_ALLOW)
	allowed, err := access.EvaluateAccess(ctx, &accessv1.EvaluateAccessRequest{UserId: "u-1", DeviceId: "dev-1", ApplicationId: "payroll"})
	if err != nil || allowed.GetDecision() != accessv1.Decision_DECISION_ALLOW {
		t.Fatalf("dev-1: %v %v, want ALLOW", allowed.GetDecision(), err)
	}
	tab := browser(t, ctx)
	if err := chromedp.Do(tab, chromedp.Navigate(base+"/signins")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, 10*time.Second, `#signins tr[data-signin="`+allowed.GetSignInId()+`"]`, "sign-in log")
	if err := chromedp.Do(tab, chromedp.SetValue(`select[name="decision"]`, strconv.Itoa(int(accessv1.Decision_DECISION_BLOCK))),
		chromedp.Click(`form[role="search"] button[type="submit"]`)); err != nil {
		t.Fatal(err)
	}
	waitGone(t, tab, 10*time.Second, `#signins tr[data-signin="`+allowed.GetSignInId()+`"]`, "the allowed sign-in leaves the BLOCK filter")
	// An unknown device is blocked from payroll (compliant device required); another
	// allowed sign-in is not shown.
	okAgain, err := access.EvaluateAccess(ctx, &accessv1.EvaluateAccessRequest{UserId: "u-1", DeviceId: "dev-1", ApplicationId: "payroll"})
	if err != nil {
		t.Fatal(err)
	}
	blocked, err := access.EvaluateAccess(ctx, &accessv1.EvaluateAccessRequest{UserId: "u-1", DeviceId: "dev-unknown", ApplicationId: "payroll"})
	if err != nil || blocked.GetDecision() != accessv1.Decision_DECISION_BLOCK {
		t.Fatalf("unknown device: %v %v, want BLOCK", blocked.GetDecision(), err)
	}
	row := `#signins tr[data-signin="` + blocked.GetSignInId() + `"]`
	waitFor(t, tab, 5*time.Second, row, "the new blocked sign-in appears without reload")
	if err := chromedp.Do(tab, chromedp.Click(row+` summary`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, 5*time.Second, row+` details p.mono`, "the new sign-in's per-policy detail")
	text, err := chromedp.Run(tab, chromedp.Text(row))
	if err != nil || !strings.Contains(text, "Payroll requires a compliant device") {
		t.Errorf("detail of the new sign-in = %q (%v), want the payroll policy", text, err)
	}
	if n, err := chromedp.Run(tab, chromedp.Evaluate[int](`document.querySelectorAll('#signins tr[data-signin="`+okAgain.GetSignInId()+`"]').length`)); err != nil || n != 0 {
		t.Errorf("an allowed sign-in is on the BLOCK page (%d, %v)", n, err)
	}
}

// TestConsolePoliciesLive: policies created, changed and deleted by another admin (over
// gRPC) show on the open policies page without a reload.
func TestConsolePoliciesLive(t *testing.T) {
	chromiumPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base, conn := startConsoleSuite(t, ctx)
	ca := accessv1.NewConditionalAccessPolicyServiceClient(conn)
	cp := compliancev1.NewCompliancePolicyServiceClient(conn)
	tab := browser(t, ctx)
	if err := chromedp.Do(tab, chromedp.Navigate(base+"/policies")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, 10*time.Second, `tr[data-policy="payroll-compliant"]`, "policies page")
	// A marker on the window: gone if the page reloads.
	if _, err := chromedp.Run(tab, chromedp.Evaluate[int](`window.__same = 1`)); err != nil {
		t.Fatal(err)
	}
	created, err := ca.CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: &accessv1.ConditionalAccessPolicy{
		PolicyId: "live-ca", DisplayName: "Created elsewhere", State: accessv1.PolicyState_POLICY_STATE_REPORT_ONLY,
		Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{Include: []string{"payroll"}},
		GrantControls: &accessv1.GrantControls{Block: true}}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, 5*time.Second, `tr[data-policy="live-ca"]`, "a Conditional Access policy created elsewhere")
	if _, err := cp.CreateCompliancePolicy(ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
		PolicyId: "live-cp", DisplayName: "Windows 11 only", MinOsVersion: "10.0.22000", Assignment: &compliancev1.PolicyAssignment{AllDevices: true}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, 5*time.Second, `tr[data-compliance-policy="live-cp"]`, "a compliance policy created elsewhere")
	if _, err := ca.DeletePolicy(ctx, &accessv1.DeletePolicyRequest{PolicyId: "live-ca", Etag: created.GetPolicy().GetEtag()}); err != nil {
		t.Fatal(err)
	}
	waitGone(t, tab, 5*time.Second, `tr[data-policy="live-ca"]`, "a policy deleted elsewhere")
	if same, err := chromedp.Run(tab, chromedp.Evaluate[int](`window.__same ?? 0`)); err != nil || same != 1 {
		t.Errorf("the page reloaded (%d, %v)", same, err)
	}
}
