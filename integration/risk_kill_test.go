package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/testing/protocmp"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/integration/harness"
)

// TestRiskSurvivesSIGKILL runs `condaccess serve --services risk` as a real process,
// with a watcher connected and alerts arriving from concurrent reporters, and kills it
// with SIGKILL several times, restarting it on the same data directory and port. The
// watcher resumes from its last revision each time. At the end:
//   - the watcher received every revision from 1 to the last exactly once, in order;
//   - what it received equals a fresh replay from 0 (nothing it saw before a kill was
//     lost or changed by it);
//   - every alert acknowledged before a kill is stored and was reported exactly once.
func TestRiskSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: starts real processes")
	}
	const (
		kills     = 3
		reporters = 8
		perKill   = 150 // acknowledged alerts between kills
	)
	bin, err := harness.Build()
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	dir := t.TempDir()
	grpcAddr, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	httpAddr, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	risk := &harness.Process{
		Name: "risk", Path: bin.Condaccess, GRPCAddr: grpcAddr, HealthService: "condaccess.risk.v1.RiskService",
		Env:     []string{"OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none"},
		LogPath: filepath.Join(dir, "risk.log"),
		Args: []string{"serve", "--services", "risk", "--grpc-addr", grpcAddr, "--http-addr", httpAddr,
			"--data-dir", filepath.Join(dir, "data"), "--stop-timeout", "2s", "--risk-progress-interval", "100ms"},
	}
	t.Cleanup(func() {
		_ = risk.Stop(5 * time.Second)
		if t.Failed() {
			t.Logf("risk log:\n%s", risk.Logs(16<<10))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := risk.Start(); err != nil {
		t.Fatal(err)
	}
	if err := risk.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := riskv1.NewRiskServiceClient(conn)

	// The watcher: resumes from its last revision after every break.
	var (
		wmu      sync.Mutex
		received []*riskv1.RiskEvent
		resumes  int
		breaks   []string
	)
	lastRev := func() int64 {
		wmu.Lock()
		defer wmu.Unlock()
		if len(received) == 0 {
			return 0
		}
		return received[len(received)-1].GetRevision()
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- func() error {
			for watchCtx.Err() == nil {
				start := lastRev()
				s, err := client.WatchRiskEvents(watchCtx, &riskv1.WatchRiskEventsRequest{StartRevision: start})
				for err == nil {
					var m *riskv1.WatchRiskEventsResponse
					if m, err = s.Recv(); err != nil {
						break
					}
					ev := m.GetEvent()
					if ev == nil {
						continue
					}
					wmu.Lock()
					want := int64(1)
					if n := len(received); n > 0 {
						want = received[n-1].GetRevision() + 1
					}
					if ev.GetRevision() != want {
						wmu.Unlock()
						return fmt.Errorf("watch from %d: got revision %d, want %d (duplicate, gap or reorder)", start, ev.GetRevision(), want)
					}
					received = append(received, ev)
					wmu.Unlock()
				}
				if watchCtx.Err() != nil {
					return nil
				}
				wmu.Lock()
				resumes++
				breaks = append(breaks, err.Error())
				wmu.Unlock()
				select {
				case <-watchCtx.Done():
				case <-time.After(20 * time.Millisecond):
				}
			}
			return nil
		}()
	}()

	// The reporters: every acknowledged alert id is recorded.
	var (
		amu    sync.Mutex
		acked  = map[string]bool{}
		seq    atomic.Int64
		ackN   atomic.Int64
		failed atomic.Int64
	)
	repCtx, stopReporters := context.WithCancel(ctx)
	var rwg sync.WaitGroup
	for r := range reporters {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			for repCtx.Err() == nil {
				n := seq.Add(1)
				id := fmt.Sprintf("kill-%d", n)
				sev := []commonv1.Severity{commonv1.Severity_SEVERITY_LOW, commonv1.Severity_SEVERITY_MEDIUM, commonv1.Severity_SEVERITY_HIGH}[n%3]
				cctx, cancel := context.WithTimeout(repCtx, 5*time.Second)
				_, err := client.ReportAlert(cctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
					AlertId: id, DeviceId: fmt.Sprintf("dev-%d-%d", r, n%7), Severity: sev, Title: "kill test " + id,
				}})
				cancel()
				if err != nil {
					failed.Add(1)
					select { // the server is down: try again shortly
					case <-repCtx.Done():
					case <-time.After(10 * time.Millisecond):
					}
					continue
				}
				amu.Lock()
				acked[id] = true
				amu.Unlock()
				ackN.Add(1)
			}
		}()
	}
	waitAcked := func(n int64) {
		t.Helper()
		for ackN.Load() < n {
			select {
			case <-ctx.Done():
				t.Fatalf("only %d of %d alerts acknowledged", ackN.Load(), n)
			case err := <-watchDone:
				t.Fatalf("watcher stopped: %v", err)
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	for k := 1; k <= kills; k++ {
		waitAcked(int64(k) * perKill)
		atKill := lastRev()
		if err := risk.Kill(); err != nil {
			t.Fatal(err)
		}
		before := ackN.Load()
		if err := risk.Start(); err != nil {
			t.Fatal(err)
		}
		if err := risk.WaitHealthy(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("kill %d: %d alerts acknowledged before it, watcher at revision %d when killed, %d after the restart", k, before, atKill, lastRev())
	}
	waitAcked(int64(kills+1) * perKill)
	stopReporters()
	rwg.Wait()

	// Catch up: the watcher reaches the revision a listing reflects.
	list, err := client.ListDeviceRisks(ctx, &riskv1.ListDeviceRisksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	final := list.GetRevision()
	for lastRev() < final {
		select {
		case <-ctx.Done():
			t.Fatalf("watcher stuck at %d, want %d", lastRev(), final)
		case err := <-watchDone:
			t.Fatalf("watcher stopped: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	stopWatch()
	if err := <-watchDone; err != nil {
		t.Fatal(err)
	}
	wmu.Lock()
	got := append([]*riskv1.RiskEvent(nil), received...)
	t.Logf("%d alerts acknowledged, %d calls failed while down, %d events, watcher resumed %d times", ackN.Load(), failed.Load(), len(got), resumes)
	if resumes < kills {
		t.Errorf("watcher resumed %d times, want at least %d (one per kill): %v", resumes, kills, breaks)
	}
	wmu.Unlock()

	// A fresh replay from 0 is exactly what the watcher received across the kills.
	s, err := client.WatchRiskEvents(ctx, &riskv1.WatchRiskEventsRequest{StartRevision: 0})
	if err != nil {
		t.Fatal(err)
	}
	var replay []*riskv1.RiskEvent
	for int64(len(replay)) < final {
		m, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if ev := m.GetEvent(); ev != nil {
			replay = append(replay, ev)
		}
	}
	if len(got) > len(replay) {
		got = got[:len(replay)] // events after the listing revision are not in both
	}
	if diff := cmp.Diff(replay, got, protocmp.Transform()); diff != "" {
		t.Errorf("watched events differ from a fresh replay (-replay +watched):\n%s", diff)
	}

	// Every acknowledged alert survived and was reported exactly once.
	reported := map[string]int{}
	for _, ev := range got {
		if ac := ev.GetAlertChanged(); ac.GetType() == riskv1.AlertChangeType_ALERT_CHANGE_TYPE_REPORTED {
			reported[ac.GetAlert().GetAlertId()]++
		}
	}
	amu.Lock()
	defer amu.Unlock()
	lost := 0
	for id := range acked {
		if reported[id] != 1 {
			t.Errorf("acknowledged alert %s reported %d times in the event stream", id, reported[id])
		}
		if _, err := client.GetAlert(ctx, &riskv1.GetAlertRequest{AlertId: id}); err != nil {
			lost++
			if lost <= 5 {
				t.Errorf("acknowledged alert %s lost: %v", id, err)
			}
		}
	}
	for id, n := range reported {
		if n != 1 {
			t.Errorf("alert %s reported %d times", id, n)
		}
	}
	if lost > 0 {
		t.Errorf("%d acknowledged alerts lost", lost)
	}
}
