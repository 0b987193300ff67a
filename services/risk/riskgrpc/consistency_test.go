package riskgrpc_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/services/risk/risktest"
)

// TestConcurrentConsistency reports and resolves alerts on a few devices from many
// goroutines (so that group commits interleave them), then checks that every device's
// risk follows the rule from its final alerts, and that the event stream, replayed
// from 0, ends in the same state.
func TestConcurrentConsistency(t *testing.T) {
	h := risktest.StartWith(t, risktest.Options{})
	c := h.Client
	const devices, workers, ops = 4, 8, 40
	sevs := []commonv1.Severity{info, low, medium, high}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			var mine []string
			for i := range ops {
				if len(mine) > 0 && rng.IntN(3) == 0 {
					id := mine[rng.IntN(len(mine))]
					_, err := c.ResolveAlert(ctx, &riskv1.ResolveAlertRequest{AlertId: id, Classification: 1})
					if err != nil && status.Code(err) != codes.FailedPrecondition {
						t.Errorf("ResolveAlert(%s): %v", id, err)
					}
					continue
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				a := newAlert(id, fmt.Sprintf("dev-%d", rng.IntN(devices)), sevs[rng.IntN(len(sevs))])
				if _, err := c.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: a}); err != nil {
					t.Errorf("ReportAlert(%s): %v", id, err)
				}
				mine = append(mine, id)
			}
		}()
	}
	wg.Wait()
	ctx := ctxT(t)

	// Expected state from the alerts themselves.
	want := map[string]commonv1.RiskLevel{}
	wantActive := map[string][]string{}
	req := &riskv1.ListAlertsRequest{PageSize: 1000}
	for {
		res, err := c.ListAlerts(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range res.GetAlerts() {
			d := a.GetDeviceId()
			if _, ok := want[d]; !ok {
				want[d] = commonv1.RiskLevel_RISK_LEVEL_NONE
			}
			if a.GetStatus() != riskv1.AlertStatus_ALERT_STATUS_RESOLVED && a.GetSeverity() > info {
				wantActive[d] = append(wantActive[d], a.GetAlertId())
				want[d] = max(want[d], commonv1.RiskLevel(a.GetSeverity()))
			}
		}
		if res.GetNextPageToken() == "" {
			break
		}
		req.PageToken = res.GetNextPageToken()
	}
	list, err := c.ListDeviceRisks(ctx, &riskv1.ListDeviceRisksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetDeviceRisks()) != len(want) {
		t.Errorf("ListDeviceRisks has %d devices, want %d", len(list.GetDeviceRisks()), len(want))
	}
	for _, dr := range list.GetDeviceRisks() {
		d := dr.GetDeviceId()
		got := slices.Clone(dr.GetActiveAlertIds())
		slices.Sort(got)
		slices.Sort(wantActive[d])
		if dr.GetLevel() != want[d] || !slices.Equal(got, wantActive[d]) {
			t.Errorf("%s: level %v active %v, want %v %v", d, dr.GetLevel(), got, want[d], wantActive[d])
		}
	}

	// Replaying the stream gives the same levels.
	s, err := c.WatchRiskEvents(ctx, &riskv1.WatchRiskEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	replayed := map[string]commonv1.RiskLevel{}
	for seen := int64(0); seen < list.GetRevision(); {
		m, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		ev := m.GetEvent()
		if ev == nil {
			continue
		}
		if ev.GetRevision() != seen+1 {
			t.Fatalf("revision %d after %d", ev.GetRevision(), seen)
		}
		seen = ev.GetRevision()
		if rc := ev.GetDeviceRiskChanged(); rc != nil {
			d := rc.GetDeviceRisk().GetDeviceId()
			if prev, ok := replayed[d]; ok && prev != rc.GetPreviousLevel() {
				t.Errorf("%s: event %d says previous level %v, the stream had %v", d, seen, rc.GetPreviousLevel(), prev)
			}
			replayed[d] = rc.GetDeviceRisk().GetLevel()
		}
	}
	for d, l := range want {
		if replayed[d] != l {
			t.Errorf("%s: replayed level %v, want %v", d, replayed[d], l)
		}
	}
}
