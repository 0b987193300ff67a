package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/integration/harness"
	"github.com/condaccess/condaccess/internal/pgtest"
)

// TestRiskReplicasOnPostgresSurviveSIGKILL runs two `condaccess serve --services risk
// --database-url` processes on one PostgreSQL database. Alerts are reported to both;
// one replica is SIGKILLed mid-way and restarted while reports go on to the other. A
// watcher on the replica that stays up must receive revisions 1..head exactly once,
// in order, including those committed by the other replica; a replay from 0 on the
// restarted replica must be the same events; every acknowledged alert is stored once.
func TestRiskReplicasOnPostgresSurviveSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: starts real processes")
	}
	url := pgtest.URL(t)
	bin, err := harness.Build()
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	dir := t.TempDir()
	var procs []*harness.Process
	var clients []riskv1.RiskServiceClient
	for i := range 2 {
		grpcAddr, err := harness.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		p := &harness.Process{
			Name: fmt.Sprint("risk-", i), Path: bin.Condaccess, GRPCAddr: grpcAddr, HealthService: "condaccess.risk.v1.RiskService",
			Env:     []string{"OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "CONDACCESS_DATABASE_URL=" + url},
			LogPath: filepath.Join(dir, fmt.Sprint("risk-", i, ".log")),
			Args: []string{"serve", "--services", "risk", "--grpc-addr", grpcAddr, "--http-addr", "",
				"--data-dir", filepath.Join(dir, fmt.Sprint("data-", i)), "--stop-timeout", "2s", "--risk-progress-interval", "100ms"},
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
		clients = append(clients, riskv1.NewRiskServiceClient(conn))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, p := range procs {
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		if err := p.WaitHealthy(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// The watcher on replica 1, which is never killed.
	var (
		wmu  sync.Mutex
		revs []int64
	)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	watchErr := make(chan error, 1)
	stream, err := clients[1].WatchRiskEvents(wctx, &riskv1.WatchRiskEventsRequest{StartRevision: 0})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				watchErr <- err
				return
			}
			if e := resp.GetEvent(); e != nil {
				wmu.Lock()
				revs = append(revs, e.GetRevision())
				wmu.Unlock()
			}
		}
	}()

	var acked []string
	report := func(c riskv1.RiskServiceClient, id string) error {
		_, err := c.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
			AlertId: id, DeviceId: fmt.Sprint("dev-", len(acked)%7), Severity: commonv1.Severity_SEVERITY_HIGH, Title: "t"}})
		if err == nil {
			acked = append(acked, id)
		}
		return err
	}
	for i := range 40 {
		if err := report(clients[i%2], fmt.Sprint("before-", i)); err != nil {
			t.Fatalf("report %d: %v", i, err)
		}
	}
	if err := procs[0].Kill(); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := report(clients[1], fmt.Sprint("during-", i)); err != nil {
			t.Fatalf("report to the surviving replica: %v", err)
		}
	}
	if err := procs[0].Start(); err != nil {
		t.Fatal(err)
	}
	if err := procs[0].WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		if err := report(clients[i%2], fmt.Sprint("after-", i)); err != nil {
			t.Fatalf("report after the restart %d: %v", i, err)
		}
	}

	// Every acknowledged alert is stored once.
	stored := map[string]int{}
	for tok := ""; ; {
		resp, err := clients[0].ListAlerts(ctx, &riskv1.ListAlertsRequest{PageSize: 50, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range resp.GetAlerts() {
			stored[a.GetAlertId()]++
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
	if len(stored) != len(acked) {
		t.Fatalf("%d alerts stored, %d acknowledged", len(stored), len(acked))
	}
	for _, id := range acked {
		if stored[id] != 1 {
			t.Fatalf("acknowledged alert %s stored %d times", id, stored[id])
		}
	}

	// A replay from 0 on the restarted replica, up to its first progress message.
	var replay []int64
	rs, err := clients[0].WatchRiskEvents(ctx, &riskv1.WatchRiskEventsRequest{StartRevision: 0})
	if err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := rs.Recv()
		if err != nil {
			t.Fatalf("replay: %v", err)
		}
		if e := resp.GetEvent(); e != nil {
			replay = append(replay, e.GetRevision())
			continue
		}
		if resp.GetProgress() != nil && len(replay) > 0 {
			break
		}
	}
	head := int64(len(replay))
	for i, r := range replay {
		if r != int64(i+1) {
			t.Fatalf("replay event %d has revision %d", i, r)
		}
	}
	// The live watcher on the other replica reaches the same head, gap-free.
	end := time.Now().Add(30 * time.Second)
	for {
		wmu.Lock()
		n := int64(len(revs))
		wmu.Unlock()
		if n >= head {
			break
		}
		select {
		case err := <-watchErr:
			t.Fatalf("watcher ended after %d/%d events: %v", n, head, err)
		default:
		}
		if time.Now().After(end) {
			t.Fatalf("watcher has %d/%d events", n, head)
		}
		time.Sleep(10 * time.Millisecond)
	}
	wmu.Lock()
	defer wmu.Unlock()
	for i, r := range revs {
		if r != int64(i+1) {
			t.Fatalf("watcher event %d has revision %d (a gap or a repeat)", i, r)
		}
	}
	if head < int64(len(acked)) {
		t.Fatalf("head revision %d below the %d acknowledged reports", head, len(acked))
	}
}
