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
	register("demo", "play the flow end to end in one process: EICAR file → blocked → remediated → allowed", runDemo)
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

// demo is one run: the printer and what happened so far.
type demo struct {
	out     io.Writer
	mu      sync.Mutex
	alertAt time.Time
	trace   string
	done    map[string]bool
	n       int
	pending string // a quarantine waiting for approval
}

// step prints a step as it happens, with the time since the alert and the trace id.
func (d *demo) step(name, detail, trace string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done[name] {
		return
	}
	now := time.Now()
	if name == demoSteps[0] {
		d.alertAt = now
		d.trace = trace
	}
	d.done[name] = true
	d.n++
	since := "-"
	if !d.alertAt.IsZero() {
		since = fmt.Sprintf("+%.1fms", float64(now.Sub(d.alertAt).Microseconds())/1000)
	}
	fmt.Fprintf(d.out, " %2d  %-22s %10s  %-32s  %s\n", d.n, name, since, orDash(trace), detail)
}

func (d *demo) happened(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.done[name]
}

func (d *demo) missing() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var m []string
	for _, s := range demoSteps {
		if !d.done[s] {
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
	s, err := startSuite(ctx, serveOptions{
		grpcAddr: "127.0.0.1:0", dataDir: filepath.Join(dir, "data"),
		services: "risk,compliance,access,remediation", stopTimeout: 2 * time.Second,
	}, logger)
	if err != nil {
		return fmt.Errorf("start the suite: %w", err)
	}
	defer s.Stop()
	fmt.Fprintf(stdout, "condaccess demo: the four services in this process, talking gRPC on %s, stores in %s\n", s.GRPCAddr(), dir)

	err = playDemo(ctx, stdout, s.GRPCAddr(), dir, logger, *timeout)
	if err != nil {
		fmt.Fprintf(stdout, "\nservice logs: %s\n", logPath)
		return err
	}
	failed = false
	return nil
}

func playDemo(ctx context.Context, out io.Writer, addr, dir string, logger *slog.Logger, timeout time.Duration) error {
	opts, err := server.DialOptions(auth.ClientConfig{Insecure: true})
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
	if _, err := devices.EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
		DeviceId: demoDevice, DisplayName: "Ada's laptop", Platform: commonv1.Platform_PLATFORM_WINDOWS,
		OsVersion: "10.0.22631", OwnerUserId: demoUser, Groups: []string{demoGroup},
	}}); err != nil {
		return fmt.Errorf("enroll device: %w", describe(err))
	}
	fmt.Fprintf(out, "  user %s (Ada), application %s (Payroll), device %s (Windows, group %s)\n", demoUser, demoApp, demoDevice, demoGroup)
	if _, err := compliancePolicies.CreateCompliancePolicy(ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
		PolicyId: "max-medium", DisplayName: "Device risk at or under medium",
		MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_MEDIUM, Assignment: &compliancev1.PolicyAssignment{AllDevices: true},
	}}); err != nil {
		return fmt.Errorf("create compliance policy: %w", describe(err))
	}
	fmt.Fprintln(out, "  compliance policy max-medium: device risk at or under MEDIUM, every device")
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
	a, err := agent.New(agent.Config{
		DeviceID: demoDevice, Hostname: "ada-laptop", WatchDirs: []string{watchDir}, QuarantineDir: quarantineDir,
		Risk: risk, Remediation: remediationv1.NewAgentServiceClient(conn), Logger: logger.With("component", "agent"),
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

	d := &demo{out: out, done: map[string]bool{}}
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
	if err := os.WriteFile(eicar, agent.EICAR(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(out, "  0  %-22s %10s  %-32s  %s\n", "EICAR file opened", "-", "-", eicar)

	var blockShown, approved bool
	for len(d.missing()) > 0 {
		select {
		case f := <-events:
			f()
		case err := <-watchErr:
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("event stream: %w", describe(err))
			}
		case <-ctx.Done():
			fmt.Fprintf(out, "\nthe flow did not finish in %v; these steps did not happen: %s\n", timeout, strings.Join(d.missing(), ", "))
			return fmt.Errorf("demo failed: %d of %d steps did not happen: %s", len(d.missing()), len(demoSteps), strings.Join(d.missing(), ", "))
		}
		// Access is blocked once the device is noncompliant: show the decision.
		if d.happened("device noncompliant") && !blockShown {
			r, err := waitDecision(ctx, accessv1.Decision_DECISION_BLOCK)
			if err != nil {
				continue // reported as missing at the deadline
			}
			blockShown = true
			d.step("access BLOCK", fmt.Sprintf("%s for %s on %s: %s", short(r.GetDecision()), demoUser, demoApp, reasonLine(r)), r.GetTraceId())
		}
		// The quarantine waits for approval; approve it once the block was shown.
		if id := d.pendingQuarantine(); id != "" && blockShown && !approved && d.happened("investigation opened") {
			r, err := remediation.ApproveAction(ctx, &remediationv1.ApproveActionRequest{ActionId: id, Comment: "approved by the condaccess demo"})
			if err != nil {
				return fmt.Errorf("approve %s: %w", id, describe(err))
			}
			approved = true
			d.step("quarantine approved", fmt.Sprintf("action %s %s approved by %s", id, short(r.GetAction().GetType()), orDash(r.GetAction().GetApproval().GetDecidedBy())), d.trace)
		}
		if d.happened("device compliant") && !d.happened("access ALLOW") {
			r, err := waitDecision(ctx, accessv1.Decision_DECISION_ALLOW)
			if err != nil {
				continue
			}
			d.step("access ALLOW", fmt.Sprintf("%s for %s on %s: %s", short(r.GetDecision()), demoUser, demoApp, reasonLine(r)), r.GetTraceId())
		}
	}
	if _, err := os.Stat(eicar); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("the EICAR file is still in the watched folder after the quarantine")
	}
	d.mu.Lock()
	total := time.Since(d.alertAt)
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
	tr := traceIDOf(ev.GetTraceContext())
	switch p := ev.GetPayload().(type) {
	case *riskv1.RiskEvent_AlertChanged:
		a := p.AlertChanged.GetAlert()
		if a.GetDeviceId() != demoDevice {
			return
		}
		switch p.AlertChanged.GetType() {
		case riskv1.AlertChangeType_ALERT_CHANGE_TYPE_REPORTED:
			d.step("alert reported", fmt.Sprintf("alert %s, %s: %s (by %s)", a.GetAlertId(), short(a.GetSeverity()), a.GetTitle(), orDash(a.GetDetectionSource())), tr)
		case riskv1.AlertChangeType_ALERT_CHANGE_TYPE_RESOLVED:
			if d.happened("file quarantined") {
				d.step("alerts resolved", fmt.Sprintf("alert %s resolved %s by %s (investigation %s)", a.GetAlertId(), short(a.GetClassification()), orDash(a.GetResolvedBy()), orDash(a.GetInvestigationId())), tr)
			}
		}
	case *riskv1.RiskEvent_DeviceRiskChanged:
		r := p.DeviceRiskChanged.GetDeviceRisk()
		if r.GetDeviceId() == demoDevice && r.GetLevel() == commonv1.RiskLevel_RISK_LEVEL_HIGH && d.happened("alert reported") {
			prev := short(p.DeviceRiskChanged.GetPreviousLevel())
			if prev == "-" {
				prev = "NONE"
			}
			d.step("device risk HIGH", fmt.Sprintf("%s -> %s, from alert %s", prev, short(r.GetLevel()), p.DeviceRiskChanged.GetCauseAlertId()), tr)
		}
	}
}

func (d *demo) onCompliance(ev *compliancev1.ComplianceEvent) {
	c := ev.GetDeviceComplianceChanged().GetDeviceCompliance()
	if c.GetDeviceId() != demoDevice {
		return
	}
	tr := traceIDOf(ev.GetTraceContext())
	switch c.GetState() {
	case commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT:
		if d.happened("device risk HIGH") {
			d.step("device noncompliant", c.GetReason(), tr)
		}
	case commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT:
		if d.happened("alerts resolved") {
			d.step("device compliant", c.GetReason(), tr)
		}
	}
}

func (d *demo) onSession(ev *accessv1.SessionEvent) {
	if r := ev.GetSessionRevoked(); r != nil && r.GetSession().GetDeviceId() == demoDevice {
		d.mu.Lock()
		defer d.mu.Unlock()
		fmt.Fprintf(d.out, "     %-22s %10s  %-32s  session %s of %s on %s revoked: %s\n", "", "", orDash(traceIDOf(ev.GetTraceContext())),
			r.GetSession().GetSessionId(), r.GetSession().GetUserId(), r.GetSession().GetApplicationId(), r.GetReasonCode())
	}
}

func (d *demo) onInvestigation(ev *remediationv1.InvestigationEvent) {
	tr := traceIDOf(ev.GetTraceContext())
	switch p := ev.GetPayload().(type) {
	case *remediationv1.InvestigationEvent_InvestigationChanged:
		inv := p.InvestigationChanged.GetInvestigation()
		if inv.GetDeviceId() == demoDevice {
			if t := traceIDOf(inv.GetTraceContext()); t != "" {
				tr = t
			}
			d.step("investigation opened", fmt.Sprintf("investigation %s, %s, alerts %s", inv.GetInvestigationId(), short(inv.GetState()), strings.Join(inv.GetAlertIds(), ",")), tr)
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
			d.step("file quarantined", fmt.Sprintf("action %s: %s moved to quarantine (%s)", a.GetActionId(), evidenceString(a.GetTarget()), orDash(a.GetResult())), tr)
		}
	}
}

func (d *demo) pendingQuarantine() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pending
}
