package main

import (
	"context"

	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/grpc"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/agent"
	"github.com/condaccess/condaccess/internal/auth/authtest"
)

// chromiumPath finds the Chromium that .ci/run installs (Debian's chromium).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	t.Skip("no Chromium on this machine (.ci/run installs Debian's chromium with apt-get); the browser tests need one")
	return ""
}

// screenshots is the folder the browser tests write their screenshots to:
// $CONDACCESS_SCREENSHOT_DIR, or a temporary folder kept when the test fails.
func screenshots(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("CONDACCESS_SCREENSHOT_DIR"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	d, err := os.MkdirTemp("", "condaccess-console-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("screenshots kept in %s", d)
			return
		}
		os.RemoveAll(d)
	})
	return d
}

// browser starts a headless Chromium with a fresh profile and returns its first tab.
// Extra options (e.g. trusting a test CA's certificates) are added to the defaults.
func browser(t *testing.T, ctx context.Context, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		// Suites outside development mode serve HTTPS with a certificate of the test's
		// own CA, which the browser does not know; the tests are about what the server
		// answers a browser without a client certificate, not about server trust.
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.WindowSize(1280, 900),
	}
	opts = append(opts, extra...)
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	tab, cancelTab := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	if err := chromedp.Do(tab, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	return tab
}

// waitFor waits until sel is visible in tab, at most d.
func waitFor(t *testing.T, tab context.Context, d time.Duration, sel, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, d)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.WaitVisible(sel)); err != nil {
		html, _ := chromedp.Run(tab, chromedp.Evaluate[string](`document.querySelector("main")?.innerText ?? ""`))
		t.Fatalf("%s: %s not visible within %v (%v); the page says:\n%.2000s", what, sel, d, err, html)
	}
}

func shoot(t *testing.T, tab context.Context, dir, name string) string {
	t.Helper()
	png, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConsoleFlow drives a real Chromium through the flow: the overview is open when
// the agent reports a HIGH alert; the device turns noncompliant there without a reload;
// the end user's page for the blocked sign-in says what is wrong; the quarantine is
// approved in the action center (SEMI group); the device page's timeline shows each
// step with its trace id; the end user's page turns to "access restored" by itself.
func TestConsoleFlow(t *testing.T) {
	chromiumPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	shots := screenshots(t)
	s, conn := startDevSuite(t, ctx)
	risk := riskv1.NewRiskServiceClient(conn)
	compliance := compliancev1.NewComplianceServiceClient(conn)
	access := accessv1.NewAccessServiceClient(conn)
	remediation := remediationv1.NewRemediationServiceClient(conn)
	setupFlow(t, ctx, conn)
	// An open session before the alert, so that the block revokes it. The access
	// service learns the new device's compliance from its feed: wait for it.
	waitDecision(t, ctx, access, accessv1.Decision_DECISION_ALLOW)

	watchDir, quarantineDir := filepath.Join(t.TempDir(), "watch"), filepath.Join(t.TempDir(), "quarantine")
	for _, d := range []string{watchDir, quarantineDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	a, err := agent.New(agent.Config{DeviceID: "dev-1", Hostname: "ada-laptop", WatchDirs: []string{watchDir}, QuarantineDir: quarantineDir,
		Risk: risk, Remediation: remediationv1.NewAgentServiceClient(conn), Logger: slog.New(slog.DiscardHandler), Debounce: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	agentCtx, stopAgent := context.WithCancel(ctx)
	agentDone := make(chan error, 1)
	go func() { agentDone <- a.Run(agentCtx) }()
	defer func() { stopAgent(); <-agentDone }()
	for ok, changed := a.Connected(); !ok; ok, changed = a.Connected() {
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatal("the agent did not connect")
		}
	}

	base := "http://" + s.HTTPAddr()
	tab := browser(t, ctx)

	// 1. The overview.
	start := time.Now()
	if err := chromedp.Do(tab, chromedp.Navigate(base+"/")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, 10*time.Second, `[data-count="pending"]`, "overview")
	fcp, err := chromedp.Run(tab, chromedp.Evaluate[float64](`performance.getEntriesByName("first-contentful-paint")[0]?.startTime ?? -1`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("overview: first contentful paint %.0f ms, loaded in %v", fcp, time.Since(start).Round(time.Millisecond))
	// Record in the page when the device's row turns noncompliant.
	if _, err := chromedp.Run(tab, chromedp.Evaluate[float64](`window.__flipAt = 0; new MutationObserver((_, o) => {
		if (document.querySelector('#attention tr[data-device="dev-1"][data-state="NONCOMPLIANT"]')) { window.__flipAt = performance.timeOrigin + performance.now(); o.disconnect(); }
	}).observe(document.body, {subtree: true, childList: true, attributes: true}); 0`)); err != nil {
		t.Fatal(err)
	}
	shoot(t, tab, shots, "01-overview")

	// 2. The agent sees the EICAR file and reports a HIGH alert over gRPC; the open page
	// shows the device noncompliant within 2 s, without a reload.
	events, err := compliance.WatchComplianceEvents(ctx, &compliancev1.WatchComplianceEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(watchDir, "invoice.pdf.exe"), agent.EICAR(), 0o644); err != nil {
		t.Fatal(err)
	}
	var committed time.Time
	for committed.IsZero() {
		m, err := events.Recv()
		if err != nil {
			t.Fatalf("compliance events: %v", err)
		}
		if dc := m.GetEvent().GetDeviceComplianceChanged().GetDeviceCompliance(); dc.GetDeviceId() == "dev-1" && dc.GetState() == commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT {
			committed = m.GetEvent().GetEventTime().AsTime()
		}
	}
	waitFor(t, tab, 2*time.Second, `#attention tr[data-device="dev-1"][data-state="NONCOMPLIANT"]`, "overview turns noncompliant without reload")
	flipAt, err := chromedp.Run(tab, chromedp.Evaluate[float64](`window.__flipAt`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("compliance event committed → shown on the open overview: %.1f ms", flipAt-float64(committed.UnixMicro())/1000)
	shoot(t, tab, shots, "02-overview-noncompliant")

	// 3. The blocked sign-in and the end user's page, through the link of the 403 body
	// (development mode believes the identity headers).
	waitDecision(t, ctx, access, accessv1.Decision_DECISION_BLOCK)
	ref, blockedPage := authz403(t, base)
	user, cancelUser := chromedp.NewContext(tab) // a second tab
	defer cancelUser()
	if err := chromedp.Do(user, chromedp.Navigate(blockedPage)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, user, 10*time.Second, `#status[data-status="blocked"]`, "end user's page")
	waitFor(t, user, 5*time.Second, `#problems li`, "end user's page lists the problem")
	// The quarantine waits for approval (SEMI group): the page says so, live, from the
	// remediation service's feed.
	waitFor(t, user, 10*time.Second, `#next[data-remediation="WAITING_FOR_APPROVAL"]`, "end user's page says the removal waits for approval")
	userText, err := chromedp.Run(user, chromedp.Text("main"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"A threat was found on this device.", "dev-1", "waiting for approval by your security team"} {
		if !strings.Contains(userText, want) {
			t.Errorf("end user's page lacks %q:\n%s", want, userText)
		}
	}
	for _, secret := range []string{"max-medium", "Device risk at or under medium", "payroll-compliant", "Malicious", "EICAR"} {
		if strings.Contains(userText, secret) {
			t.Errorf("end user's page shows %q (policy names and alert details stay hidden):\n%s", secret, userText)
		}
	}
	shoot(t, user, shots, "03-end-user-blocked")

	// 4. The action center (reached by the navigation, no reload): approve the quarantine
	// with the keyboard.
	if err := chromedp.Do(tab, chromedp.Click(`nav a[href="/actions"]`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, 10*time.Second, `#pending button[data-approve]`, "pending quarantine in the action center")
	shoot(t, tab, shots, "04-action-center")
	if err := chromedp.Do(tab,
		chromedp.SendKeys(`#pending input[name="comment"]`, "approved in the console test"),
		chromedp.SendKeys(`#pending button[data-approve]`, "\r")); err != nil { // keyboard: focus the button, press Enter
		t.Fatal(err)
	}
	waitFor(t, tab, 20*time.Second, `#history tr[data-state="SUCCEEDED"]`, "the approved quarantine succeeds")
	pending, err := remediation.ListActions(ctx, &remediationv1.ListActionsRequest{State: remediationv1.ActionState_ACTION_STATE_PENDING_APPROVAL})
	if err != nil || len(pending.GetActions()) != 0 {
		t.Errorf("pending actions after the approval: %v %v", pending.GetActions(), err)
	}

	// 5. The end user's page turns to "access restored" by itself.
	waitFor(t, user, 20*time.Second, `#status[data-status="restored"]`, "end user's page turns to access restored")
	shoot(t, user, shots, "05-end-user-restored")

	// 6. The device page: each step on the timeline, the cause chain under one trace id.
	if err := chromedp.Do(tab, chromedp.Navigate(base+"/devices/dev-1")); err != nil {
		t.Fatal(err)
	}
	// Each feed replays on its own stream: wait for every kind of step.
	for _, kind := range []string{"alert", "risk", "compliance", "session", "investigation", "action", "alert-resolved", "restored"} {
		waitFor(t, tab, 10*time.Second, `#timeline li[data-kind="`+kind+`"]`, "device timeline")
	}
	steps, err := chromedp.Run(tab, chromedp.Evaluate[[]struct{ Kind, Trace, Text string }](`[...document.querySelectorAll("#timeline li")].map(li => ({Kind: li.dataset.kind, Trace: li.dataset.trace, Text: li.innerText}))`))
	if err != nil {
		t.Fatal(err)
	}
	traces := map[string]string{}
	var lines []string
	for _, st := range steps {
		lines = append(lines, fmt.Sprintf("%-14s %-32s %s", st.Kind, st.Trace, st.Text))
		if st.Kind == "compliance" && !strings.Contains(st.Text, "NONCOMPLIANT (was") {
			continue // the enrollment's first evaluation, before the flow
		}
		if _, ok := traces[st.Kind]; !ok {
			traces[st.Kind] = st.Trace
		}
	}
	t.Logf("device timeline:\n%s", strings.Join(lines, "\n"))
	for _, kind := range []string{"alert", "risk", "compliance", "session", "investigation", "action", "alert-resolved", "restored"} {
		if traces[kind] == "" {
			t.Errorf("timeline has no %q step with a trace id", kind)
		}
	}
	// The cause chain of the block: alert → risk → compliance → revoked session →
	// investigation all carry the alert's trace.
	for _, kind := range []string{"risk", "compliance", "session", "investigation"} {
		if traces[kind] != traces["alert"] {
			t.Errorf("%s step has trace %q, the alert %q", kind, traces[kind], traces["alert"])
		}
	}
	p := shoot(t, tab, shots, "06-device-timeline")
	if os.Getenv("CONDACCESS_UPDATE_DOCS") != "" {
		b, err := os.ReadFile(p)
		if err == nil {
			err = os.WriteFile(filepath.Join("..", "..", "docs", "console-device-timeline.png"), b, 0o644)
		}
		if err != nil {
			t.Error(err)
		}
	}

	// 7. Every route renders on a direct load, without an error, with the flow's data.
	routes := []struct{ path, h1, sel string }{
		{"/", "Overview", `[data-count="pending"]`},
		{"/devices", "Devices", `#devices tr[data-device="dev-1"][data-state="COMPLIANT"]`},
		{"/devices?risk=1", "Devices", `#devices tr[data-device="dev-1"][data-state="COMPLIANT"]`},
		{"/devices/dev-1", "Laptop of Ada", `#timeline li[data-kind="restored"]`},
		{"/alerts?x=1", "Alerts", `#alerts`},
		{"/actions", "Action center", `#history tr[data-state="SUCCEEDED"]`},
		{"/policies", "Policies", `tr[data-policy="payroll-compliant"]`},
		{"/whatif", "What If", `form`},
		{"/signins", "Sign-ins", `#signins tr[data-signin="` + ref + `"]`},
		{"/events", "Live events", `#events`},
		{"/audit", "Audit log", `p[role="status"]`},
		{strings.TrimPrefix(blockedPage, base), "Access blocked", `#status[data-status="restored"]`},
	}
	for i, r := range routes {
		if err := chromedp.Do(tab, chromedp.Navigate(base+r.path)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, tab, 10*time.Second, r.sel, r.path)
		h1, err := chromedp.Run(tab, chromedp.Text("main h1"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(h1, r.h1) {
			t.Errorf("%s: heading %q, want %q", r.path, h1, r.h1)
		}
		errs, err := chromedp.Run(tab, chromedp.Evaluate[string](`[...document.querySelectorAll(".error")].map(e => e.textContent).join(" ")`))
		if err != nil || strings.TrimSpace(errs) != "" {
			t.Errorf("%s shows errors: %q %v", r.path, errs, err)
		}
		shoot(t, tab, shots, fmt.Sprintf("%02d-route-%s", 7+i, strings.Trim(strings.NewReplacer("/", "-", "?", "-", "=", "-").Replace(r.path[:min(len(r.path), 16)]), "-")))
	}
	if os.Getenv("CONDACCESS_SCREENSHOT_DIR") != "" {
		t.Logf("screenshots: %s", shots)
	}

}

// waitDecision evaluates u-1 on dev-1 for payroll until the decision is want (10 s).
func waitDecision(t *testing.T, ctx context.Context, access accessv1.AccessServiceClient, want accessv1.Decision) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := access.EvaluateAccess(ctx, &accessv1.EvaluateAccessRequest{UserId: "u-1", DeviceId: "dev-1", ApplicationId: "payroll"})
		if err != nil {
			t.Fatal(err)
		}
		if r.GetDecision() == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("access is %v, want %v within 10 s (reasons %v)", r.GetDecision(), want, r.GetReasons())
		}
		time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
	}
}

// authz403 asks /authz, as u-1 on dev-1 for payroll, expects 403, and returns the
// sign-in id and the end user's page the body links to.
func authz403(t *testing.T, base string) (signIn, page string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/authz", nil)
	req.Header.Set("x-user-id", "u-1")
	req.Header.Set("x-device-id", "dev-1")
	req.Header.Set("x-application-id", "payroll")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`Help: (\S+/blocked\?ref=\S+)\n`).FindStringSubmatch(string(body))
	if resp.StatusCode != http.StatusForbidden || m == nil {
		t.Fatalf("GET /authz = %d, want 403 linking to the end user's page:\n%s", resp.StatusCode, body)
	}
	return resp.Header.Get("x-condaccess-sign-in-id"), m[1]
}

// setupFlow creates the user, application, policies, device and SEMI automation of the
// flow (as `condaccess demo` does).
func setupFlow(t *testing.T, ctx context.Context, conn *grpc.ClientConn) {
	t.Helper()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	dir := accessv1.NewDirectoryServiceClient(conn)
	must(dir.CreateUser(ctx, &accessv1.CreateUserRequest{User: &accessv1.User{UserId: "u-1", DisplayName: "Ada"}}))
	must(dir.CreateApplication(ctx, &accessv1.CreateApplicationRequest{Application: &accessv1.Application{ApplicationId: "payroll", DisplayName: "Payroll"}}))
	must(compliancev1.NewCompliancePolicyServiceClient(conn).CreateCompliancePolicy(ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
		PolicyId: "max-medium", DisplayName: "Device risk at or under medium",
		MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_MEDIUM, Assignment: &compliancev1.PolicyAssignment{AllDevices: true}}}))
	must(compliancev1.NewDeviceServiceClient(conn).EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
		DeviceId: "dev-1", DisplayName: "Laptop of Ada", Platform: commonv1.Platform_PLATFORM_WINDOWS,
		OsVersion: "10.0.22631", OwnerUserId: "u-1", Groups: []string{"finance"}}}))
	must(accessv1.NewConditionalAccessPolicyServiceClient(conn).CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: &accessv1.ConditionalAccessPolicy{
		PolicyId: "payroll-compliant", DisplayName: "Payroll requires a compliant device", State: accessv1.PolicyState_POLICY_STATE_ENABLED,
		Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{Include: []string{"payroll"}},
		GrantControls: &accessv1.GrantControls{Require: []accessv1.GrantControl{accessv1.GrantControl_GRANT_CONTROL_COMPLIANT_DEVICE}}}}))
	must(remediationv1.NewRemediationServiceClient(conn).SetAutomationLevel(ctx, &remediationv1.SetAutomationLevelRequest{Setting: &remediationv1.AutomationLevelSetting{
		DeviceGroup: "finance", Level: remediationv1.AutomationLevel_AUTOMATION_LEVEL_SEMI}}))
}

// TestConsoleEventLatency measures how long a committed event takes to reach an open
// page: 100 alerts on 100 devices make 100 compliance events; the live events page
// records when each row appears, the test compares that with each event's commit time.
func TestConsoleEventLatency(t *testing.T) {
	chromiumPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, conn := startDevSuite(t, ctx)
	const n = 100
	devices := compliancev1.NewDeviceServiceClient(conn)
	if _, err := compliancev1.NewCompliancePolicyServiceClient(conn).CreateCompliancePolicy(ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
		PolicyId: "max-medium", DisplayName: "Device risk at or under medium",
		MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_MEDIUM, Assignment: &compliancev1.PolicyAssignment{AllDevices: true}}}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := devices.EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
			DeviceId: fmt.Sprintf("lat-%03d", i), Platform: commonv1.Platform_PLATFORM_LINUX, OsVersion: "6.1"}}); err != nil {
			t.Fatal(err)
		}
	}
	compliance := compliancev1.NewComplianceServiceClient(conn)
	// Wait until the enrollments' evaluations are committed, so that the page starts
	// after them and sees only the alerts' events.
	events, err := compliance.WatchComplianceEvents(ctx, &compliancev1.WatchComplianceEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	evaluated := map[string]bool{}
	for len(evaluated) < n {
		m, err := events.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if dc := m.GetEvent().GetDeviceComplianceChanged().GetDeviceCompliance(); dc.GetState() == commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT {
			evaluated[dc.GetDeviceId()] = true
		}
	}

	tab := browser(t, ctx)
	if err := chromedp.Do(tab, chromedp.Navigate("http://"+s.HTTPAddr()+"/events")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, 10*time.Second, `#events`, "live events page")
	if _, err := chromedp.Run(tab, chromedp.Evaluate[float64](`window.__seen = {}; new MutationObserver((records) => {
		const at = performance.timeOrigin + performance.now();
		for (const r of records) for (const n of r.addedNodes) if (n.dataset?.feed === "compliance") window.__seen[n.dataset.rev] = at;
	}).observe(document.querySelector("#events tbody"), {childList: true}); 0`)); err != nil {
		t.Fatal(err)
	}
	// The page subscribes asynchronously: let one event through first, so that the
	// measured ones find it listening.
	risk := riskv1.NewRiskServiceClient(conn)
	committed := map[string]time.Time{}
	report := func(i int) {
		if _, err := risk.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
			AlertId: fmt.Sprintf("lat-a-%03d", i), DeviceId: fmt.Sprintf("lat-%03d", i), Severity: commonv1.Severity_SEVERITY_HIGH, Title: "test"}}); err != nil {
			t.Fatal(err)
		}
		for {
			m, err := events.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if dc := m.GetEvent().GetDeviceComplianceChanged().GetDeviceCompliance(); dc.GetDeviceId() == fmt.Sprintf("lat-%03d", i) && dc.GetState() == commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT {
				committed[fmt.Sprint(m.GetEvent().GetRevision())] = m.GetEvent().GetEventTime().AsTime()
				return
			}
		}
	}
	report(0)
	waitFor(t, tab, 10*time.Second, `#events tr[data-feed="compliance"]`, "first compliance event on the page")
	clear(committed)
	for i := 1; i < n; i++ {
		report(i)
	}
	// Wait (in the page, up to 10 s) until every measured event has its row.
	pollCtx, cancelPoll := context.WithTimeout(tab, 10*time.Second)
	_, err = chromedp.Run(pollCtx, chromedp.Poll[bool](fmt.Sprintf(`Object.keys(window.__seen).length >= %d`, n)))
	cancelPoll()
	if err != nil {
		t.Errorf("not every event reached the page: %v", err)
	}
	seen, err := chromedp.Run(tab, chromedp.Evaluate[map[string]float64](`window.__seen`))
	if err != nil {
		t.Fatal(err)
	}
	var lat []float64
	for rev, at := range committed {
		shown, ok := seen[rev]
		if !ok {
			t.Errorf("compliance event %s never appeared on the page", rev)
			continue
		}
		lat = append(lat, shown-float64(at.UnixMicro())/1000)
	}
	slices.Sort(lat)
	if len(lat) == 0 {
		t.Fatal("no latencies")
	}
	p50, p99 := lat[len(lat)/2], lat[(len(lat)*99+99)/100-1]
	t.Logf("event committed → row on the open page, %d events: p50 %.1f ms, p99 %.1f ms, max %.1f ms", len(lat), p50, p99, lat[len(lat)-1])
	// The target is 100 ms; the bound here leaves room for a loaded CI machine.
	if p99 > 1000 {
		t.Errorf("p99 %.1f ms, want ≤ 1000 ms (target 100 ms)", p99)
	}
}

// TestConsoleDevicesScale measures the devices page with many devices: the time from
// the filter being applied to the first rows of the page. It enrolls
// $CONDACCESS_CONSOLE_DEVICES devices (e.g. 100000) and is skipped without it, as
// enrolling them takes longer than a unit test should.
func TestConsoleDevicesScale(t *testing.T) {
	total, _ := strconv.Atoi(os.Getenv("CONDACCESS_CONSOLE_DEVICES"))
	if total <= 0 {
		t.Skip("set CONDACCESS_CONSOLE_DEVICES=100000 to measure the devices page with that many devices")
	}
	chromiumPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	s, conn := startDevSuite(t, ctx)
	devices := compliancev1.NewDeviceServiceClient(conn)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += 8 {
				if _, err := devices.EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
					DeviceId: fmt.Sprintf("d-%07d", i), Platform: commonv1.Platform_PLATFORM_WINDOWS, OsVersion: "10.0.22631",
					Groups: []string{fmt.Sprintf("g-%d", i%10)}}}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	t.Logf("enrolled %d devices in %v", total, time.Since(start).Round(time.Millisecond))

	tab := browser(t, ctx)
	base := "http://" + s.HTTPAddr()
	for _, path := range []string{"/devices", "/devices?group=g-3", "/devices?q=d-0000042"} {
		t0 := time.Now()
		if err := chromedp.Do(tab, chromedp.Navigate(base+path)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, tab, 10*time.Second, `#devices tbody tr[data-device]`, path)
		status, err := chromedp.Run(tab, chromedp.Text(`main p[role="status"]`))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: first rows %v after navigation; page says %q", path, time.Since(t0).Round(time.Millisecond), status)
	}
}

// TestConsolePolicies creates a Conditional Access policy in the browser, then edits a
// policy that changed on the server after the page read it: the stale write is refused
// (ABORTED) and the page says so, and the server keeps the other change.
func TestConsolePolicies(t *testing.T) {
	chromiumPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, conn := startDevSuite(t, ctx)
	setupFlow(t, ctx, conn)
	policies := accessv1.NewConditionalAccessPolicyServiceClient(conn)
	tab := browser(t, ctx)
	if err := chromedp.Do(tab, chromedp.Navigate("http://"+s.HTTPAddr()+"/policies")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, 10*time.Second, `tr[data-policy="payroll-compliant"]`, "policies page")

	// Create.
	if err := chromedp.Do(tab,
		chromedp.Click(`#new-ca-policy`),
		chromedp.SendKeys(`#editor input[name="policyId"]`, "payroll-block-trial"),
		chromedp.SendKeys(`#editor input[name="displayName"]`, "Block payroll (trial)"),
		chromedp.SendKeys(`#editor input[name="apps"]`, "payroll"),
		chromedp.SetValue(`#editor select[name="grant"]`, "block"),
		chromedp.Click(`#editor button[type="submit"]`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, 10*time.Second, `tr[data-policy="payroll-block-trial"]`, "created policy listed")
	got, err := policies.GetPolicy(ctx, &accessv1.GetPolicyRequest{PolicyId: "payroll-block-trial"})
	if err != nil {
		t.Fatal(err)
	}
	if p := got.GetPolicy(); p.GetState() != accessv1.PolicyState_POLICY_STATE_REPORT_ONLY || !p.GetGrantControls().GetBlock() || p.GetDisplayName() != "Block payroll (trial)" {
		t.Errorf("created policy = %v", p)
	}
	// A new policy with the editor's defaults requires a compliant and a registered device.
	if err := chromedp.Do(tab,
		chromedp.Click(`#new-ca-policy`),
		chromedp.SendKeys(`#editor input[name="policyId"]`, "wiki-devices"),
		chromedp.SendKeys(`#editor input[name="displayName"]`, "Wiki needs a healthy own device"),
		chromedp.SendKeys(`#editor input[name="apps"]`, "wiki"),
		chromedp.Click(`#editor button[type="submit"]`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, 10*time.Second, `tr[data-policy="wiki-devices"]`, "policy created with the defaults listed")
	got, err = policies.GetPolicy(ctx, &accessv1.GetPolicyRequest{PolicyId: "wiki-devices"})
	if err != nil {
		t.Fatal(err)
	}
	if g := got.GetPolicy().GetGrantControls(); g.GetBlock() || !slices.Equal(g.GetRequire(), []accessv1.GrantControl{accessv1.GrantControl_GRANT_CONTROL_COMPLIANT_DEVICE, accessv1.GrantControl_GRANT_CONTROL_REGISTERED_DEVICE}) {
		t.Errorf("default grant controls = %v, want require COMPLIANT_DEVICE + REGISTERED_DEVICE", g)
	}

	// A state picked in one row and not saved yet stays picked when another policy
	// changes on the server and the page lists again.
	disabled := strconv.Itoa(int(accessv1.PolicyState_POLICY_STATE_DISABLED))
	if err := chromedp.Do(tab, chromedp.SetValue(`select[name="state-payroll-block-trial"]`, disabled)); err != nil {
		t.Fatal(err)
	}
	wiki, err := policies.GetPolicy(ctx, &accessv1.GetPolicyRequest{PolicyId: "wiki-devices"})
	if err != nil {
		t.Fatal(err)
	}
	wiki.GetPolicy().DisplayName = "Wiki, renamed elsewhere"
	if _, err := policies.UpdatePolicy(ctx, &accessv1.UpdatePolicyRequest{Policy: wiki.GetPolicy()}); err != nil {
		t.Fatal(err)
	}
	pollCtx, cancelPoll := context.WithTimeout(tab, 10*time.Second)
	_, err = chromedp.Run(pollCtx, chromedp.Poll[bool](`document.querySelector('tr[data-policy="wiki-devices"]')?.textContent.includes("Wiki, renamed elsewhere") || false`))
	cancelPoll()
	if err != nil {
		t.Fatalf("the renamed policy is not listed live: %v", err)
	}
	if v, err := chromedp.Run(tab, chromedp.Evaluate[string](`document.querySelector('select[name="state-payroll-block-trial"]').value`)); err != nil || v != disabled {
		t.Errorf("the state picked in another row after a live reload: %q (%v), want %q", v, err, disabled)
	}

	// A stale edit: the policy changes on the server after the form was opened.
	if err := chromedp.Do(tab, chromedp.Click(`button[data-edit="payroll-compliant"]`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, 5*time.Second, `#editor input[name="displayName"]`, "edit form")
	other, err := policies.GetPolicy(ctx, &accessv1.GetPolicyRequest{PolicyId: "payroll-compliant"})
	if err != nil {
		t.Fatal(err)
	}
	other.GetPolicy().DisplayName = "Changed elsewhere"
	if _, err := policies.UpdatePolicy(ctx, &accessv1.UpdatePolicyRequest{Policy: other.GetPolicy()}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(tab,
		chromedp.SendKeys(`#editor input[name="displayName"]`, " (edited)"),
		chromedp.Click(`#editor button[type="submit"]`)); err != nil {
		t.Fatal(err)
	}
	pollCtx, cancelPoll = context.WithTimeout(tab, 5*time.Second)
	msg, err := chromedp.Run(pollCtx, chromedp.Poll[string](`document.querySelector("#editor .error")?.textContent || false`))
	cancelPoll()
	if err != nil || !strings.Contains(msg, "Conflict") {
		t.Errorf("stale edit: page says %q (%v), want a conflict", msg, err)
	}
	got, err = policies.GetPolicy(ctx, &accessv1.GetPolicyRequest{PolicyId: "payroll-compliant"})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetPolicy().GetDisplayName() != "Changed elsewhere" {
		t.Errorf("display name = %q: the stale write overwrote the other change", got.GetPolicy().GetDisplayName())
	}
}

// TestConsoleAlerts resolves an alert in the browser: without a classification the page
// refuses and nothing changes; with one the alert is resolved, by the authenticated
// caller, and the device's risk drops.
func TestConsoleAlerts(t *testing.T) {
	chromiumPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, conn := startDevSuite(t, ctx)
	setupFlow(t, ctx, conn)
	risk := riskv1.NewRiskServiceClient(conn)
	if _, err := risk.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
		AlertId: "a-1", DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "Suspicious script"}}); err != nil {
		t.Fatal(err)
	}
	tab := browser(t, ctx)
	if err := chromedp.Do(tab, chromedp.Navigate("http://"+s.HTTPAddr()+"/alerts")); err != nil {
		t.Fatal(err)
	}
	row := `#alerts tr[data-alert="a-1"]`
	waitFor(t, tab, 10*time.Second, row, "alerts page")

	// No classification: refused in the page, the alert stays open.
	if err := chromedp.Do(tab, chromedp.Click(row+` button[type="submit"]`)); err != nil {
		t.Fatal(err)
	}
	pollCtx, cancelPoll := context.WithTimeout(tab, 5*time.Second)
	msg, err := chromedp.Run(pollCtx, chromedp.Poll[string](`document.querySelector('#alerts tr[data-alert="a-1"] .error')?.textContent || false`))
	cancelPoll()
	if err != nil || !strings.Contains(msg, "classification") {
		t.Errorf("page says %q (%v), want it to ask for a classification", msg, err)
	}
	if a, err := risk.GetAlert(ctx, &riskv1.GetAlertRequest{AlertId: "a-1"}); err != nil || a.GetAlert().GetStatus() == riskv1.AlertStatus_ALERT_STATUS_RESOLVED {
		t.Fatalf("alert after the refused resolve: %v %v", a.GetAlert().GetStatus(), err)
	}

	// Classified: resolved. While the analyst fills the form in, another alert arrives
	// and the page reloads live: what the analyst chose and typed stays.
	if err := chromedp.Do(tab,
		chromedp.SetValue(row+` select[name="classification"]`, fmt.Sprint(int32(riskv1.AlertClassification_ALERT_CLASSIFICATION_FALSE_POSITIVE))),
		chromedp.SendKeys(row+` input[name="comment"]`, "admin script, known")); err != nil {
		t.Fatal(err)
	}
	if _, err := risk.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
		AlertId: "a-2", DeviceId: "dev-9", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "Another one"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, 10*time.Second, `#alerts tr[data-alert="a-2"]`, "the new alert listed live")
	kept, err := chromedp.Run(tab, chromedp.Evaluate[string](`document.querySelector('`+row+` input[name="comment"]').value + "|" + document.querySelector('`+row+` select[name="classification"]').value`))
	if want := "admin script, known|" + fmt.Sprint(int32(riskv1.AlertClassification_ALERT_CLASSIFICATION_FALSE_POSITIVE)); err != nil || kept != want {
		t.Fatalf("the form being filled in after a live reload: %q (%v), want %q", kept, err, want)
	}
	if err := chromedp.Do(tab, chromedp.Click(row+` button[type="submit"]`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, 10*time.Second, `#alerts`, "alerts page after resolving")
	deadline := time.Now().Add(10 * time.Second)
	for {
		a, err := risk.GetAlert(ctx, &riskv1.GetAlertRequest{AlertId: "a-1"})
		if err != nil {
			t.Fatal(err)
		}
		if al := a.GetAlert(); al.GetStatus() == riskv1.AlertStatus_ALERT_STATUS_RESOLVED {
			if al.GetClassification() != riskv1.AlertClassification_ALERT_CLASSIFICATION_FALSE_POSITIVE || al.GetResolvedBy() != "dev" || al.GetResolutionComment() != "admin script, known" {
				t.Errorf("resolved alert = classification %v, by %q, comment %q", al.GetClassification(), al.GetResolvedBy(), al.GetResolutionComment())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the alert was not resolved within 10 s")
		}
		time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
	}
	r, err := risk.GetDeviceRisk(ctx, &riskv1.GetDeviceRiskRequest{DeviceId: "dev-1"})
	if err != nil || r.GetDeviceRisk().GetLevel() != commonv1.RiskLevel_RISK_LEVEL_NONE {
		t.Errorf("device risk after resolving = %v %v, want NONE", r.GetDeviceRisk().GetLevel(), err)
	}
}

// TestConsoleUnauthenticated opens the console of a suite outside development mode
// with a browser that has no client certificate: every page says it is not signed in
// and shows no data.
func TestConsoleUnauthenticated(t *testing.T) {
	chromiumPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ca := authtest.NewCA(t)
	sc := ca.ServerConfig(t)
	s, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", dataDir: t.TempDir(),
		services: "risk,compliance,access,remediation", stopTimeout: 5 * time.Second,
		tlsCert: sc.CertFile, tlsKey: sc.KeyFile, tlsClientCA: sc.ClientCAFile}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	// The HTTP address serves HTTPS with the suite's test certificate, which Chromium
	// does not know; the browser presents no client certificate.
	tab := browser(t, ctx, chromedp.Flag("ignore-certificate-errors", true))
	for _, path := range []string{"/", "/devices", "/actions", "/audit"} {
		if err := chromedp.Do(tab, chromedp.Navigate("https://"+s.HTTPAddr()+path)); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		waitFor(t, tab, 10*time.Second, `main .error`, path)
		msg, err := chromedp.Run(tab, chromedp.Text(`main .error`))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(msg, "Not signed in") && !strings.Contains(msg, "Unauthenticated") {
			t.Errorf("%s says %q, want not signed in", path, msg)
		}
	}
}

// TestConsoleAudit reads the audit log in the browser: an edited policy shows its actor,
// method and before/after; the filters (resource id, time) narrow the table to exactly
// the matching events; paging walks the log without repeating a row.
func TestConsoleAudit(t *testing.T) {
	chromiumPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, conn := startDevSuite(t, ctx)
	setupFlow(t, ctx, conn)
	policies := accessv1.NewConditionalAccessPolicyServiceClient(conn)
	p, err := policies.GetPolicy(ctx, &accessv1.GetPolicyRequest{PolicyId: "payroll-compliant"})
	if err != nil {
		t.Fatal(err)
	}
	p.GetPolicy().DisplayName = "Payroll needs a compliant device (edited)"
	if _, err := policies.UpdatePolicy(ctx, &accessv1.UpdatePolicyRequest{Policy: p.GetPolicy()}); err != nil {
		t.Fatal(err)
	}
	// Enough further events for a second page (the page shows 50).
	devices := compliancev1.NewDeviceServiceClient(conn)
	for i := range 50 {
		if _, err := devices.EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
			DeviceId: fmt.Sprintf("audit-%02d", i), Platform: commonv1.Platform_PLATFORM_LINUX, OsVersion: "6.1"}}); err != nil {
			t.Fatal(err)
		}
	}

	tab := browser(t, ctx)
	rows := func() []string {
		t.Helper()
		ids, err := chromedp.Run(tab, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#audit tbody tr[data-audit]")].map(r => r.dataset.audit)`))
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	// waitRows waits until the table shows a page whose rows satisfy ok.
	waitRows := func(what string, ok func([]string) bool) []string {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			r := rows()
			if ok(r) {
				return r
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: rows %v", what, r)
			}
			time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
		}
	}
	if err := chromedp.Do(tab, chromedp.Navigate("http://"+s.HTTPAddr()+"/audit")); err != nil {
		t.Fatal(err)
	}
	first := waitRows("first page", func(r []string) bool { return len(r) == 50 })

	// Paging: the second page continues the first.
	if err := chromedp.Do(tab, chromedp.Click(`#audit-next`)); err != nil {
		t.Fatal(err)
	}
	second := waitRows("second page", func(r []string) bool { return len(r) > 0 && !slices.Equal(r, first) })
	for _, id := range second {
		if slices.Contains(first, id) {
			t.Errorf("event %s is on both pages", id)
		}
	}
	if len(first)+len(second) < 56 {
		t.Errorf("two pages hold %d events, want at least 56 (6 set-up changes, an update, 50 enrollments)", len(first)+len(second))
	}

	// Filter by resource id: exactly the policy's creation and its update, newest first.
	if err := chromedp.Do(tab,
		chromedp.SendKeys(`input[name="resourceId"]`, "payroll-compliant"),
		chromedp.Click(`form.filters button[type="submit"]`)); err != nil {
		t.Fatal(err)
	}
	waitRows("filtered by resource", func(r []string) bool { return len(r) == 2 })
	row := `#audit tbody tr[data-resource="payroll-compliant"]:first-child`
	cells, err := chromedp.Run(tab, chromedp.Evaluate[[]string](`[...document.querySelectorAll('`+row+` td')].map(td => td.textContent)`))
	if err != nil {
		t.Fatal(err)
	}
	if len(cells) != 8 {
		t.Fatalf("row cells = %q", cells)
	}
	for i, want := range map[int]string{
		1: "access", 2: "dev", 3: "/condaccess.access.v1.ConditionalAccessPolicyService/UpdatePolicy", 4: "UPDATE",
		7: "changed: DisplayName, Etag, UpdateTime",
	} {
		if !strings.Contains(cells[i], want) {
			t.Errorf("cell %d = %q, want it to contain %q", i, cells[i], want)
		}
	}
	if !strings.Contains(cells[7], "Payroll requires a compliant device") || !strings.Contains(cells[7], "(edited)") {
		t.Errorf("before/after = %q, want the old and the new display name", cells[7])
	}

	// A time window before every event: nothing matches.
	if err := chromedp.Do(tab,
		chromedp.SetValue(`input[name="endTime"]`, "2001-01-01T00:00"),
		chromedp.Click(`form.filters button[type="submit"]`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, 10*time.Second, `#audit tbody td.muted`, "empty time window")
	if r := rows(); len(r) != 0 {
		t.Errorf("events before 2001: %v", r)
	}
	if dir := os.Getenv("CONDACCESS_SCREENSHOT_DIR"); dir != "" {
		shoot(t, tab, dir, "audit")
	}
}

// TestConsoleBlockedPageOverTLS: outside development mode, an end user's browser
// without a client certificate opens the page the 403 body links to and sees what is
// wrong; the page turns to "access restored" by itself when an admin resolves the
// alert. The same browser is refused everything else (a sign-in id is no reference,
// the console's pages say not signed in).
func TestConsoleBlockedPageOverTLS(t *testing.T) {
	chromiumPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	if _, _, err := runCLI(t, "dev-certs", "--out", dir); err != nil {
		t.Fatal(err)
	}
	facs := factories()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	for _, f := range facs {
		f.RegisterFlags(fs)
	}
	// The unix socket's callers are enforcement points; let them assert the user and
	// device (as a proxy that authenticated them would).
	if err := fs.Set("access-trust-headers", "true"); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "authz.sock")
	s, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", dataDir: t.TempDir(),
		services: "risk,compliance,access,remediation", stopTimeout: 5 * time.Second, factories: facs, authzAddr: "unix:" + sock,
		tlsCert: filepath.Join(dir, "service.pem"), tlsKey: filepath.Join(dir, "service-key.pem"), tlsClientCA: filepath.Join(dir, "ca.pem"),
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	admin := dialCert(t, dir, s.GRPCAddr(), "admin")
	setupFlow(t, ctx, admin)
	risk := riskv1.NewRiskServiceClient(admin)
	if _, err := risk.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
		AlertId: "a-1", DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "EICAR test file"}}); err != nil {
		t.Fatal(err)
	}
	waitDecision(t, ctx, accessv1.NewAccessServiceClient(admin), accessv1.Decision_DECISION_BLOCK)

	unix := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	req, _ := http.NewRequest(http.MethodGet, "http://unix/authz", nil)
	req.Header.Set("x-user-id", "u-1")
	req.Header.Set("x-device-id", "dev-1")
	req.Header.Set("x-application-id", "payroll")
	resp, err := unix.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`Help: (https://\S+/blocked\?ref=\S+)\n`).FindStringSubmatch(string(body))
	if resp.StatusCode != http.StatusForbidden || m == nil {
		t.Fatalf("GET /authz = %d, want 403 linking to the end user's page on the HTTPS address:\n%s", resp.StatusCode, body)
	}
	signIn := resp.Header.Get("x-condaccess-sign-in-id")

	tab := browser(t, ctx, chromedp.Flag("ignore-certificate-errors", true)) // no client certificate
	if err := chromedp.Do(tab, chromedp.Navigate(m[1])); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, 10*time.Second, `#status[data-status="blocked"]`, "end user's page over TLS")
	// The access service follows the remediation service with its own service
	// certificate (mutual TLS, allowed_services "access"): the page knows the state
	// of the removal (whichever it is by now), not "unknown".
	waitFor(t, tab, 10*time.Second, `#next[data-remediation]:not([data-remediation=""]):not([data-remediation="UNSPECIFIED"])`, "remediation state over mutual TLS")
	text, err := chromedp.Run(tab, chromedp.Text("main"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "A threat was found on this device.") || !strings.Contains(text, "dev-1") {
		t.Errorf("end user's page says:\n%s", text)
	}
	for _, secret := range []string{"payroll-compliant", "max-medium", "EICAR", "a-1"} {
		if strings.Contains(text, secret) {
			t.Errorf("end user's page shows %q:\n%s", secret, text)
		}
	}
	if _, err := risk.ResolveAlert(ctx, &riskv1.ResolveAlertRequest{AlertId: "a-1",
		Classification: riskv1.AlertClassification_ALERT_CLASSIFICATION_FALSE_POSITIVE}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, 10*time.Second, `#status[data-status="restored"]`, "end user's page turns to restored by itself")
	if d := os.Getenv("CONDACCESS_SCREENSHOT_DIR"); d != "" {
		shoot(t, tab, d, "end-user-restored-tls")
	}

	// The attacks, in the same browser.
	base := "https://" + s.HTTPAddr()
	ref := m[1][strings.Index(m[1], "ref=")+4:]
	// One character of the reference replaced by another.
	changed := ref[:len(ref)/2] + string("AB"[min(1, strings.IndexByte("A", ref[len(ref)/2])+1)]) + ref[len(ref)/2+1:]
	for _, tt := range []struct{ path, want string }{
		{"/blocked?ref=" + signIn, "could not find this sign-in"},
		{"/blocked?ref=" + changed, "could not find this sign-in"},
		{"/devices", "Not signed in"},
	} {
		if err := chromedp.Do(tab, chromedp.Navigate(base+tt.path)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, tab, 10*time.Second, `main .error`, tt.path)
		msg, err := chromedp.Run(tab, chromedp.Text(`main .error`))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(msg, tt.want) {
			t.Errorf("%s says %q, want %q", tt.path, msg, tt.want)
		}
	}
}
