package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/agent"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/server"
)

func init() {
	register("demo", "play the flow end to end in one process with mutual TLS and an enrolled agent: token → enroll → EICAR file → blocked → remediated → allowed", runDemo)
}

// The demo's fixture.
const (
	demoUser   = "u-1"
	demoDevice = "dev-1"
	demoApp    = "payroll"
	demoGroup  = "demo"
)

// demoSteps are the steps of the flow, in order; the demo exits 0 only if every one
// happened.
var demoSteps = []string{
	"alert reported",
	"device risk HIGH",
	"device noncompliant",
	"access BLOCK",
	"investigation opened",
	"quarantine approved",
	"file quarantined",
	"alerts resolved",
	"device compliant",
	"access ALLOW",
}

// demo is one run: what happened so far, printed in the order of the flow. The four
// event streams arrive independently, so a step is recorded when it is seen, with the
// time it happened (the event's commit time, or the decision's), and printed once the
// steps before it are printed.
type demo struct {
	out     io.Writer
	mu      sync.Mutex
	start   time.Time // when the EICAR file was written: earlier changes are the setup
	alertAt time.Time
	trace   string
	steps   map[string]demoStep
	printed int // steps of demoSteps printed so far
	revoked []string
	// Per-stream state.
	active          map[string]bool // the device's active alerts
	sawNoncompliant bool
	pending         string // a quarantine waiting for approval
}

type demoStep struct {
	at            time.Time
	detail, trace string
}

// record records a step (the first time only) and prints what can be printed.
func (d *demo) record(name string, at time.Time, detail, trace string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.steps[name]; ok || at.Before(d.start) {
		return // recorded already, or a change made during the setup
	}
	d.steps[name] = demoStep{at: at, detail: detail, trace: trace}
	if name == demoSteps[0] {
		d.alertAt, d.trace = at, trace
	}
	d.flush()
}

func (d *demo) flush() {
	for d.printed < len(demoSteps) {
		name := demoSteps[d.printed]
		st, ok := d.steps[name]
		if !ok {
			return
		}
		d.printed++
		fmt.Fprintf(d.out, " %2d  %-22s %10s  %-32s  %s\n", d.printed, name, sinceMS(st.at, d.alertAt), orDash(st.trace), st.detail)
		if name == "access BLOCK" {
			for _, r := range d.revoked {
				fmt.Fprintln(d.out, r)
			}
		}
	}
}

func sinceMS(t, t0 time.Time) string {
	return fmt.Sprintf("%+.1fms", float64(t.Sub(t0).Microseconds())/1000)
}

func (d *demo) happened(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.steps[name]
	return ok
}

func (d *demo) missing() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var m []string
	for _, s := range demoSteps {
		if _, ok := d.steps[s]; !ok {
			m = append(m, s)
		}
	}
	return m
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 30*time.Second, "how long the flow may take before the demo gives up")
	keep := fs.Bool("keep", false, "keep the temporary folder (stores, logs, quarantine) after the demo")
	verbose := fs.Bool("v", false, "print the services' logs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}

	dir, err := os.MkdirTemp("", "condaccess-demo-")
	if err != nil {
		return err
	}
	failed := true
	defer func() {
		if *keep || failed {
			fmt.Fprintf(stdout, "\nthe demo's folder (stores, logs, quarantine) is kept: %s\n", dir)
			return
		}
		_ = os.RemoveAll(dir)
	}()
	logPath := filepath.Join(dir, "demo.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	var logOut io.Writer = logFile
	if *verbose {
		logOut = io.MultiWriter(logFile, stderr)
	}
	logger := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelInfo}))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The start is bounded too: a demo that hangs silently is worse than one that fails.
	type started struct {
		s   *runningSuite
		err error
	}
	// Mutual TLS with development certificates, as a deployment would run.
	certs := filepath.Join(dir, "certs")
	if err := runDevCerts(ctx, []string{"--out", certs}, io.Discard, stderr); err != nil {
		return fmt.Errorf("development certificates: %w", err)
	}
	startc := make(chan started, 1)
	go func() {
		s, err := startSuite(ctx, serveOptions{
			grpcAddr: "127.0.0.1:0", dataDir: filepath.Join(dir, "data"),
			services: "risk,compliance,access,remediation", stopTimeout: 2 * time.Second,
			tlsCert: filepath.Join(certs, "service.pem"), tlsKey: filepath.Join(certs, "service-key.pem"),
			tlsClientCA:  filepath.Join(certs, "ca.pem"),
			deviceCACert: filepath.Join(certs, "device-ca.pem"), deviceCAKey: filepath.Join(certs, "device-ca-key.pem"),
		}, logger)
		startc <- started{s, err}
	}()
	var s *runningSuite
	select {
	case r := <-startc:
		if r.err != nil {
			fmt.Fprintf(stdout, "service logs: %s\n", logPath)
			return fmt.Errorf("start the suite: %w", r.err)
		}
		s = r.s
	case <-time.After(*timeout):
		cancel()
		fmt.Fprintf(stdout, "the services did not start within %v; service logs: %s\n", *timeout, logPath)
		return fmt.Errorf("demo failed: the services did not start within %v", *timeout)
	}
	defer s.Stop()
	fmt.Fprintf(stdout, "condaccess demo: the four services in this process, talking gRPC with mutual TLS on %s, stores in %s\n", s.GRPCAddr(), dir)

	err = playDemo(ctx, stdout, s.GRPCAddr(), dir, certs, logger, *timeout)
	if err != nil {
		fmt.Fprintf(stdout, "\nservice logs: %s\n", logPath)
		return err
	}
	failed = false
	return nil
}

func playDemo(ctx context.Context, out io.Writer, addr, dir, certs string, logger *slog.Logger, timeout time.Duration) error {
	// The demo's admin: the admin certificate (secops, policy admin, reader).
	opts, err := server.DialOptions(auth.ClientConfig{CAFile: filepath.Join(certs, "ca.pem"),
		CertFile: filepath.Join(certs, "admin.pem"), KeyFile: filepath.Join(certs, "admin-key.pem")})
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return err
	}
	defer conn.Close()
	risk := riskv1.NewRiskServiceClient(conn)
	devices := compliancev1.NewDeviceServiceClient(conn)
	compliancePolicies := compliancev1.NewCompliancePolicyServiceClient(conn)
	compliance := compliancev1.NewComplianceServiceClient(conn)
	directory := accessv1.NewDirectoryServiceClient(conn)
	caPolicies := accessv1.NewConditionalAccessPolicyServiceClient(conn)
	access := accessv1.NewAccessServiceClient(conn)
	remediation := remediationv1.NewRemediationServiceClient(conn)

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// Setup.
	fmt.Fprintln(out, "\nsetup")
	if _, err := directory.CreateUser(ctx, &accessv1.CreateUserRequest{User: &accessv1.User{UserId: demoUser, DisplayName: "Ada"}}); err != nil {
		return fmt.Errorf("create user: %w", describe(err))
	}
	if _, err := directory.CreateApplication(ctx, &accessv1.CreateApplicationRequest{Application: &accessv1.Application{ApplicationId: demoApp, DisplayName: "Payroll"}}); err != nil {
		return fmt.Errorf("create application: %w", describe(err))
	}
	fmt.Fprintf(out, "  user %s (Ada), application %s (Payroll), device %s (Windows, group %s)\n", demoUser, demoApp, demoDevice, demoGroup)
	if _, err := compliancePolicies.CreateCompliancePolicy(ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
		PolicyId: "max-medium", DisplayName: "Device risk at or under medium",
		MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_MEDIUM, Assignment: &compliancev1.PolicyAssignment{AllDevices: true},
	}}); err != nil {
		return fmt.Errorf("create compliance policy: %w", describe(err))
	}
	fmt.Fprintln(out, "  compliance policy max-medium: device risk at or under MEDIUM, every device")
	if _, err := devices.EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
		DeviceId: demoDevice, DisplayName: "Ada's laptop", Platform: commonv1.Platform_PLATFORM_WINDOWS,
		OsVersion: "10.0.22631", OwnerUserId: demoUser, Groups: []string{demoGroup},
	}}); err != nil {
		return fmt.Errorf("enroll device: %w", describe(err))
	}
	if _, err := caPolicies.CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: &accessv1.ConditionalAccessPolicy{
		PolicyId: "payroll-compliant", DisplayName: "Payroll requires a compliant device", State: accessv1.PolicyState_POLICY_STATE_ENABLED,
		Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{Include: []string{demoApp}},
		GrantControls: &accessv1.GrantControls{Require: []accessv1.GrantControl{accessv1.GrantControl_GRANT_CONTROL_COMPLIANT_DEVICE}},
	}}); err != nil {
		return fmt.Errorf("create Conditional Access policy: %w", describe(err))
	}
	fmt.Fprintln(out, "  Conditional Access policy payroll-compliant: payroll requires a compliant device")
	// Semi-automatic remediation for the demo's group, so the block can be seen before
	// the quarantine lifts it: the demo approves the quarantine as a SecOps admin would.
	if _, err := remediation.SetAutomationLevel(ctx, &remediationv1.SetAutomationLevelRequest{Setting: &remediationv1.AutomationLevelSetting{
		DeviceGroup: demoGroup, Level: remediationv1.AutomationLevel_AUTOMATION_LEVEL_SEMI,
	}}); err != nil {
		return fmt.Errorf("set automation level: %w", describe(err))
	}
	fmt.Fprintf(out, "  automation level of group %s: SEMI (remediation actions wait for a SecOps approval)\n", demoGroup)

	evaluate := func(ctx context.Context) (*accessv1.EvaluateAccessResponse, error) {
		return access.EvaluateAccess(ctx, &accessv1.EvaluateAccessRequest{UserId: demoUser, DeviceId: demoDevice, ApplicationId: demoApp})
	}
	waitDecision := func(ctx context.Context, want accessv1.Decision) (*accessv1.EvaluateAccessResponse, error) {
		for {
			r, err := evaluate(ctx)
			if err != nil {
				return nil, describe(err)
			}
			if r.GetDecision() == want {
				return r, nil
			}
			select {
			case <-ctx.Done():
				return r, fmt.Errorf("access is still %s (%s): %w", short(r.GetDecision()), reasonCodes(r.GetReasons()), ctx.Err())
			case <-time.After(2 * time.Millisecond):
			}
		}
	}
	before, err := waitDecision(ctx, accessv1.Decision_DECISION_ALLOW)
	if err != nil {
		return fmt.Errorf("before the alert, access should be allowed: %w", err)
	}
	fmt.Fprintf(out, "  access before the alert: %s (%s), session %s\n", short(before.GetDecision()), reasonCodes(before.GetReasons()), orDash(before.GetSessionId()))

	// The agent, in this process, on a temporary watched folder.
	watchDir, quarantineDir := filepath.Join(dir, "watch"), filepath.Join(dir, "quarantine")
	for _, d := range []string{watchDir, quarantineDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// The device proves itself: an admin creates a single-use token, the agent
	// generates its key and enrolls, then speaks with its own certificate only.
	deviceConn, err := demoEnroll(ctx, out, addr, certs, compliancev1.NewDeviceIdentityServiceClient(conn), filepath.Join(dir, "agent-state"))
	if err != nil {
		return err
	}
	defer deviceConn.Close()
	a, err := agent.New(agent.Config{
		DeviceID: demoDevice, Hostname: "ada-laptop", WatchDirs: []string{watchDir}, QuarantineDir: quarantineDir,
		Risk: riskv1.NewRiskServiceClient(deviceConn), Remediation: remediationv1.NewAgentServiceClient(deviceConn), Logger: logger.With("component", "agent"),
		Debounce: 20 * time.Millisecond,
	})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	agentCtx, stopAgent := context.WithCancel(ctx)
	agentDone := make(chan error, 1)
	go func() { agentDone <- a.Run(agentCtx) }()
	defer func() {
		stopAgent()
		<-agentDone
	}()
	for {
		ok, changed := a.Connected()
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the agent did not connect to the remediation service: %w", ctx.Err())
		case err := <-agentDone:
			return fmt.Errorf("the agent stopped: %v", err)
		case <-changed:
		}
	}
	fmt.Fprintf(out, "  agent for %s: watching %s, connected\n", demoDevice, watchDir)

	d := &demo{out: out, steps: map[string]demoStep{}, active: map[string]bool{}}
	events := make(chan func(), 64)
	watchCtx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopWatch()
	watchErr := make(chan error, 4)
	// Each stream replays from revision 0 (the store is new), so nothing is missed; the
	// steps are matched in order, so what happened during setup does not count.
	wg.Add(4)
	go func() {
		defer wg.Done()
		watchErr <- demoWatch(watchCtx, func(ctx context.Context, emit func(func())) error {
			st, err := risk.WatchRiskEvents(ctx, &riskv1.WatchRiskEventsRequest{})
			if err != nil {
				return err
			}
			for {
				m, err := st.Recv()
				if err != nil {
					return err
				}
				if ev := m.GetEvent(); ev != nil {
					emit(func() { d.onRisk(ev) })
				}
			}
		}, events)
	}()
	go func() {
		defer wg.Done()
		watchErr <- demoWatch(watchCtx, func(ctx context.Context, emit func(func())) error {
			st, err := compliance.WatchComplianceEvents(ctx, &compliancev1.WatchComplianceEventsRequest{})
			if err != nil {
				return err
			}
			for {
				m, err := st.Recv()
				if err != nil {
					return err
				}
				if ev := m.GetEvent(); ev != nil {
					emit(func() { d.onCompliance(ev) })
				}
			}
		}, events)
	}()
	go func() {
		defer wg.Done()
		watchErr <- demoWatch(watchCtx, func(ctx context.Context, emit func(func())) error {
			st, err := access.WatchSessionEvents(ctx, &accessv1.WatchSessionEventsRequest{})
			if err != nil {
				return err
			}
			for {
				m, err := st.Recv()
				if err != nil {
					return err
				}
				if ev := m.GetEvent(); ev != nil {
					emit(func() { d.onSession(ev) })
				}
			}
		}, events)
	}()
	go func() {
		defer wg.Done()
		watchErr <- demoWatch(watchCtx, func(ctx context.Context, emit func(func())) error {
			st, err := remediation.WatchInvestigationEvents(ctx, &remediationv1.WatchInvestigationEventsRequest{})
			if err != nil {
				return err
			}
			for {
				m, err := st.Recv()
				if err != nil {
					return err
				}
				if ev := m.GetEvent(); ev != nil {
					emit(func() { d.onInvestigation(ev) })
				}
			}
		}, events)
	}()

	// The flow.
	fmt.Fprintf(out, "\nflow %22s %10s  %-32s  %s\n", "", "since alert", "trace", "what")
	eicar := filepath.Join(watchDir, "invoice.pdf.exe")
	d.mu.Lock()
	d.start = time.Now()
	d.mu.Unlock()
	if err := os.WriteFile(eicar, agent.EICAR(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(out, "  0  %-22s %10s  %-32s  %s\n", "EICAR file opened", "-", "-", eicar)

	// Decisions are asked for while the loop runs (never blocking it): the block once
	// the device is noncompliant, the allow once it is compliant again.
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	approved := false
	decide := func(step string, want accessv1.Decision) error {
		r, err := evaluate(ctx)
		if err != nil {
			return describe(err)
		}
		if r.GetDecision() == want {
			d.record(step, time.Now(), fmt.Sprintf("%s for %s on %s: %s", short(r.GetDecision()), demoUser, demoApp, reasonLine(r)), r.GetTraceId())
		}
		return nil
	}
	for len(d.missing()) > 0 {
		select {
		case f := <-events:
			f()
		case err := <-watchErr:
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("event stream: %w", describe(err))
			}
		case <-tick.C:
			if d.happened("device noncompliant") && !d.happened("access BLOCK") {
				if err := decide("access BLOCK", accessv1.Decision_DECISION_BLOCK); err != nil && ctx.Err() == nil {
					return err
				}
			}
			if d.happened("device compliant") && !d.happened("access ALLOW") {
				if err := decide("access ALLOW", accessv1.Decision_DECISION_ALLOW); err != nil && ctx.Err() == nil {
					return err
				}
			}
		case <-ctx.Done():
			fmt.Fprintf(out, "\nthe flow did not finish in %v; these steps did not happen: %s\n", timeout, strings.Join(d.missing(), ", "))
			return fmt.Errorf("demo failed: %d of %d steps did not happen: %s", len(d.missing()), len(demoSteps), strings.Join(d.missing(), ", "))
		}
		// The quarantine waits for approval; approve it once the block was shown.
		if id := d.pendingQuarantine(); id != "" && !approved && d.happened("access BLOCK") && d.happened("investigation opened") {
			r, err := remediation.ApproveAction(ctx, &remediationv1.ApproveActionRequest{ActionId: id, Comment: "approved by the condaccess demo"})
			if err != nil {
				return fmt.Errorf("approve %s: %w", id, describe(err))
			}
			approved = true
			d.record("quarantine approved", time.Now(), fmt.Sprintf("action %s %s approved by %s", id, short(r.GetAction().GetType()), orDash(r.GetAction().GetApproval().GetDecidedBy())), d.trace)
		}
	}
	if _, err := os.Stat(eicar); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("the EICAR file is still in the watched folder after the quarantine")
	}
	d.mu.Lock()
	total := d.steps["access ALLOW"].at.Sub(d.alertAt)
	d.mu.Unlock()
	fmt.Fprintf(out, "\nevery step happened in %v after the alert; the alert's trace is %s\n", total.Round(time.Millisecond), d.trace)
	return nil
}

// demoWatch runs one stream until ctx ends, passing its events to the demo's loop.
func demoWatch(ctx context.Context, run func(ctx context.Context, emit func(func())) error, events chan<- func()) error {
	err := run(ctx, func(f func()) {
		select {
		case events <- f:
		case <-ctx.Done():
		}
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func reasonLine(r *accessv1.EvaluateAccessResponse) string {
	var parts []string
	for _, x := range r.GetReasons() {
		parts = append(parts, x.GetCode()+" ("+x.GetMessage()+")")
	}
	return orDash(strings.Join(parts, "; "))
}

func (d *demo) onRisk(ev *riskv1.RiskEvent) {
	tr, at := traceIDOf(ev.GetTraceContext()), ev.GetEventTime().AsTime()
	switch p := ev.GetPayload().(type) {
	case *riskv1.RiskEvent_AlertChanged:
		a := p.AlertChanged.GetAlert()
		if a.GetDeviceId() != demoDevice {
			return
		}
		switch p.AlertChanged.GetType() {
		case riskv1.AlertChangeType_ALERT_CHANGE_TYPE_REPORTED:
			d.mu.Lock()
			d.active[a.GetAlertId()] = true
			d.mu.Unlock()
			d.record("alert reported", at, fmt.Sprintf("alert %s, %s: %s (by %s)", a.GetAlertId(), short(a.GetSeverity()), a.GetTitle(), orDash(a.GetDetectionSource())), tr)
		case riskv1.AlertChangeType_ALERT_CHANGE_TYPE_RESOLVED:
			d.mu.Lock()
			delete(d.active, a.GetAlertId())
			left := len(d.active)
			d.mu.Unlock()
			if left == 0 {
				d.record("alerts resolved", at, fmt.Sprintf("alert %s resolved %s by %s (investigation %s)", a.GetAlertId(), short(a.GetClassification()), orDash(a.GetResolvedBy()), orDash(a.GetInvestigationId())), tr)
			}
		}
	case *riskv1.RiskEvent_DeviceRiskChanged:
		r := p.DeviceRiskChanged.GetDeviceRisk()
		if r.GetDeviceId() == demoDevice && r.GetLevel() == commonv1.RiskLevel_RISK_LEVEL_HIGH {
			prev := short(p.DeviceRiskChanged.GetPreviousLevel())
			if prev == "-" {
				prev = "NONE"
			}
			d.record("device risk HIGH", at, fmt.Sprintf("%s -> %s, from alert %s", prev, short(r.GetLevel()), p.DeviceRiskChanged.GetCauseAlertId()), tr)
		}
	}
}

func (d *demo) onCompliance(ev *compliancev1.ComplianceEvent) {
	c := ev.GetDeviceComplianceChanged().GetDeviceCompliance()
	if c.GetDeviceId() != demoDevice {
		return
	}
	tr, at := traceIDOf(ev.GetTraceContext()), ev.GetEventTime().AsTime()
	switch c.GetState() {
	case commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT:
		d.mu.Lock()
		d.sawNoncompliant = d.sawNoncompliant || !at.Before(d.start)
		d.mu.Unlock()
		d.record("device noncompliant", at, c.GetReason(), tr)
	case commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT:
		d.mu.Lock()
		after := d.sawNoncompliant
		d.mu.Unlock()
		if after {
			d.record("device compliant", at, c.GetReason(), tr)
		}
	}
}

func (d *demo) onSession(ev *accessv1.SessionEvent) {
	r := ev.GetSessionRevoked()
	if r == nil || r.GetSession().GetDeviceId() != demoDevice {
		return
	}
	line := fmt.Sprintf("     %-22s %10s  %-32s  session %s of %s on %s revoked: %s", "(session revoked)", sinceMS(ev.GetEventTime().AsTime(), d.alertAt), orDash(traceIDOf(ev.GetTraceContext())),
		r.GetSession().GetSessionId(), r.GetSession().GetUserId(), r.GetSession().GetApplicationId(), r.GetReasonCode())
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, shown := d.steps["access BLOCK"]; shown && d.printed > slices.Index(demoSteps, "access BLOCK") {
		fmt.Fprintln(d.out, line)
		return
	}
	d.revoked = append(d.revoked, line)
}

func (d *demo) onInvestigation(ev *remediationv1.InvestigationEvent) {
	tr, at := traceIDOf(ev.GetTraceContext()), ev.GetEventTime().AsTime()
	switch p := ev.GetPayload().(type) {
	case *remediationv1.InvestigationEvent_InvestigationChanged:
		inv := p.InvestigationChanged.GetInvestigation()
		if inv.GetDeviceId() == demoDevice {
			if t := traceIDOf(inv.GetTraceContext()); t != "" {
				tr = t
			}
			d.record("investigation opened", at, fmt.Sprintf("investigation %s, %s, alerts %s", inv.GetInvestigationId(), short(inv.GetState()), strings.Join(inv.GetAlertIds(), ",")), tr)
		}
	case *remediationv1.InvestigationEvent_ActionChanged:
		a := p.ActionChanged.GetAction()
		if a.GetDeviceId() != demoDevice || a.GetType() != remediationv1.ActionType_ACTION_TYPE_QUARANTINE_FILE {
			return
		}
		switch a.GetState() {
		case remediationv1.ActionState_ACTION_STATE_PENDING_APPROVAL:
			d.mu.Lock()
			if d.pending == "" {
				d.pending = a.GetActionId()
			}
			d.mu.Unlock()
		case remediationv1.ActionState_ACTION_STATE_SUCCEEDED:
			d.record("file quarantined", at, fmt.Sprintf("action %s: %s moved to quarantine (%s)", a.GetActionId(), evidenceString(a.GetTarget()), orDash(a.GetResult())), tr)
		}
	}
}

func (d *demo) pendingQuarantine() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pending
}
