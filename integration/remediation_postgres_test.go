package integration

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/integration/harness"
	"github.com/condaccess/condaccess/internal/agent"
	"github.com/condaccess/condaccess/internal/pgtest"
)

// TestRemediationReplicasOnPostgresPausedLeader runs risk and two remediation
// replicas as `condaccess serve --database-url` processes on one PostgreSQL, and the
// real agent connected to the replica that does not lead. The leader is SIGSTOPped
// past its lease: the other replica takes the lease over and its consumer handles the
// agent's detection (FULL automation: the file is quarantined, the alert resolved,
// the risk is NONE again). The paused leader is then SIGCONTed: it steps down and
// applies nothing — the risk event cursor never moves back, every alert is linked to
// exactly one investigation, the lease stays with the new leader — while a second
// detection is remediated the same way. Meanwhile the paused replica lists the agent
// as HEALTHY from the other replica's records, before and after.
func TestRemediationReplicasOnPostgresPausedLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: starts real processes")
	}
	url := pgtest.URL(t)
	bin, err := harness.Build()
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	if bin.AgentErr != nil {
		t.Fatalf("the agent binary could not be built: %v", bin.AgentErr)
	}
	dir := t.TempDir()
	env := []string{"OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "CONDACCESS_DATABASE_URL=" + url}
	addrs, err := harness.FreeAddrs(3)
	if err != nil {
		t.Fatal(err)
	}
	riskAddr := addrs[0]
	newProc := func(name, addr, health string, args ...string) *harness.Process {
		p := &harness.Process{
			Name: name, Path: bin.Condaccess, GRPCAddr: addr, HealthService: health, Env: env,
			LogPath: filepath.Join(dir, name+".log"),
			Args: append([]string{"serve", "--grpc-addr", addr, "--http-addr", "", "--data-dir", filepath.Join(dir, "data-"+name),
				"--stop-timeout", "2s"}, args...),
		}
		t.Cleanup(func() {
			_ = p.Resume()
			_ = p.Stop(5 * time.Second)
			if t.Failed() {
				t.Logf("%s log:\n%s", p.Name, p.Logs(8<<10))
			}
		})
		return p
	}
	risk := newProc("risk", riskAddr, "condaccess.risk.v1.RiskService", "--services", "risk", "--risk-dev-reporter-is-device")
	var rems []*harness.Process
	for i := range 2 {
		rems = append(rems, newProc(fmt.Sprint("remediation-", i), addrs[1+i], "condaccess.remediation.v1.RemediationService",
			"--services", "remediation", "--risk-addr", riskAddr, "--lease-duration", "1s", "--remediation-heartbeat-interval", "500ms"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// leaseToken waits until the live remediation lease has token want.
	leaseToken := func(want int64) {
		t.Helper()
		harness.Eventually(t, fmt.Sprint("remediation lease token ", want), func(ctx context.Context) (bool, string) {
			var tok int64
			err := db.QueryRowContext(ctx, `SELECT token FROM remediation.leases WHERE name = 'remediation-leader' AND expires_at > clock_timestamp()`).Scan(&tok)
			return err == nil && tok == want, fmt.Sprint("token ", tok, " ", err)
		})
	}
	for _, p := range []*harness.Process{risk, rems[0]} {
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		if err := p.WaitHealthy(ctx); err != nil {
			t.Fatal(err)
		}
	}
	leaseToken(1) // remediation-0 leads
	if err := rems[1].Start(); err != nil {
		t.Fatal(err)
	}
	if err := rems[1].WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	dial := func(addr string) *grpc.ClientConn {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	riskc := riskv1.NewRiskServiceClient(dial(riskAddr))
	rem0 := remediationv1.NewRemediationServiceClient(dial(rems[0].GRPCAddr))
	rem1 := remediationv1.NewRemediationServiceClient(dial(rems[1].GRPCAddr))

	const dev = "dev-pg"
	watch, quarantine := filepath.Join(dir, "watch"), filepath.Join(dir, "quarantine")
	for _, d := range []string{watch, quarantine} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ag := &harness.Process{Name: "agent", Path: bin.Agent, Env: env, LogPath: filepath.Join(dir, "agent.log"),
		Args: []string{"--device-id", dev, "--watch", watch, "--quarantine-dir", quarantine, "--rescan-interval", "200ms",
			"--server", riskAddr, "--risk-addr", riskAddr, "--remediation-addr", rems[1].GRPCAddr}}
	t.Cleanup(func() {
		_ = ag.Stop(5 * time.Second)
		if t.Failed() {
			t.Logf("agent log:\n%s", ag.Logs(8<<10))
		}
	})
	if err := ag.Start(); err != nil {
		t.Fatal(err)
	}
	agentHealthy := func(c remediationv1.RemediationServiceClient, where string) {
		t.Helper()
		harness.Eventually(t, "the agent HEALTHY on "+where, func(ctx context.Context) (bool, string) {
			r, err := c.ListAgents(ctx, &remediationv1.ListAgentsRequest{})
			if err != nil {
				return false, err.Error()
			}
			for _, a := range r.GetAgents() {
				if a.GetDeviceId() == dev && a.GetHealth() == remediationv1.AgentHealth_AGENT_HEALTH_HEALTHY {
					return true, ""
				}
			}
			return false, fmt.Sprint(r.GetAgents())
		})
	}
	agentHealthy(rem0, "the leader (the agent is connected to the other replica)")

	// The cursor is sampled all along: it must never move back.
	var (
		cmu     sync.Mutex
		cursors []int64
	)
	sctx, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for sctx.Err() == nil {
			var rev int64
			if err := db.QueryRowContext(sctx, `SELECT revision FROM remediation.consumer_cursor`).Scan(&rev); err == nil {
				cmu.Lock()
				cursors = append(cursors, rev)
				cmu.Unlock()
			}
			select {
			case <-sctx.Done():
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()

	if err := rems[0].Pause(); err != nil {
		t.Fatal(err)
	}
	leaseToken(2) // remediation-1 took over
	// detect drops a malicious file; the new leader remediates it end to end.
	detect := func(name string, investigations int) {
		t.Helper()
		file := filepath.Join(watch, name)
		if err := os.WriteFile(file, agent.EICAR(), 0o644); err != nil {
			t.Fatal(err)
		}
		harness.Eventually(t, fmt.Sprint(investigations, " remediated investigations"), func(ctx context.Context) (bool, string) {
			r, err := rem1.ListInvestigations(ctx, &remediationv1.ListInvestigationsRequest{DeviceId: dev})
			if err != nil {
				return false, err.Error()
			}
			for _, inv := range r.GetInvestigations() {
				if inv.GetState() != remediationv1.InvestigationState_INVESTIGATION_STATE_REMEDIATED {
					return false, fmt.Sprint(r.GetInvestigations())
				}
			}
			return len(r.GetInvestigations()) == investigations, fmt.Sprint(r.GetInvestigations())
		})
		harness.Eventually(t, "risk NONE", func(ctx context.Context) (bool, string) {
			r, err := riskc.GetDeviceRisk(ctx, &riskv1.GetDeviceRiskRequest{DeviceId: dev})
			return err == nil && r.GetDeviceRisk().GetLevel() == commonv1.RiskLevel_RISK_LEVEL_NONE, fmt.Sprint(r.GetDeviceRisk(), err)
		})
		if _, err := os.Stat(file); !os.IsNotExist(err) {
			t.Fatalf("%s is still in the watched folder (stat: %v)", name, err)
		}
	}
	detect("first.docm", 1)

	if err := rems[0].Resume(); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, "the resumed leader to step down", func(context.Context) (bool, string) {
		logs := rems[0].Logs(64 << 10)
		return strings.Contains(logs, "lease: lost") || strings.Contains(logs, "stepping down"), "no step-down in its log yet"
	})
	agentHealthy(rem0, "the resumed replica")
	detect("second.docm", 2)
	leaseToken(2)

	stopSampling()
	<-sampled
	cmu.Lock()
	defer cmu.Unlock()
	if len(cursors) == 0 {
		t.Fatal("no cursor sampled")
	}
	for i := 1; i < len(cursors); i++ {
		if cursors[i] < cursors[i-1] {
			t.Fatalf("the risk event cursor moved back from %d to %d", cursors[i-1], cursors[i])
		}
	}
	r, err := rem0.ListInvestigations(ctx, &remediationv1.ListInvestigationsRequest{DeviceId: dev})
	if err != nil {
		t.Fatal(err)
	}
	perAlert := map[string]int{}
	for _, inv := range r.GetInvestigations() {
		for _, a := range inv.GetAlertIds() {
			perAlert[a]++
		}
	}
	if len(perAlert) != 2 {
		t.Fatalf("alerts investigated: %v, want the two detections", perAlert)
	}
	for a, n := range perAlert {
		if n != 1 {
			t.Fatalf("alert %s is in %d investigations", a, n)
		}
	}
}
