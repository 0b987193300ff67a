package remediationgrpc_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/testing/protocmp"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/server"
	"github.com/condaccess/condaccess/services/remediation"
	"github.com/condaccess/condaccess/services/remediation/remediationapp"
	"github.com/condaccess/condaccess/services/remediation/remediationgrpc"
	"github.com/condaccess/condaccess/services/remediation/remediationstore"
	"github.com/condaccess/condaccess/services/risk/risktest"
)

func TestMain(m *testing.M) {
	otel.SetTracerProvider(sdktrace.NewTracerProvider())
	otel.SetTextMapPropagator(propagation.TraceContext{})
	os.Exit(m.Run())
}

const sha = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"

// fakeDevices is the compliance inventory with error injection.
type fakeDevices struct {
	mu     sync.Mutex
	groups map[string][]string
	err    error
}

func (f *fakeDevices) DeviceGroups(_ context.Context, id string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	g, ok := f.groups[id]
	if !ok {
		return nil, remediation.ErrNotFound
	}
	return g, nil
}

// flakyRisk fails ResolveAlert with UNAVAILABLE while down is set.
type flakyRisk struct {
	remediation.RiskClient
	down  atomic.Bool
	calls atomic.Int64
}

func (f *flakyRisk) ResolveAlert(ctx context.Context, alertID, invID string) error {
	f.calls.Add(1)
	if f.down.Load() {
		return status.Error(codes.Unavailable, "risk down")
	}
	return f.RiskClient.ResolveAlert(ctx, alertID, invID)
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	t       *testing.T
	risk    riskv1.RiskServiceClient
	riskH   *risktest.Harness
	rc      *flakyRisk
	devices *fakeDevices
	clock   *clock
	dir     string
	opts    options
	seeded  []string
	running bool

	svc    *remediation.Service
	store  *remediationstore.Store
	client remediationv1.RemediationServiceClient
	agents remediationv1.AgentServiceClient
	stop   func()
	hello  time.Duration
}

type options struct {
	fakeClock     bool
	riskRetention int64
	// untrustedReporter leaves the risk service's development-mode reporter as
	// DEVELOPMENT (by default it counts as the device itself).
	untrustedReporter bool
	// unknownAgents reports alerts for devices whose agent never said hello (by
	// default report seeds the agent with detection root watchedRoot).
	unknownAgents bool
	// riskAuth runs the risk service with mutual TLS (the env's own risk client is a
	// service certificate).
	riskAuth *riskTLS
	// helloTimeout is the agent hello deadline (0: the default).
	helloTimeout time.Duration
}

// riskTLS is a mutual-TLS risk service's CA.
type riskTLS struct{ ca *testCA }

// watchedRoot is the detection root of the test agents; fileEvidence paths lie under it.
const watchedRoot = "/watched"

func newEnv(t *testing.T, o options) *env {
	ro := risktest.Options{ProgressInterval: 50 * time.Millisecond, Retention: o.riskRetention, DevelopmentReporterIsDevice: !o.untrustedReporter}
	if o.riskAuth != nil {
		cfg := o.riskAuth.ca.server()
		ro.Auth, ro.ClientAuth = &cfg, o.riskAuth.ca.client("remediation", nil, commonv1.Role_ROLE_SERVICE)
	}
	h := risktest.StartWith(t, ro)
	e := &env{
		t: t, risk: h.Client, riskH: h, dir: t.TempDir(), opts: o, hello: o.helloTimeout,
		rc:      &flakyRisk{RiskClient: remediationapp.NewRiskClient(h.Client)},
		devices: &fakeDevices{groups: map[string][]string{}},
	}
	if o.fakeClock {
		e.clock = &clock{t: time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)}
	}
	e.start()
	t.Cleanup(func() { e.stop() })
	return e
}

// start runs the remediation service on its data directory (again, after stop).
func (e *env) start() {
	t := e.t
	ctx, cancel := context.WithCancel(context.Background())
	st, err := remediationstore.Open(ctx, remediationstore.Options{
		Path: filepath.Join(e.dir, "remediation.db"), Encode: remediationgrpc.EncodeEvent,
		ProgressInterval: 50 * time.Millisecond, Synchronous: "NORMAL",
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := remediation.Config{
		Store: st, Risk: e.rc, Devices: e.devices, Tracing: remediationapp.OtelTracing{},
		ApprovalExpiry: time.Hour, ActionTimeout: time.Minute, ResolveRetryMin: 10 * time.Millisecond, ResolveRetryMax: 50 * time.Millisecond,
	}
	if e.clock != nil {
		cfg.Now = e.clock.Now
	}
	svc := remediation.New(cfg)
	srv, err := server.New(server.Config{Name: "remediationtest", Auth: auth.Config{Insecure: true}, GracefulStopTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	remediationgrpc.Register(srv.Registrar(), remediationgrpc.New(remediationgrpc.Config{Service: svc, Store: st, HelloTimeout: e.hello}))
	lis := bufconn.Listen(1 << 20)
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufconn", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	e.store, e.running = st, true
	e.seedAgents() // before the consumer reads any alert
	cons := remediationapp.NewConsumer(svc, st, e.risk, remediation.SeverityHigh, slog.New(slog.DiscardHandler))
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = svc.Run(ctx) }()
	go func() { defer wg.Done(); _ = cons.Run(ctx) }()
	e.svc = svc
	// Wait until the consumer has its cursor (resynced or loaded), so that alerts
	// reported from now on arrive as events, with their trace context.
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := cons.WaitRevision(wctx, 0); err != nil {
		t.Fatalf("consumer never synced: %v", err)
	}
	e.client, e.agents = remediationv1.NewRemediationServiceClient(conn), remediationv1.NewAgentServiceClient(conn)
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			e.running = false
			cancel()
			wg.Wait()
			conn.Close()
			sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
			defer c()
			srv.Stop(sctx)
			st.Close()
		})
	}
}

func (e *env) restart() { e.stop(); e.start() }

// seedAgents records the agents of the devices alerts were reported for, with
// detection root watchedRoot, unless they said hello already.
func (e *env) seedAgents() {
	e.t.Helper()
	for _, device := range e.seeded {
		if _, err := e.store.Agent(testCtx(e.t), device); !errors.Is(err, remediation.ErrNotFound) {
			continue
		}
		err := e.store.Update(testCtx(e.t), func(tx remediation.Tx) error {
			return tx.PutAgent(&remediation.Agent{DeviceID: device, Version: "test", DetectionRoots: []string{watchedRoot}})
		})
		if err != nil {
			e.t.Fatal(err)
		}
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fileEvidence is a file named by SHA-256 at path under watchedRoot.
func fileEvidence(path string) *commonv1.Evidence {
	return &commonv1.Evidence{Kind: &commonv1.Evidence_File{File: &commonv1.FileEvidence{Path: watchedRoot + path, Sha256: sha, SizeBytes: 68}}}
}

func (e *env) report(alertID, device string, sev commonv1.Severity, ev ...*commonv1.Evidence) {
	e.t.Helper()
	e.reportWith(e.risk, alertID, device, sev, ev...)
}

// reportWith reports an alert through the risk client c (its identity is the
// alert's reporter). Unless unknownAgents, the device's agent is first known with
// the detection root watchedRoot (as if it had said hello before).
func (e *env) reportWith(c riskv1.RiskServiceClient, alertID, device string, sev commonv1.Severity, ev ...*commonv1.Evidence) {
	e.t.Helper()
	if !e.opts.unknownAgents {
		e.seeded = append(e.seeded, device)
		if e.running {
			e.seedAgents()
		}
	}
	_, err := c.ReportAlert(testCtx(e.t), &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
		AlertId: alertID, DeviceId: device, Severity: sev, Title: "Malicious file", Evidence: ev,
	}})
	if err != nil {
		e.t.Fatalf("ReportAlert: %v", err)
	}
}

// waitInvestigation waits, on the investigation event stream, until the device's
// newest investigation satisfies ok.
func (e *env) waitInvestigation(device string, ok func(*remediationv1.Investigation) bool) *remediationv1.Investigation {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	check := func() *remediationv1.Investigation {
		resp, err := e.client.ListInvestigations(ctx, &remediationv1.ListInvestigationsRequest{DeviceId: device, PageSize: 1})
		if err != nil || len(resp.GetInvestigations()) == 0 {
			return nil
		}
		if inv := resp.GetInvestigations()[0]; ok(inv) {
			return inv
		}
		return nil
	}
	stream, err := e.client.WatchInvestigationEvents(ctx, &remediationv1.WatchInvestigationEventsRequest{})
	if err != nil {
		e.t.Fatal(err)
	}
	for {
		if inv := check(); inv != nil {
			return inv
		}
		if _, err := stream.Recv(); err != nil {
			resp, _ := e.client.ListInvestigations(context.Background(), &remediationv1.ListInvestigationsRequest{DeviceId: device, PageSize: 1})
			e.t.Fatalf("investigation of %s never matched (%v); last: %v", device, err, resp)
		}
	}
}

// waitRisk waits, on the risk event stream, until the device's risk level is want.
func (e *env) waitRisk(device string, want commonv1.RiskLevel) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := e.risk.WatchRiskEvents(ctx, &riskv1.WatchRiskEventsRequest{})
	if err != nil {
		e.t.Fatal(err)
	}
	for {
		r, err := e.risk.GetDeviceRisk(ctx, &riskv1.GetDeviceRiskRequest{DeviceId: device})
		if err == nil && r.GetDeviceRisk().GetLevel() == want {
			return
		}
		if _, err := stream.Recv(); err != nil {
			e.t.Fatalf("risk of %s never became %v: %v (last %v)", device, want, err, r)
		}
	}
}

func state(s remediationv1.InvestigationState) func(*remediationv1.Investigation) bool {
	return func(inv *remediationv1.Investigation) bool { return inv.GetState() == s }
}

// agent is a hand-driven AgentService.Connect client.
type agent struct {
	t      *testing.T
	stream grpc.BidiStreamingClient[remediationv1.ConnectRequest, remediationv1.ConnectResponse]
	cancel context.CancelFunc
}

func (e *env) connect(device string) *agent {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	e.t.Cleanup(cancel)
	stream, err := e.agents.Connect(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := stream.Send(&remediationv1.ConnectRequest{Kind: &remediationv1.ConnectRequest_Hello{Hello: &remediationv1.AgentHello{DeviceId: device, AgentVersion: "test", DetectionRoots: []string{watchedRoot}}}}); err != nil {
		e.t.Fatal(err)
	}
	m, err := stream.Recv()
	if err != nil || m.GetAck() == nil {
		e.t.Fatalf("ack: %v %v", m, err)
	}
	if got := m.GetAck().GetHeartbeatInterval().AsDuration(); got != remediation.DefaultHeartbeatInterval {
		e.t.Errorf("heartbeat interval = %v", got)
	}
	return &agent{t: e.t, stream: stream, cancel: cancel}
}

func (a *agent) command() *remediationv1.ActionCommand {
	a.t.Helper()
	m, err := a.stream.Recv()
	if err != nil {
		a.t.Fatalf("waiting for a command: %v", err)
	}
	if m.GetCommand() == nil {
		a.t.Fatalf("got %v, want a command", m)
	}
	return m.GetCommand()
}

func (a *agent) result(id string, ok bool, qid string) {
	a.t.Helper()
	st := remediationv1.ActionResultStatus_ACTION_RESULT_STATUS_FAILED
	if ok {
		st = remediationv1.ActionResultStatus_ACTION_RESULT_STATUS_SUCCEEDED
	}
	if err := a.stream.Send(&remediationv1.ConnectRequest{Kind: &remediationv1.ConnectRequest_Result{Result: &remediationv1.ActionResult{
		ActionId: id, Status: st, Message: "done by test", QuarantineId: qid,
	}}}); err != nil {
		a.t.Fatal(err)
	}
}

func (e *env) action(id string) *remediationv1.Action {
	e.t.Helper()
	r, err := e.client.GetAction(testCtx(e.t), &remediationv1.GetActionRequest{ActionId: id})
	if err != nil {
		e.t.Fatal(err)
	}
	return r.GetAction()
}

func TestFullAutomationQuarantinesAndResolvesAlerts(t *testing.T) {
	e := newEnv(t, options{})
	e.devices.groups["dev-1"] = []string{"finance"}
	ctx := testCtx(t)
	e.report("a-1", "dev-1", commonv1.Severity_SEVERITY_HIGH, fileEvidence("/home/u/evil.com"))
	e.waitRisk("dev-1", commonv1.RiskLevel_RISK_LEVEL_HIGH)

	ag := e.connect("dev-1")
	cmd := ag.command()
	if d := cmp.Diff(&remediationv1.ActionCommand{ActionId: cmd.GetActionId(), Type: remediationv1.ActionType_ACTION_TYPE_QUARANTINE_FILE, Target: fileEvidence("/home/u/evil.com")}, cmd, protocmp.Transform()); d != "" {
		t.Errorf("command (-want +got):\n%s", d)
	}
	ag.result(cmd.GetActionId(), true, "q-1")

	inv := e.waitInvestigation("dev-1", state(remediationv1.InvestigationState_INVESTIGATION_STATE_REMEDIATED))
	e.waitRisk("dev-1", commonv1.RiskLevel_RISK_LEVEL_NONE)

	if inv.GetAutomationLevel() != remediationv1.AutomationLevel_AUTOMATION_LEVEL_FULL || inv.GetStartedBy() != remediation.Automation {
		t.Errorf("level %v started by %q", inv.GetAutomationLevel(), inv.GetStartedBy())
	}
	wantEv := []*remediationv1.EvidenceVerdict{{Evidence: fileEvidence("/home/u/evil.com"), Verdict: remediationv1.Verdict_VERDICT_MALICIOUS, AlertId: "a-1", Reason: "alert severity HIGH is at or above HIGH"}}
	if d := cmp.Diff(wantEv, inv.GetEvidence(), protocmp.Transform()); d != "" {
		t.Errorf("evidence (-want +got):\n%s", d)
	}
	if len(inv.GetActions()) != 1 || inv.GetActions()[0].GetState() != remediationv1.ActionState_ACTION_STATE_SUCCEEDED || inv.GetActions()[0].GetQuarantineId() != "q-1" {
		t.Errorf("actions: %v", inv.GetActions())
	}
	if inv.GetEndTime() == nil {
		t.Error("no end time")
	}
	alert, err := e.risk.GetAlert(ctx, &riskv1.GetAlertRequest{AlertId: "a-1"})
	if err != nil {
		t.Fatal(err)
	}
	a := alert.GetAlert()
	// The resolver is the remediation service's own identity ("dev" in insecure
	// mode), never a name it claims; the investigation id says it was automated.
	if a.GetStatus() != riskv1.AlertStatus_ALERT_STATUS_RESOLVED || a.GetClassification() != riskv1.AlertClassification_ALERT_CLASSIFICATION_TRUE_POSITIVE ||
		a.GetResolvedBy() != "dev" || a.GetInvestigationId() != inv.GetInvestigationId() {
		t.Errorf("alert after remediation: status %v classification %v by %q investigation %q", a.GetStatus(), a.GetClassification(), a.GetResolvedBy(), a.GetInvestigationId())
	}
	// The investigation carries the trace of the alert's REPORTED event.
	ws, err := e.risk.WatchRiskEvents(ctx, &riskv1.WatchRiskEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		m, err := ws.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if ac := m.GetEvent().GetAlertChanged(); ac.GetType() == riskv1.AlertChangeType_ALERT_CHANGE_TYPE_REPORTED {
			tp := m.GetEvent().GetTraceContext().GetTraceparent()
			if tp == "" || inv.GetTraceContext().GetTraceparent() != tp {
				t.Errorf("investigation trace %q, alert event trace %q", inv.GetTraceContext().GetTraceparent(), tp)
			}
			break
		}
	}
}

func TestSemiAutomationWaitsForApproval(t *testing.T) {
	e := newEnv(t, options{})
	ctx := testCtx(t)
	e.devices.groups["dev-2"] = []string{"finance", "lab"}
	if _, err := e.client.SetAutomationLevel(ctx, &remediationv1.SetAutomationLevelRequest{Setting: &remediationv1.AutomationLevelSetting{DeviceGroup: "finance", Level: remediationv1.AutomationLevel_AUTOMATION_LEVEL_SEMI}}); err != nil {
		t.Fatal(err)
	}
	ag := e.connect("dev-2")
	e.report("a-2", "dev-2", commonv1.Severity_SEVERITY_HIGH, fileEvidence("/tmp/x"))
	inv := e.waitInvestigation("dev-2", state(remediationv1.InvestigationState_INVESTIGATION_STATE_PENDING_APPROVAL))
	if inv.GetAutomationLevel() != remediationv1.AutomationLevel_AUTOMATION_LEVEL_SEMI {
		t.Errorf("level = %v, want SEMI (most restrictive of finance=SEMI and lab=default FULL)", inv.GetAutomationLevel())
	}
	act := inv.GetActions()[0]
	if act.GetState() != remediationv1.ActionState_ACTION_STATE_PENDING_APPROVAL || act.GetApprovalExpireTime() == nil {
		t.Fatalf("action %v", act)
	}
	resp, err := e.client.ApproveAction(ctx, &remediationv1.ApproveActionRequest{ActionId: act.GetActionId(), Comment: "go"})
	if err != nil {
		t.Fatal(err)
	}
	ap := resp.GetAction().GetApproval()
	if !ap.GetApproved() || ap.GetDecidedBy() != auth.DevSubject || ap.GetComment() != "go" || ap.GetDecideTime() == nil {
		t.Errorf("approval %v", ap)
	}
	cmd := ag.command()
	if cmd.GetActionId() != act.GetActionId() {
		t.Fatalf("command for %s, want %s", cmd.GetActionId(), act.GetActionId())
	}
	ag.result(cmd.GetActionId(), true, "q-2")
	e.waitInvestigation("dev-2", state(remediationv1.InvestigationState_INVESTIGATION_STATE_REMEDIATED))
	e.waitRisk("dev-2", commonv1.RiskLevel_RISK_LEVEL_NONE)

	levels, err := e.client.ListAutomationLevels(ctx, &remediationv1.ListAutomationLevelsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if levels.GetDefaultLevel() != remediationv1.AutomationLevel_AUTOMATION_LEVEL_FULL || len(levels.GetSettings()) != 1 || levels.GetSettings()[0].GetUpdatedBy() != auth.DevSubject {
		t.Errorf("levels %v", levels)
	}
}

func TestAutomationLevelResolution(t *testing.T) {
	e := newEnv(t, options{})
	ctx := testCtx(t)
	for g, l := range map[string]remediationv1.AutomationLevel{"none": remediationv1.AutomationLevel_AUTOMATION_LEVEL_NONE, "semi": remediationv1.AutomationLevel_AUTOMATION_LEVEL_SEMI} {
		if _, err := e.client.SetAutomationLevel(ctx, &remediationv1.SetAutomationLevelRequest{Setting: &remediationv1.AutomationLevelSetting{DeviceGroup: g, Level: l}}); err != nil {
			t.Fatal(err)
		}
	}
	e.devices.groups["d-none"] = []string{"semi", "none", "other"}
	e.devices.groups["d-nogroups"] = nil
	tests := []struct {
		name, device string
		wantLevel    remediationv1.AutomationLevel
		wantState    remediationv1.InvestigationState
		wantReason   string
	}{
		{"most restrictive wins", "d-none", remediationv1.AutomationLevel_AUTOMATION_LEVEL_NONE, remediationv1.InvestigationState_INVESTIGATION_STATE_NO_THREATS_FOUND, "automation level NONE"},
		{"no groups: default", "d-nogroups", remediationv1.AutomationLevel_AUTOMATION_LEVEL_FULL, remediationv1.InvestigationState_INVESTIGATION_STATE_RUNNING, "reached severity HIGH"},
		{"unknown device: default, said so", "d-unknown", remediationv1.AutomationLevel_AUTOMATION_LEVEL_FULL, remediationv1.InvestigationState_INVESTIGATION_STATE_RUNNING, "unknown to the compliance inventory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.report("a-"+tt.device, tt.device, commonv1.Severity_SEVERITY_HIGH, fileEvidence("/f/"+tt.device))
			inv := e.waitInvestigation(tt.device, func(*remediationv1.Investigation) bool { return true })
			if inv.GetAutomationLevel() != tt.wantLevel || inv.GetState() != tt.wantState || !strings.Contains(inv.GetReason(), tt.wantReason) {
				t.Errorf("level %v state %v reason %q; want %v %v %q", inv.GetAutomationLevel(), inv.GetState(), inv.GetReason(), tt.wantLevel, tt.wantState, tt.wantReason)
			}
			if len(inv.GetEvidence()) != 1 || inv.GetEvidence()[0].GetVerdict() != remediationv1.Verdict_VERDICT_MALICIOUS {
				t.Errorf("evidence %v", inv.GetEvidence())
			}
		})
	}
	// The attack row: a device of a FULL (default) group could be remediated without
	// approval only if its groups are known; while compliance cannot be asked, the
	// most restrictive level in use (here NONE, of the group "none") applies, never
	// the permissive default.
	t.Run("compliance unreachable: the most restrictive level, said so", func(t *testing.T) {
		e.devices.mu.Lock()
		e.devices.err = status.Error(codes.Unavailable, "compliance down")
		e.devices.mu.Unlock()
		e.report("a-down", "d-down", commonv1.Severity_SEVERITY_HIGH, fileEvidence("/f/down"))
		inv := e.waitInvestigation("d-down", func(*remediationv1.Investigation) bool { return true })
		if inv.GetAutomationLevel() != remediationv1.AutomationLevel_AUTOMATION_LEVEL_NONE || !strings.Contains(inv.GetReason(), "compliance service unreachable") ||
			len(inv.GetActions()) != 0 {
			t.Errorf("level %v reason %q actions %v; want NONE (the most restrictive in use), said so, no action", inv.GetAutomationLevel(), inv.GetReason(), inv.GetActions())
		}
	})
	t.Run("later alerts join the open investigation; lower ones are suspicious", func(t *testing.T) {
		e.report("a-join", "d-nogroups", commonv1.Severity_SEVERITY_MEDIUM, fileEvidence("/f/other"))
		inv := e.waitInvestigation("d-nogroups", func(inv *remediationv1.Investigation) bool { return len(inv.GetAlertIds()) == 2 })
		if got := inv.GetEvidence()[1].GetVerdict(); got != remediationv1.Verdict_VERDICT_SUSPICIOUS {
			t.Errorf("verdict %v, want SUSPICIOUS", got)
		}
		if got := inv.GetActions()[1].GetState(); got != remediationv1.ActionState_ACTION_STATE_PENDING_APPROVAL {
			t.Errorf("action of suspicious evidence is %v, want PENDING_APPROVAL", got)
		}
		list, _ := e.client.ListInvestigations(ctx, &remediationv1.ListInvestigationsRequest{DeviceId: "d-nogroups"})
		if len(list.GetInvestigations()) != 1 {
			t.Errorf("%d investigations, want one open per device", len(list.GetInvestigations()))
		}
	})
	t.Run("a malicious verdict upgrades suspicious evidence and queues its action", func(t *testing.T) {
		e.report("a-upgrade", "d-nogroups", commonv1.Severity_SEVERITY_HIGH, fileEvidence("/f/other"))
		inv := e.waitInvestigation("d-nogroups", func(inv *remediationv1.Investigation) bool { return len(inv.GetAlertIds()) == 3 })
		if got := inv.GetEvidence()[1].GetVerdict(); got != remediationv1.Verdict_VERDICT_MALICIOUS {
			t.Errorf("verdict %v, want MALICIOUS", got)
		}
		if len(inv.GetEvidence()) != 2 || len(inv.GetActions()) != 2 {
			t.Errorf("evidence %d actions %d, want 2 and 2 (same file, one action)", len(inv.GetEvidence()), len(inv.GetActions()))
		}
		if got := inv.GetActions()[1].GetState(); got != remediationv1.ActionState_ACTION_STATE_QUEUED {
			t.Errorf("action %v, want QUEUED under FULL", got)
		}
	})
	t.Run("a low alert alone opens nothing", func(t *testing.T) {
		e.report("a-low", "d-low", commonv1.Severity_SEVERITY_MEDIUM, fileEvidence("/f/low"))
		e.report("a-low-high", "d-low", commonv1.Severity_SEVERITY_HIGH, fileEvidence("/f/low2"))
		inv := e.waitInvestigation("d-low", func(*remediationv1.Investigation) bool { return true })
		if d := cmp.Diff([]string{"a-low-high"}, inv.GetAlertIds()); d != "" {
			t.Errorf("alerts (-want +got):\n%s", d)
		}
	})
}

func TestErrors(t *testing.T) {
	e := newEnv(t, options{})
	ctx := testCtx(t)
	e.report("a-1", "dev-1", commonv1.Severity_SEVERITY_HIGH, fileEvidence("/x"))
	inv := e.waitInvestigation("dev-1", state(remediationv1.InvestigationState_INVESTIGATION_STATE_RUNNING))
	queued := inv.GetActions()[0].GetActionId()
	closed, err := e.client.StartInvestigation(ctx, &remediationv1.StartInvestigationRequest{DeviceId: "dev-9", Reason: "look"})
	if err != nil {
		t.Fatal(err)
	}
	if closed.GetInvestigation().GetState() != remediationv1.InvestigationState_INVESTIGATION_STATE_NO_THREATS_FOUND || closed.GetInvestigation().GetStartedBy() != auth.DevSubject {
		t.Errorf("manual investigation without alerts: %v", closed.GetInvestigation())
	}
	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"approve unknown", func() error {
			_, err := e.client.ApproveAction(ctx, &remediationv1.ApproveActionRequest{ActionId: "nope"})
			return err
		}, codes.NotFound},
		{"approve queued", func() error {
			_, err := e.client.ApproveAction(ctx, &remediationv1.ApproveActionRequest{ActionId: queued})
			return err
		}, codes.FailedPrecondition},
		{"reject queued", func() error {
			_, err := e.client.RejectAction(ctx, &remediationv1.RejectActionRequest{ActionId: queued})
			return err
		}, codes.FailedPrecondition},
		{"undo a queued quarantine", func() error {
			_, err := e.client.UndoAction(ctx, &remediationv1.UndoActionRequest{ActionId: queued})
			return err
		}, codes.FailedPrecondition},
		{"get unknown investigation", func() error {
			_, err := e.client.GetInvestigation(ctx, &remediationv1.GetInvestigationRequest{InvestigationId: "nope"})
			return err
		}, codes.NotFound},
		{"cancel closed", func() error {
			_, err := e.client.CancelInvestigation(ctx, &remediationv1.CancelInvestigationRequest{InvestigationId: closed.GetInvestigation().GetInvestigationId()})
			return err
		}, codes.FailedPrecondition},
		{"cancel unknown", func() error {
			_, err := e.client.CancelInvestigation(ctx, &remediationv1.CancelInvestigationRequest{InvestigationId: "nope"})
			return err
		}, codes.NotFound},
		{"start with unknown alert", func() error {
			_, err := e.client.StartInvestigation(ctx, &remediationv1.StartInvestigationRequest{DeviceId: "dev-1", AlertIds: []string{"nope"}})
			return err
		}, codes.InvalidArgument},
		{"start with another device's alert", func() error {
			_, err := e.client.StartInvestigation(ctx, &remediationv1.StartInvestigationRequest{DeviceId: "dev-2", AlertIds: []string{"a-1"}})
			return err
		}, codes.InvalidArgument},
		{"submit quarantine without file", func() error {
			_, err := e.client.SubmitAction(ctx, &remediationv1.SubmitActionRequest{DeviceId: "dev-1", Type: remediationv1.ActionType_ACTION_TYPE_QUARANTINE_FILE})
			return err
		}, codes.InvalidArgument},
		{"submit kill with a file", func() error {
			_, err := e.client.SubmitAction(ctx, &remediationv1.SubmitActionRequest{DeviceId: "dev-1", Type: remediationv1.ActionType_ACTION_TYPE_KILL_PROCESS, Target: fileEvidence("/x")})
			return err
		}, codes.InvalidArgument},
		{"submit into unknown investigation", func() error {
			_, err := e.client.SubmitAction(ctx, &remediationv1.SubmitActionRequest{DeviceId: "dev-1", Type: remediationv1.ActionType_ACTION_TYPE_RUN_SCAN, InvestigationId: "nope"})
			return err
		}, codes.NotFound},
		{"submit into closed investigation", func() error {
			_, err := e.client.SubmitAction(ctx, &remediationv1.SubmitActionRequest{DeviceId: "dev-9", Type: remediationv1.ActionType_ACTION_TYPE_RUN_SCAN, InvestigationId: closed.GetInvestigation().GetInvestigationId()})
			return err
		}, codes.FailedPrecondition},
		{"bad page token", func() error {
			_, err := e.client.ListActions(ctx, &remediationv1.ListActionsRequest{PageToken: "x!"})
			return err
		}, codes.InvalidArgument},
		{"automation level unspecified", func() error {
			_, err := e.client.SetAutomationLevel(ctx, &remediationv1.SetAutomationLevelRequest{Setting: &remediationv1.AutomationLevelSetting{DeviceGroup: "g"}})
			return err
		}, codes.InvalidArgument},
		{"connect without hello", func() error {
			s, err := e.agents.Connect(ctx)
			if err != nil {
				return err
			}
			if err := s.Send(&remediationv1.ConnectRequest{Kind: &remediationv1.ConnectRequest_Heartbeat{Heartbeat: &remediationv1.AgentHeartbeat{}}}); err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := status.Code(tt.call()); got != tt.want {
				t.Errorf("code = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestResultForAnotherDeviceIsDenied(t *testing.T) {
	e := newEnv(t, options{})
	e.report("a-1", "dev-1", commonv1.Severity_SEVERITY_HIGH, fileEvidence("/x"))
	inv := e.waitInvestigation("dev-1", state(remediationv1.InvestigationState_INVESTIGATION_STATE_RUNNING))
	id := inv.GetActions()[0].GetActionId()
	other := e.connect("dev-2")
	other.result(id, true, "q")
	_, err := other.stream.Recv()
	if got := status.Code(err); got != codes.PermissionDenied {
		t.Fatalf("stream ended with %v, want PERMISSION_DENIED", err)
	}
	if got := e.action(id).GetState(); got != remediationv1.ActionState_ACTION_STATE_QUEUED {
		t.Errorf("action state %v after a foreign result, want QUEUED", got)
	}
}

func TestOfflineQueueReconnectAndDuplicateResults(t *testing.T) {
	e := newEnv(t, options{})
	ctx := testCtx(t)
	// Queued while no agent is connected.
	e.report("a-1", "dev-1", commonv1.Severity_SEVERITY_HIGH, fileEvidence("/x"))
	inv := e.waitInvestigation("dev-1", state(remediationv1.InvestigationState_INVESTIGATION_STATE_RUNNING))
	id := inv.GetActions()[0].GetActionId()

	first := e.connect("dev-1")
	if got := first.command().GetActionId(); got != id {
		t.Fatalf("first command %s, want %s", got, id)
	}
	// A newer connection replaces the older one, which ends with ABORTED; the SENT
	// action without a result is sent again.
	second := e.connect("dev-1")
	if _, err := first.stream.Recv(); status.Code(err) != codes.Aborted {
		t.Errorf("replaced connection ended with %v, want ABORTED", err)
	}
	if got := second.command().GetActionId(); got != id {
		t.Fatalf("re-sent command %s, want %s", got, id)
	}
	second.result(id, true, "q-1")
	second.result(id, false, "") // a duplicate must not change the outcome
	e.waitInvestigation("dev-1", state(remediationv1.InvestigationState_INVESTIGATION_STATE_REMEDIATED))
	if a := e.action(id); a.GetState() != remediationv1.ActionState_ACTION_STATE_SUCCEEDED || a.GetQuarantineId() != "q-1" {
		t.Errorf("action after duplicate results: %v", a)
	}
	second.cancel()
	// A completed action is not sent again: the next command is a new scan.
	third := e.connect("dev-1")
	scan, err := e.client.SubmitAction(ctx, &remediationv1.SubmitActionRequest{DeviceId: "dev-1", Type: remediationv1.ActionType_ACTION_TYPE_RUN_SCAN, Comment: "check"})
	if err != nil {
		t.Fatal(err)
	}
	if got := third.command(); got.GetActionId() != scan.GetAction().GetActionId() || got.GetType() != remediationv1.ActionType_ACTION_TYPE_RUN_SCAN {
		t.Errorf("command %v, want the scan", got)
	}
	agents, err := e.client.ListAgents(ctx, &remediationv1.ListAgentsRequest{})
	if err != nil || len(agents.GetAgents()) != 1 || agents.GetAgents()[0].GetHealth() != remediationv1.AgentHealth_AGENT_HEALTH_HEALTHY {
		t.Errorf("agents %v %v", agents, err)
	}
}

func TestUndoRestoresQuarantine(t *testing.T) {
	e := newEnv(t, options{})
	ctx := testCtx(t)
	e.report("a-1", "dev-1", commonv1.Severity_SEVERITY_HIGH, fileEvidence("/x"))
	ag := e.connect("dev-1")
	q := ag.command()
	ag.result(q.GetActionId(), true, "q-7")
	e.waitInvestigation("dev-1", state(remediationv1.InvestigationState_INVESTIGATION_STATE_REMEDIATED))
	resp, err := e.client.UndoAction(ctx, &remediationv1.UndoActionRequest{ActionId: q.GetActionId(), Comment: "false positive"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.UndoAction(ctx, &remediationv1.UndoActionRequest{ActionId: q.GetActionId()}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("second undo while the first runs: %v, want FAILED_PRECONDITION", err)
	}
	// The undo is audited: the restore action created and the quarantine marked, by
	// the caller, over UndoAction (the refused second undo leaves nothing).
	evs, _, err := audit.List(ctx, []*audit.Log{e.store.Audit()}, audit.Filter{Method: "/condaccess.remediation.v1.RemediationService/UndoAction"}, nil, 10)
	if err != nil {
		t.Fatal(err)
	}
	var audited []string
	for _, ev := range evs {
		if ev.Actor.Subject != auth.DevSubject {
			t.Errorf("undo audited for %q, want %q", ev.Actor.Subject, auth.DevSubject)
		}
		audited = append(audited, ev.Action+" "+ev.ResourceID)
	}
	if want := []string{"update " + q.GetActionId(), "create " + resp.GetRestoreAction().GetActionId()}; !slices.Equal(audited, want) {
		t.Errorf("undo audit events %v, want %v (newest first)", audited, want)
	}
	r := ag.command()
	want := &remediationv1.ActionCommand{ActionId: resp.GetRestoreAction().GetActionId(), Type: remediationv1.ActionType_ACTION_TYPE_RESTORE_FILE, Target: fileEvidence("/x"), QuarantineId: "q-7", AdminApproved: true}
	if d := cmp.Diff(want, r, protocmp.Transform()); d != "" {
		t.Errorf("restore command (-want +got):\n%s", d)
	}
	ag.result(r.GetActionId(), true, "")
	// Every action change is an event: wait on the stream until the undo shows.
	e.waitInvestigation("dev-1", func(*remediationv1.Investigation) bool {
		return e.action(q.GetActionId()).GetState() == remediationv1.ActionState_ACTION_STATE_UNDONE
	})
	if got := e.action(r.GetActionId()); got.GetState() != remediationv1.ActionState_ACTION_STATE_SUCCEEDED || got.GetUndoOfActionId() != q.GetActionId() {
		t.Errorf("restore action %v", got)
	}
}

func TestCancelInvestigation(t *testing.T) {
	e := newEnv(t, options{})
	ctx := testCtx(t)
	e.client.SetAutomationLevel(ctx, &remediationv1.SetAutomationLevelRequest{Setting: &remediationv1.AutomationLevelSetting{DeviceGroup: "*", Level: remediationv1.AutomationLevel_AUTOMATION_LEVEL_SEMI}})
	e.report("a-1", "dev-1", commonv1.Severity_SEVERITY_HIGH, fileEvidence("/x"))
	inv := e.waitInvestigation("dev-1", state(remediationv1.InvestigationState_INVESTIGATION_STATE_PENDING_APPROVAL))
	resp, err := e.client.CancelInvestigation(ctx, &remediationv1.CancelInvestigationRequest{InvestigationId: inv.GetInvestigationId(), Comment: "handled"})
	if err != nil {
		t.Fatal(err)
	}
	got := resp.GetInvestigation()
	if got.GetState() != remediationv1.InvestigationState_INVESTIGATION_STATE_CANCELLED || got.GetActions()[0].GetState() != remediationv1.ActionState_ACTION_STATE_CANCELLED {
		t.Errorf("after cancel: %v", got)
	}
	if _, err := e.client.ApproveAction(ctx, &remediationv1.ApproveActionRequest{ActionId: got.GetActions()[0].GetActionId()}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("approve cancelled action: %v", err)
	}
}

func TestApprovalExpiryAndActionTimeout(t *testing.T) {
	e := newEnv(t, options{fakeClock: true})
	ctx := testCtx(t)
	e.devices.groups["semi-dev"] = []string{"semi"}
	e.client.SetAutomationLevel(ctx, &remediationv1.SetAutomationLevelRequest{Setting: &remediationv1.AutomationLevelSetting{DeviceGroup: "semi", Level: remediationv1.AutomationLevel_AUTOMATION_LEVEL_SEMI}})
	e.report("a-semi", "semi-dev", commonv1.Severity_SEVERITY_HIGH, fileEvidence("/x"))
	e.report("a-full", "full-dev", commonv1.Severity_SEVERITY_HIGH, fileEvidence("/y"))
	pending := e.waitInvestigation("semi-dev", state(remediationv1.InvestigationState_INVESTIGATION_STATE_PENDING_APPROVAL)).GetActions()[0]
	e.waitInvestigation("full-dev", state(remediationv1.InvestigationState_INVESTIGATION_STATE_RUNNING))
	ag := e.connect("full-dev")
	sent := ag.command()
	e.waitInvestigation("full-dev", func(inv *remediationv1.Investigation) bool {
		return inv.GetActions()[0].GetState() == remediationv1.ActionState_ACTION_STATE_SENT
	})

	if n, err := e.svc.ExpireDue(ctx); err != nil || n != 0 {
		t.Fatalf("ExpireDue before any deadline = %d, %v", n, err)
	}
	e.clock.Add(time.Minute + time.Second) // past the action timeout, not the approval expiry
	if n, err := e.svc.ExpireDue(ctx); err != nil || n != 1 {
		t.Fatalf("ExpireDue after the action timeout = %d, %v", n, err)
	}
	if got := e.action(sent.GetActionId()); got.GetState() != remediationv1.ActionState_ACTION_STATE_TIMED_OUT {
		t.Errorf("sent action %v, want TIMED_OUT", got.GetState())
	}
	e.waitInvestigation("full-dev", state(remediationv1.InvestigationState_INVESTIGATION_STATE_FAILED))
	e.clock.Add(time.Hour)
	if n, err := e.svc.ExpireDue(ctx); err != nil || n != 1 {
		t.Fatalf("ExpireDue after the approval expiry = %d, %v", n, err)
	}
	got := e.action(pending.GetActionId())
	if got.GetState() != remediationv1.ActionState_ACTION_STATE_REJECTED || got.GetApproval().GetDecidedBy() != remediation.System || got.GetApproval().GetApproved() {
		t.Errorf("expired approval: %v", got)
	}
	e.waitInvestigation("semi-dev", state(remediationv1.InvestigationState_INVESTIGATION_STATE_FAILED))
	// A late success is still recorded: the agent did act.
	ag.result(sent.GetActionId(), true, "q-late")
	e.waitInvestigation("full-dev", func(*remediationv1.Investigation) bool {
		return e.action(sent.GetActionId()).GetState() == remediationv1.ActionState_ACTION_STATE_SUCCEEDED
	})
}

func TestResolutionSurvivesRestart(t *testing.T) {
	e := newEnv(t, options{})
	e.rc.down.Store(true)
	e.report("a-1", "dev-1", commonv1.Severity_SEVERITY_HIGH, fileEvidence("/x"))
	ag := e.connect("dev-1")
	ag.result(ag.command().GetActionId(), true, "q")
	e.waitInvestigation("dev-1", state(remediationv1.InvestigationState_INVESTIGATION_STATE_REMEDIATED))
	ctx := testCtx(t)
	for e.rc.calls.Load() < 2 { // retried while the risk service is down
		e.svc.ResolvePending(ctx)
	}
	if rs, err := e.store.PendingResolutions(ctx); err != nil || len(rs) != 1 {
		t.Fatalf("pending resolutions %v %v", rs, err)
	}
	e.restart()
	e.rc.down.Store(false)
	e.waitRisk("dev-1", commonv1.RiskLevel_RISK_LEVEL_NONE)
	// The background resolver may not have recorded its success yet; a pass of our
	// own is idempotent (FAILED_PRECONDITION "already resolved" counts as done).
	if left, err := e.svc.ResolvePending(ctx); err != nil || left != 0 {
		t.Errorf("ResolvePending = %d, %v", left, err)
	}
	if rs, _ := e.store.PendingResolutions(ctx); len(rs) != 0 {
		t.Errorf("pending resolutions after success: %v", rs)
	}
}

func TestRestartMidInvestigationAndResync(t *testing.T) {
	e := newEnv(t, options{})
	e.stop()
	// Reported while the remediation service is down, before it ever ran: resync.
	e.report("a-1", "dev-1", commonv1.Severity_SEVERITY_HIGH, fileEvidence("/x"))
	e.start()
	inv := e.waitInvestigation("dev-1", state(remediationv1.InvestigationState_INVESTIGATION_STATE_RUNNING))
	id := inv.GetActions()[0].GetActionId()
	ag := e.connect("dev-1")
	if got := ag.command().GetActionId(); got != id {
		t.Fatalf("command %s, want %s", got, id)
	}
	e.restart() // killed with the action SENT
	ag = e.connect("dev-1")
	if got := ag.command().GetActionId(); got != id {
		t.Fatalf("after restart command %s, want %s", got, id)
	}
	ag.result(id, true, "q")
	e.waitInvestigation("dev-1", state(remediationv1.InvestigationState_INVESTIGATION_STATE_REMEDIATED))
	e.waitRisk("dev-1", commonv1.RiskLevel_RISK_LEVEL_NONE)
	list, _ := e.client.ListInvestigations(testCtx(t), &remediationv1.ListInvestigationsRequest{})
	if len(list.GetInvestigations()) != 1 {
		t.Errorf("%d investigations after restarts, want 1", len(list.GetInvestigations()))
	}
}

func TestWatchInvestigationEventsIsGapFree(t *testing.T) {
	e := newEnv(t, options{})
	e.report("a-1", "dev-1", commonv1.Severity_SEVERITY_HIGH, fileEvidence("/x"), fileEvidence("/y"))
	e.waitInvestigation("dev-1", state(remediationv1.InvestigationState_INVESTIGATION_STATE_RUNNING))
	ctx := testCtx(t)
	s, err := e.client.WatchInvestigationEvents(ctx, &remediationv1.WatchInvestigationEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	last := int64(0)
	for len(kinds) < 3 {
		m, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if p := m.GetProgress(); p != nil {
			// A bookmark: everything through its revision was sent.
			if p.GetRevision() != last {
				t.Errorf("progress at %d after event %d", p.GetRevision(), last)
			}
			continue
		}
		if got := m.GetEvent().GetRevision(); got != last+1 {
			t.Fatalf("revision %d after %d: not gap-free", got, last)
		}
		last++
		if m.GetEvent().GetTraceContext().GetTraceparent() == "" {
			t.Errorf("event %d has no trace context", last)
		}
		if m.GetEvent().GetActionChanged() != nil {
			kinds = append(kinds, "action")
		} else {
			kinds = append(kinds, "investigation")
		}
	}
	if d := cmp.Diff([]string{"action", "action", "investigation"}, kinds); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
	bad, err := e.client.WatchInvestigationEvents(ctx, &remediationv1.WatchInvestigationEventsRequest{StartRevision: -1})
	if err == nil {
		_, err = bad.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("negative start revision: %v, want INVALID_ARGUMENT", err)
	}
}

func TestAgentHealth(t *testing.T) {
	e := newEnv(t, options{fakeClock: true})
	ctx := testCtx(t)
	health := func() remediationv1.AgentHealth {
		r, err := e.client.ListAgents(ctx, &remediationv1.ListAgentsRequest{})
		if err != nil || len(r.GetAgents()) != 1 {
			t.Fatalf("ListAgents: %v %v", r, err)
		}
		return r.GetAgents()[0].GetHealth()
	}
	ag := e.connect("dev-1")
	if got := health(); got != remediationv1.AgentHealth_AGENT_HEALTH_HEALTHY {
		t.Errorf("after hello: %v", got)
	}
	e.clock.Add(3*remediation.DefaultHeartbeatInterval + time.Second)
	if got := health(); got != remediationv1.AgentHealth_AGENT_HEALTH_STALE {
		t.Errorf("after three missed heartbeats: %v", got)
	}
	ag.cancel()
	// The disconnect is noticed when the stream ends; wait for it on the registry.
	deadline := time.Now().Add(5 * time.Second)
	for len(e.svc.ConnectedAgents()) != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := health(); got != remediationv1.AgentHealth_AGENT_HEALTH_DISCONNECTED {
		t.Errorf("after disconnect: %v", got)
	}
}

func TestResyncAfterCompactionIsIdempotent(t *testing.T) {
	e := newEnv(t, options{riskRetention: 2})
	ctx := testCtx(t)
	e.report("a-1", "dev-1", commonv1.Severity_SEVERITY_HIGH, fileEvidence("/x"))
	e.waitInvestigation("dev-1", state(remediationv1.InvestigationState_INVESTIGATION_STATE_RUNNING))
	e.stop()
	for _, d := range []string{"dev-2", "dev-3"} {
		e.report("a-"+d, d, commonv1.Severity_SEVERITY_HIGH, fileEvidence("/x"))
	}
	e.report("a-4", "dev-4", commonv1.Severity_SEVERITY_LOW, fileEvidence("/x"))
	if err := e.riskH.Store.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	cur, _, _ := e.store.Cursor(ctx)
	e.start() // the cursor is compacted away upstream: list, then watch
	for _, d := range []string{"dev-2", "dev-3"} {
		e.waitInvestigation(d, state(remediationv1.InvestigationState_INVESTIGATION_STATE_RUNNING))
	}
	list, err := e.client.ListInvestigations(ctx, &remediationv1.ListInvestigationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, inv := range list.GetInvestigations() {
		got = append(got, inv.GetDeviceId()+":"+strings.Join(inv.GetAlertIds(), ","))
	}
	slices.Sort(got) // resync opens them in listing order
	if d := cmp.Diff([]string{"dev-1:a-1", "dev-2:a-dev-2", "dev-3:a-dev-3"}, got); d != "" {
		t.Errorf("investigations after resync (-want +got):\n%s", d)
	}
	if after, _, _ := e.store.Cursor(ctx); after <= cur {
		t.Errorf("cursor %d after resync, want > %d", after, cur)
	}
}

func TestManualRetryAfterFailure(t *testing.T) {
	e := newEnv(t, options{})
	ctx := testCtx(t)
	e.report("a-1", "dev-1", commonv1.Severity_SEVERITY_HIGH, fileEvidence("/x"))
	ag := e.connect("dev-1")
	ag.result(ag.command().GetActionId(), false, "")
	failed := e.waitInvestigation("dev-1", state(remediationv1.InvestigationState_INVESTIGATION_STATE_FAILED))
	// The alert is still active; an administrator starts again with it.
	resp, err := e.client.StartInvestigation(ctx, &remediationv1.StartInvestigationRequest{DeviceId: "dev-1", AlertIds: []string{"a-1"}, Reason: "retry"})
	if err != nil {
		t.Fatal(err)
	}
	retry := resp.GetInvestigation()
	if retry.GetInvestigationId() == failed.GetInvestigationId() || retry.GetState() != remediationv1.InvestigationState_INVESTIGATION_STATE_RUNNING ||
		!slices.Equal(retry.GetAlertIds(), []string{"a-1"}) || retry.GetStartedBy() != auth.DevSubject {
		t.Fatalf("retry investigation %v", retry)
	}
	ag.result(ag.command().GetActionId(), true, "q")
	e.waitInvestigation("dev-1", state(remediationv1.InvestigationState_INVESTIGATION_STATE_REMEDIATED))
	e.waitRisk("dev-1", commonv1.RiskLevel_RISK_LEVEL_NONE)
	// A remediated investigation's alert is not taken over again.
	again, err := e.client.StartInvestigation(ctx, &remediationv1.StartInvestigationRequest{DeviceId: "dev-1", AlertIds: []string{"a-1"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(again.GetInvestigation().GetAlertIds()) != 0 || again.GetInvestigation().GetState() != remediationv1.InvestigationState_INVESTIGATION_STATE_NO_THREATS_FOUND {
		t.Errorf("start on a remediated alert: %v", again.GetInvestigation())
	}
}
