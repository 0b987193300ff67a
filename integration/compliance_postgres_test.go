package integration

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/integration/harness"
	"github.com/condaccess/condaccess/internal/pgtest"
)

// TestCompliancePausedLeaderFenced runs two `condaccess serve --services
// risk,compliance --database-url` processes on one database. The leader of the
// compliance consumer is paused (SIGSTOP) past its lease; the other replica takes the
// lease over and applies the alerts reported meanwhile. The old leader is resumed
// (SIGCONT) while alerts are reported to its own risk replica, so that its consumer
// has events to apply as it wakes; it must apply none of them (its lease has moved
// on): every device changes compliance exactly as often as risk implies (each
// change once, on both replicas), the compliance event log is gap-free, the lease
// stays with the new leader, and the risk cursor reaches risk's head.
func TestCompliancePausedLeaderFenced(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: starts real processes")
	}
	url := pgtest.URL(t)
	bin, err := harness.Build()
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	dir := t.TempDir()
	var procs []*harness.Process
	var conns []*grpc.ClientConn
	for i := range 2 {
		grpcAddr, err := harness.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		p := &harness.Process{
			Name: fmt.Sprint("compliance-", i), Path: bin.Condaccess, GRPCAddr: grpcAddr, HealthService: "condaccess.compliance.v1.ComplianceService",
			Env:     []string{"OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "CONDACCESS_DATABASE_URL=" + url},
			LogPath: filepath.Join(dir, fmt.Sprint("compliance-", i, ".log")),
			Args: []string{"serve", "--services", "risk,compliance", "--grpc-addr", grpcAddr, "--http-addr", "",
				"--data-dir", filepath.Join(dir, fmt.Sprint("data-", i)), "--stop-timeout", "2s", "--risk-progress-interval", "100ms",
				"--lease-duration", "1s"},
		}
		t.Cleanup(func() {
			_ = p.Stop(5 * time.Second)
			if t.Failed() {
				t.Logf("%s log:\n%s", p.Name, p.Logs(8<<10))
			}
		})
		procs = append(procs, p)
		conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		conns = append(conns, conn)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for _, p := range procs {
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		if err := p.WaitHealthy(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// lease returns the compliance consumer lease's holder pid and token.
	lease := func() (int, int64) {
		t.Helper()
		for {
			var holder string
			var tok int64
			err := db.QueryRowContext(ctx, `SELECT holder, token FROM compliance.leases WHERE name = 'compliance-consumer'`).Scan(&holder, &tok)
			if err == nil {
				parts := strings.Split(holder, "/")
				pid, err := strconv.Atoi(parts[len(parts)-2])
				if err != nil {
					t.Fatalf("lease holder %q: %v", holder, err)
				}
				return pid, tok
			}
			if ctx.Err() != nil {
				t.Fatalf("no compliance consumer lease: %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	pid, tok := lease()
	// Which process leads: the one whose command line has its --grpc-addr.
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatal(err)
	}
	leader := -1
	for i, p := range procs {
		if bytes.Contains(cmdline, []byte("\x00"+p.GRPCAddr+"\x00")) {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatalf("the lease holder (pid %d) is none of the replicas", pid)
	}
	follower := 1 - leader
	t.Logf("leader %s (pid %d, token %d)", procs[leader].Name, pid, tok)

	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(compliancev1.NewCompliancePolicyServiceClient(conns[follower]).CreateCompliancePolicy(ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
		PolicyId: "max-medium", DisplayName: "max medium", MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_MEDIUM, Assignment: &compliancev1.PolicyAssignment{AllDevices: true}}}))
	const devices = 5
	for i := range devices {
		must(compliancev1.NewDeviceServiceClient(conns[i%2]).EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
			DeviceId: fmt.Sprint("dev-", i), DisplayName: "laptop", Platform: commonv1.Platform_PLATFORM_WINDOWS, OsVersion: "10.0.22631", OwnerUserId: "u-1"}}))
	}
	report := func(conn *grpc.ClientConn, alert, device string) {
		t.Helper()
		must(riskv1.NewRiskServiceClient(conn).ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
			AlertId: alert, DeviceId: device, Severity: commonv1.Severity_SEVERITY_HIGH, Title: "Malicious file"}}))
	}
	waitState := func(conn *grpc.ClientConn, device string, want commonv1.ComplianceState) {
		t.Helper()
		c := compliancev1.NewComplianceServiceClient(conn)
		for {
			r, err := c.GetDeviceCompliance(ctx, &compliancev1.GetDeviceComplianceRequest{DeviceId: device})
			if err == nil && r.GetDeviceCompliance().GetState() == want {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("%s compliance = %v (%v), want %v", device, r.GetDeviceCompliance().GetState(), err, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// Pause the leader past its lease; the follower takes over and applies.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	})
	report(conns[follower], "a-0", "dev-0")
	report(conns[follower], "a-1", "dev-1")
	waitState(conns[follower], "dev-0", commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT)
	waitState(conns[follower], "dev-1", commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT)
	newPid, newTok := lease()
	if newTok <= tok || newPid == pid {
		t.Fatalf("lease after the pause: pid %d token %d, want another holder than pid %d with a token above %d", newPid, newTok, pid, tok)
	}

	// Resume the old leader and give its consumer events at once, on its own risk replica.
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed = true
	report(conns[leader], "a-2", "dev-2")
	report(conns[leader], "a-3", "dev-3")
	must(riskv1.NewRiskServiceClient(conns[leader]).ResolveAlert(ctx, &riskv1.ResolveAlertRequest{AlertId: "a-0",
		Classification: riskv1.AlertClassification_ALERT_CLASSIFICATION_FALSE_POSITIVE}))
	for _, conn := range conns {
		waitState(conn, "dev-0", commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT)
		for _, d := range []string{"dev-1", "dev-2", "dev-3"} {
			waitState(conn, d, commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT)
		}
		waitState(conn, "dev-4", commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT)
	}
	if testing.Verbose() {
		// What the old leader did on waking (lease and consumer lines of its log).
		for _, l := range strings.Split(procs[leader].Logs(1<<20), "\n") {
			if strings.Contains(l, "lease") || strings.Contains(l, "consumer") {
				t.Log(l)
			}
		}
	}
	if p, tk := lease(); p != newPid || tk != newTok {
		t.Errorf("lease moved again: pid %d token %d, want pid %d token %d", p, tk, newPid, newTok)
	}
	for {
		var cursor, head int64
		if err := db.QueryRowContext(ctx, `SELECT (SELECT revision FROM compliance.cursors WHERE name = 'risk'), (SELECT head FROM risk.risk_events_state WHERE id = 1)`).Scan(&cursor, &head); err != nil {
			t.Fatal(err)
		}
		if cursor == head {
			break
		}
		if cursor > head || ctx.Err() != nil {
			t.Fatalf("compliance's risk cursor = %d, risk's head = %d", cursor, head)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Each change once: the states every device went through, from the event log of
	// the old leader's replica, gap-free.
	c := compliancev1.NewComplianceServiceClient(conns[leader])
	lr, err := c.ListDeviceCompliance(ctx, &compliancev1.ListDeviceComplianceRequest{})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	stream, err := c.WatchComplianceEvents(wctx, &compliancev1.WatchComplianceEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	states := map[string][]string{}
	for rev := int64(0); rev < lr.GetRevision(); {
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		ev := m.GetEvent()
		if ev == nil {
			continue
		}
		if ev.GetRevision() != rev+1 {
			t.Fatalf("compliance event %d after %d: not gap-free", ev.GetRevision(), rev)
		}
		rev = ev.GetRevision()
		if dc := ev.GetDeviceComplianceChanged().GetDeviceCompliance(); dc != nil {
			states[dc.GetDeviceId()] = append(states[dc.GetDeviceId()], strings.TrimPrefix(dc.GetState().String(), "COMPLIANCE_STATE_"))
		}
	}
	want := map[string]string{
		"dev-0": "NONCOMPLIANT COMPLIANT", "dev-1": "NONCOMPLIANT", "dev-2": "NONCOMPLIANT", "dev-3": "NONCOMPLIANT", "dev-4": "",
	}
	for d, w := range want {
		// Drop the COMPLIANT of the first evaluation (at enrolment or the policy's sweep).
		got := states[d]
		for len(got) > 0 && got[0] == "COMPLIANT" {
			got = got[1:]
		}
		if strings.Join(got, " ") != w {
			t.Errorf("%s went through %v, want (after being compliant) %q", d, states[d], w)
		}
	}
}
