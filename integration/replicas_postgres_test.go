package integration

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", to read the leases

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/integration/harness"
	"github.com/condaccess/condaccess/internal/pgtest"
)

// TestReplicasOnPostgres runs two replicas of every service on one PostgreSQL
// database and plays the flow across them: alerts go to one risk replica, access is
// asked on the other access replica, the remediation runs through a real agent given
// both replicas' addresses. Meanwhile the consumer leaders of compliance and access
// (found from the lease rows: a holder id carries its process id) are SIGKILLed and
// restarted at random points. At the end, on every replica, each device's compliance
// and access decision is what its final risk implies; the compliance event history is
// gap-free, the same on both replicas, and no risk change was applied twice (no two
// events make the same state change from the same risk revision).
func TestReplicasOnPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: starts real processes")
	}
	url := pgtest.URL(t)
	s := harness.StartSuite(t, harness.Options{Replicas: 2, DatabaseURL: url, ServeArgs: []string{"--lease-duration", "2s"}})
	other := s.OnReplica(t, 1) // clients of every service's second replica
	s.Setup(t)

	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })

	// The chaos: kill the live consumer leader of compliance or access, restart it.
	chaosCtx, stopChaos := context.WithCancel(context.Background())
	var chaos sync.WaitGroup
	var (
		killMu sync.Mutex
		kills  []string
	)
	killed := func() int { killMu.Lock(); defer killMu.Unlock(); return len(kills) }
	chaos.Add(1)
	go func() {
		defer chaos.Done()
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
		for {
			select {
			case <-chaosCtx.Done():
				return
			case <-time.After(time.Duration(100+rng.IntN(700)) * time.Millisecond):
			}
			svc := []string{"compliance", "access"}[rng.IntN(2)]
			p, err := leaderOf(chaosCtx, db, svc, s.Replicas[svc])
			if err != nil {
				t.Logf("chaos: %s leader: %v", svc, err)
			}
			if p == nil {
				continue
			}
			killMu.Lock()
			kills = append(kills, p.Name)
			killMu.Unlock()
			_ = p.Kill()
			rctx, cancel := context.WithTimeout(chaosCtx, 30*time.Second)
			if err := p.Start(); err == nil {
				_ = p.WaitHealthy(rctx)
			}
			cancel()
		}
	}()
	// A failing step ends the test early: the chaos must stop before the test does (its
	// t.Logf after the end would panic, and it would go on killing processes).
	defer func() { stopChaos(); chaos.Wait() }()

	// Devices in the manual group: blocked on an alert, allowed when it is resolved.
	type dev struct {
		id     string
		alerts []string // every alert reported
		active []string // those not resolved yet
		high   bool
	}
	var devs []*dev
	for i := range 4 {
		d := &dev{id: fmt.Sprint("rdev-", i)}
		devs = append(devs, d)
		s.Enroll(t, d.id, harness.ManualGroup)
		other.WaitDecision(t, d.id, accessv1.Decision_DECISION_ALLOW)
	}
	// At least three rounds, and on until the chaos has killed six leaders (at most 60).
	for round := 0; round < 3 || (killed() < 6 && round < 60); round++ {
		for i, d := range devs {
			alert := fmt.Sprintf("ra-%d-%d", round, i)
			s.ReportAlert(t, alert, d.id) // risk replica 0
			d.alerts, d.high = append(d.alerts, alert), true
			other.WaitDecision(t, d.id, accessv1.Decision_DECISION_BLOCK) // access replica 1
			d.active = append(d.active, alert)
			if (round+i)%2 == 0 {
				for _, a := range d.active {
					other.ResolveAlert(t, a) // risk replica 1
				}
				d.active, d.high = nil, false
				s.WaitDecision(t, d.id, accessv1.Decision_DECISION_ALLOW) // access replica 0
			}
		}
	}
	// And the remediation through the real agent, fully automatic, with the block seen
	// and lifted on the first replicas while the chaos goes on.
	playRemediationFlow(t, s, "rdev-agent", harness.AutoGroup)

	stopChaos()
	chaos.Wait()
	t.Logf("SIGKILLed consumer leaders: %v", kills)
	if len(kills) < 6 {
		t.Errorf("the chaos killed %d consumer leaders, want at least 6", len(kills))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, name := range harness.ServiceNames {
		for _, p := range s.Replicas[name] {
			if !p.Running() {
				if err := p.Start(); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.WaitHealthy(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Final state on both replicas of every service.
	for _, view := range []*harness.Suite{s, other} {
		for _, d := range devs {
			wantRisk, wantComp, wantDec := commonv1.RiskLevel_RISK_LEVEL_NONE, commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT, accessv1.Decision_DECISION_ALLOW
			if d.high {
				wantRisk, wantComp, wantDec = commonv1.RiskLevel_RISK_LEVEL_HIGH, commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT, accessv1.Decision_DECISION_BLOCK
			}
			view.WaitRisk(t, d.id, wantRisk)
			view.WaitCompliance(t, d.id, wantComp)
			view.WaitDecision(t, d.id, wantDec)
		}
		view.WaitCompliance(t, "rdev-agent", commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT)
		view.WaitDecision(t, "rdev-agent", accessv1.Decision_DECISION_ALLOW)
	}

	// No acknowledged alert lost, none stored twice.
	seen := map[string]int{}
	for tok := ""; ; {
		r, err := other.Risk.ListAlerts(ctx, &riskv1.ListAlertsRequest{PageSize: 100, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range r.GetAlerts() {
			seen[a.GetAlertId()]++
		}
		if tok = r.GetNextPageToken(); tok == "" {
			break
		}
	}
	for _, d := range devs {
		for _, a := range d.alerts {
			if seen[a] != 1 {
				t.Errorf("acknowledged alert %s stored %d times", a, seen[a])
			}
		}
	}

	// The compliance history, replayed from each replica: gap-free, the same on both,
	// no risk event applied twice.
	var histories [][]string
	for _, view := range []*harness.Suite{s, other} {
		h := complianceHistory(t, ctx, view.Compliance)
		histories = append(histories, h)
	}
	if strings.Join(histories[0], "\n") != strings.Join(histories[1], "\n") {
		t.Errorf("the replicas serve different compliance histories:\n%v\n%v", histories[0], histories[1])
	}
}

// leaderOf returns the replica of svc holding one of its live leases, if any.
func leaderOf(ctx context.Context, db *sql.DB, svc string, replicas []*harness.Process) (*harness.Process, error) {
	rows, err := db.QueryContext(ctx, fmt.Sprintf(`SELECT holder FROM %s.leases WHERE expires_at > clock_timestamp()`, svc))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var holders []string
	for rows.Next() {
		var holder string
		if err := rows.Scan(&holder); err != nil {
			return nil, err
		}
		holders = append(holders, holder)
		// host/pid/random
		parts := strings.Split(holder, "/")
		if len(parts) < 2 {
			continue
		}
		pid, err := strconv.Atoi(parts[len(parts)-2])
		if err != nil {
			continue
		}
		for _, p := range replicas {
			if p.Pid() == pid {
				return p, nil
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("no live replica holds a lease (holders %v)", holders)
}

// complianceHistory replays the compliance events from 0 up to the first progress
// message after the head, checks the revisions are 1..n, each device's risk revisions
// never go back, and no change (device, from, to, risk revision) appears twice; it
// returns one line per event.
func complianceHistory(t *testing.T, ctx context.Context, c compliancev1.ComplianceServiceClient) []string {
	t.Helper()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.WatchComplianceEvents(wctx, &compliancev1.WatchComplianceEventsRequest{StartRevision: 0})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	lastRisk := map[string]int64{}
	changes := map[string]int64{}
	var n int64
	for {
		r, err := st.Recv()
		if err != nil {
			t.Fatalf("compliance replay after %d events: %v", n, err)
		}
		if r.GetProgress() != nil {
			if n > 0 {
				return lines
			}
			continue
		}
		e := r.GetEvent()
		n++
		if e.GetRevision() != n {
			t.Fatalf("compliance event %d has revision %d (a gap or a repeat)", n, e.GetRevision())
		}
		if ch := e.GetDeviceComplianceChanged(); ch != nil {
			dc := ch.GetDeviceCompliance()
			if prev, ok := lastRisk[dc.GetDeviceId()]; ok && dc.GetRiskRevision() < prev {
				t.Errorf("compliance revision %d for %s was computed from risk revision %d after %d: risk applied out of order",
					e.GetRevision(), dc.GetDeviceId(), dc.GetRiskRevision(), prev)
			}
			lastRisk[dc.GetDeviceId()] = dc.GetRiskRevision()
			change := fmt.Sprintf("%s %s->%s risk@%d", dc.GetDeviceId(), ch.GetPreviousState(), dc.GetState(), dc.GetRiskRevision())
			if first, ok := changes[change]; ok {
				t.Errorf("compliance revisions %d and %d are the same change (%s): a risk event applied twice", first, e.GetRevision(), change)
			}
			changes[change] = e.GetRevision()
			lines = append(lines, fmt.Sprintf("%d %s %s risk@%d", e.GetRevision(), dc.GetDeviceId(), dc.GetState(), dc.GetRiskRevision()))
		} else {
			lines = append(lines, fmt.Sprintf("%d other", e.GetRevision()))
		}
	}
}

// BenchmarkConsumerFailover measures failover of the compliance consumer: with two
// replicas of every service on one PostgreSQL, each iteration SIGKILLs the replica
// that holds compliance's leases, reports (or resolves) an alert at once, and times
// from the kill to the moment the other compliance replica shows the device's new
// state (the next event applied by the new leader). The killed replica is restarted
// before the next iteration. Run with
//
//	go test ./integration -run '^$' -bench ConsumerFailover -benchtime 20x
func BenchmarkConsumerFailover(b *testing.B) {
	url := pgtest.URL(b)
	const leaseDuration = 2 * time.Second
	s := harness.StartSuite(b, harness.Options{Replicas: 2, DatabaseURL: url, ServeArgs: []string{"--lease-duration", leaseDuration.String()}})
	s.Setup(b)
	db, err := sql.Open("pgx", url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	const dev = "dev-failover"
	s.Enroll(b, dev, harness.ManualGroup)
	ctx := context.Background()
	var took []time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		var leader *harness.Process
		for deadline := time.Now().Add(harness.Wait); leader == nil; {
			if leader, _ = leaderOf(ctx, db, "compliance", s.Replicas["compliance"]); leader == nil {
				if time.Now().After(deadline) {
					b.Fatal("no compliance replica holds a lease")
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		survivor := s.OnReplica(b, 1)
		if leader == s.Replicas["compliance"][1] {
			survivor = s.OnReplica(b, 0)
		}
		want := commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT
		b.StartTimer()
		start := time.Now()
		if err := leader.Kill(); err != nil {
			b.Fatal(err)
		}
		alert := fmt.Sprint("a-failover-", i/2)
		if i%2 == 0 {
			s.ReportAlert(b, alert, dev)
		} else {
			s.ResolveAlert(b, alert)
			want = commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT
		}
		survivor.WaitCompliance(b, dev, want)
		took = append(took, time.Since(start))
		b.StopTimer()
		if err := leader.Start(); err != nil {
			b.Fatal(err)
		}
		if err := leader.WaitHealthy(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Milliseconds()), "failover-p50-ms")
	b.ReportMetric(float64(took[len(took)-1].Milliseconds()), "failover-max-ms")
	b.ReportMetric(leaseDuration.Seconds()*1000, "lease-ms")
}
