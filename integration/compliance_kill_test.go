package integration

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/integration/harness"
)

// TestComplianceSurvivesSIGKILL runs risk and compliance as separate processes with
// 1,000 devices and random alert traffic, kills the compliance process with SIGKILL
// several times (also while a policy change is re-evaluating every device) and
// restarts it. At the end every device's compliance state must equal the state
// computed from the final risk levels and the final policy: no risk event lost, none
// applied out of order, no half-written sweep.
func TestComplianceSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: starts real processes")
	}
	const (
		devices = 1000
		kills   = 4
	)
	bin, err := harness.Build()
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	dir := t.TempDir()
	addr := func() string {
		a, err := harness.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	riskAddr, compAddr, compHTTP := addr(), addr(), addr()
	env := []string{"OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none"}
	risk := &harness.Process{
		Name: "risk", Path: bin.Condaccess, Env: env, GRPCAddr: riskAddr, HealthService: "condaccess.risk.v1.RiskService",
		LogPath: filepath.Join(dir, "risk.log"),
		Args: []string{"serve", "--services", "risk", "--grpc-addr", riskAddr, "--http-addr", addr(),
			"--data-dir", filepath.Join(dir, "risk"), "--stop-timeout", "2s"},
	}
	comp := &harness.Process{
		Name: "compliance", Path: bin.Condaccess, Env: env, GRPCAddr: compAddr, HealthService: "condaccess.compliance.v1.ComplianceService",
		LogPath: filepath.Join(dir, "compliance.log"),
		Args: []string{"serve", "--services", "compliance", "--grpc-addr", compAddr, "--http-addr", compHTTP,
			"--data-dir", filepath.Join(dir, "compliance"), "--risk-addr", riskAddr, "--stop-timeout", "2s"},
	}
	t.Cleanup(func() {
		_ = comp.Stop(5 * time.Second)
		_ = risk.Stop(5 * time.Second)
		if t.Failed() {
			t.Logf("risk log:\n%s\ncompliance log:\n%s", risk.Logs(8<<10), comp.Logs(16<<10))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	for _, p := range []*harness.Process{risk, comp} {
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		if err := p.WaitHealthy(ctx); err != nil {
			t.Fatal(err)
		}
	}
	dial := func(a string) *grpc.ClientConn {
		c, err := grpc.NewClient(a, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	rc := riskv1.NewRiskServiceClient(dial(riskAddr))
	cc := dial(compAddr)
	devs, pols, compl := compliancev1.NewDeviceServiceClient(cc), compliancev1.NewCompliancePolicyServiceClient(cc), compliancev1.NewComplianceServiceClient(cc)

	// 1,000 devices and the max-medium policy.
	ids := make([]string, devices)
	for i := range ids {
		ids[i] = fmt.Sprintf("kd-%04d", i)
	}
	parallel(t, 16, len(ids), func(i int) error {
		_, err := devs.EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
			DeviceId: ids[i], Platform: commonv1.Platform(1 + i%5), OsVersion: "10.0.22631", Groups: []string{fmt.Sprintf("g%d", i%7)},
		}})
		return err
	})
	if _, err := pols.CreateCompliancePolicy(ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
		PolicyId: "max-medium", DisplayName: "Device risk at or under medium", MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_MEDIUM,
		Assignment: &compliancev1.PolicyAssignment{AllDevices: true},
	}}); err != nil {
		t.Fatal(err)
	}

	// Random alert traffic against risk, while compliance is killed and restarted.
	trafficCtx, stopTraffic := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex
	active := map[string]bool{}
	var reports, resolves int
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for n := 0; trafficCtx.Err() == nil; n++ {
				mu.Lock()
				var victim string
				if len(active) > 0 && rng.IntN(3) == 0 {
					for a := range active {
						victim = a
						break
					}
					delete(active, victim)
				}
				mu.Unlock()
				if victim != "" {
					if _, err := rc.ResolveAlert(trafficCtx, &riskv1.ResolveAlertRequest{AlertId: victim, Classification: riskv1.AlertClassification_ALERT_CLASSIFICATION_TRUE_POSITIVE}); err == nil {
						mu.Lock()
						resolves++
						mu.Unlock()
					}
					continue
				}
				id := fmt.Sprintf("w%d-a%d", w, n)
				_, err := rc.ReportAlert(trafficCtx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
					AlertId: id, DeviceId: ids[rng.IntN(len(ids))], Severity: commonv1.Severity(1 + rng.IntN(4)), Title: "random",
				}})
				if err == nil {
					mu.Lock()
					active[id] = true
					reports++
					mu.Unlock()
				}
			}
		}()
	}
	var updates sync.WaitGroup
	rng := rand.New(rand.NewPCG(7, 7))
	maxRisk := []commonv1.RiskLevel{commonv1.RiskLevel_RISK_LEVEL_LOW, commonv1.RiskLevel_RISK_LEVEL_MEDIUM}
	for k := range kills {
		wait := time.Duration(500+rng.IntN(1500)) * time.Millisecond
		if k%2 == 1 {
			// Change the policy (a sweep over every device) and kill mid-sweep.
			updates.Add(1)
			go func() {
				defer updates.Done()
				p, err := pols.GetCompliancePolicy(ctx, &compliancev1.GetCompliancePolicyRequest{PolicyId: "max-medium"})
				if err != nil {
					return
				}
				p.Policy.MaxDeviceRisk = maxRisk[k/2%2]
				_, _ = pols.UpdateCompliancePolicy(ctx, &compliancev1.UpdateCompliancePolicyRequest{Policy: p.GetPolicy()})
			}()
			wait = time.Duration(20+rng.IntN(80)) * time.Millisecond
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
		if err := comp.Restart(ctx); err != nil {
			t.Fatalf("restart %d: %v", k+1, err)
		}
	}
	// A little more traffic after the last restart, then stop it.
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
	}
	stopTraffic()
	wg.Wait()
	updates.Wait() // a policy change sent around a kill may land after the restart
	t.Logf("%d alerts reported, %d resolved, compliance killed %d times", reports, resolves, kills)

	// The final truth: risk levels from the risk service once it has settled, the
	// policy as stored. A call the traffic cancelled may still commit after its client
	// gave up (the server had started its write), so a listing taken right away can
	// predate the final levels: list, then watch the risk stream from the listing's
	// revision until it is idle, and list again if anything came.
	var (
		levels  map[string]commonv1.RiskLevel
		risks   map[string]*riskv1.DeviceRisk
		riskRev int64
	)
	listings := 0
	for settled := false; !settled; listings++ {
		levels, risks, riskRev = listRisks(ctx, t, rc)
		settled = riskIdleAfter(ctx, t, rc, riskRev)
	}
	t.Logf("risk settled at revision %d (%d listings: more than one means a cancelled call committed late)", riskRev, listings)
	pol, err := pols.GetCompliancePolicy(ctx, &compliancev1.GetCompliancePolicyRequest{PolicyId: "max-medium"})
	if err != nil {
		t.Fatal(err)
	}
	maxLevel := pol.GetPolicy().GetMaxDeviceRisk()
	want := func(id string) commonv1.ComplianceState {
		l := levels[id]
		if l == commonv1.RiskLevel_RISK_LEVEL_UNSPECIFIED {
			l = commonv1.RiskLevel_RISK_LEVEL_NONE
		}
		if l > maxLevel {
			return commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT
		}
		return commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT
	}

	// Wait (on the compliance event stream, with a deadline) until compliance has
	// caught up, then every device must match. The deadline is on progress: 30 s
	// without a new compliance revision (a consumer that lost an event stops moving)
	// fails, while one that is still applying events under a loaded machine's -race
	// run gets the time it needs, up to the test's overall context.
	deadline := time.Now().Add(30 * time.Second)
	lastRev := int64(-1)
	for {
		got, rev := listCompliance(ctx, t, compl)
		if rev != lastRev {
			lastRev, deadline = rev, time.Now().Add(30*time.Second)
		}
		var bad []string
		for _, id := range ids {
			c := got[id]
			if c.GetState() != want(id) || c.GetDeviceRisk() != max2none(levels[id]) {
				bad = append(bad, fmt.Sprintf("%s: %v at risk %v (risk revision %d, alerts %v), want %v at risk %v (risk service: revision %d, alerts %v) (%s)",
					id, c.GetState(), c.GetDeviceRisk(), c.GetRiskRevision(), c.GetRiskAlertIds(), want(id), levels[id],
					risks[id].GetRevision(), risks[id].GetActiveAlertIds(), c.GetReason()))
			}
		}
		if len(bad) == 0 {
			t.Logf("all %d devices match the final risk levels (risk revision %d, max risk %v, compliance revision %d)", len(ids), riskRev, maxLevel, rev)
			return
		}
		if time.Now().After(deadline) {
			// The consumer's own view (cursor, connection, reconnects) tells a lost event
			// (cursor at the risk revision) from a consumer that has not caught up.
			t.Fatalf("%d of %d devices differ from the state computed from the final risk levels, and no compliance event came for 30 s (compliance revision %d), e.g.:\n%v\ncompliance risk feed (risk revision %d):\n%s",
				len(bad), len(ids), lastRev, bad[:min(len(bad), 10)], riskRev, feedMetrics(compHTTP))
		}
		waitForChange(ctx, t, compl, rev)
	}
}

// listRisks lists every device risk and the revision the listing reflects.
func listRisks(ctx context.Context, t *testing.T, rc riskv1.RiskServiceClient) (map[string]commonv1.RiskLevel, map[string]*riskv1.DeviceRisk, int64) {
	t.Helper()
	levels := map[string]commonv1.RiskLevel{}
	risks := map[string]*riskv1.DeviceRisk{}
	var rev int64
	for tok, first := "", true; first || tok != ""; first = false {
		resp, err := rc.ListDeviceRisks(ctx, &riskv1.ListDeviceRisksRequest{PageSize: 10000, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		if first {
			rev = resp.GetRevision()
		}
		for _, r := range resp.GetDeviceRisks() {
			levels[r.GetDeviceId()] = r.GetLevel()
			risks[r.GetDeviceId()] = r
		}
		tok = resp.GetNextPageToken()
	}
	return levels, risks, rev
}

// riskIdleAfter watches the risk stream from rev: false at the first event after rev,
// true when the stream has been idle for a progress interval (the second progress
// message; the first comes at once).
func riskIdleAfter(ctx context.Context, t *testing.T, rc riskv1.RiskServiceClient, rev int64) bool {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := rc.WatchRiskEvents(wctx, &riskv1.WatchRiskEventsRequest{StartRevision: rev})
	if err != nil {
		t.Fatal(err)
	}
	for progress := 0; progress < 2; {
		m, err := s.Recv()
		if err != nil {
			t.Fatalf("watch risk events from %d: %v", rev, err)
		}
		if m.GetEvent() != nil {
			return false
		}
		progress++
	}
	return true
}

func max2none(l commonv1.RiskLevel) commonv1.RiskLevel {
	if l == commonv1.RiskLevel_RISK_LEVEL_UNSPECIFIED {
		return commonv1.RiskLevel_RISK_LEVEL_NONE
	}
	return l
}

func listCompliance(ctx context.Context, t *testing.T, c compliancev1.ComplianceServiceClient) (map[string]*compliancev1.DeviceCompliance, int64) {
	t.Helper()
	out := map[string]*compliancev1.DeviceCompliance{}
	var rev int64
	for tok, first := "", true; first || tok != ""; first = false {
		resp, err := c.ListDeviceCompliance(ctx, &compliancev1.ListDeviceComplianceRequest{PageSize: 10000, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		if first {
			rev = resp.GetRevision()
		}
		for _, d := range resp.GetDeviceCompliances() {
			out[d.GetDeviceId()] = d
		}
		tok = resp.GetNextPageToken()
	}
	return out, rev
}

// waitForChange returns at the first event after rev, or when the stream has been idle
// for a progress interval (the second progress message; the first comes at once).
func waitForChange(ctx context.Context, t *testing.T, c compliancev1.ComplianceServiceClient, rev int64) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := c.WatchComplianceEvents(wctx, &compliancev1.WatchComplianceEventsRequest{StartRevision: rev})
	if err != nil {
		t.Fatal(err)
	}
	progress := 0
	for {
		m, err := s.Recv()
		if err != nil || m.GetEvent() != nil {
			return
		}
		if m.GetProgress() != nil {
			if progress++; progress == 2 {
				return
			}
		}
	}
}

func parallel(t *testing.T, workers, n int, fn func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// feedMetrics returns the compliance service's risk-feed metrics from /metrics.
func feedMetrics(httpAddr string) string {
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err.Error()
	}
	var lines []string
	for _, l := range strings.Split(string(body), "\n") {
		if strings.Contains(l, "risk_feed") && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}
