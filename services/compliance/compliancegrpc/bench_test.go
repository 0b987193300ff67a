package compliancegrpc_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/services/compliance"
	"github.com/condaccess/condaccess/services/compliance/compliancegrpc"
	"github.com/condaccess/condaccess/services/compliance/compliancestore"
	"github.com/condaccess/condaccess/services/compliance/compliancetest"
)

// BenchmarkRiskToComplianceLatency measures, over loopback gRPC with the compliance
// service in-process, the time until a WatchComplianceEvents client receives the
// compliance event caused by a risk change (risk watch stream -> consumer -> one store
// transaction -> compliance watch stream). With the fake risk service the clock starts
// at the risk event's commit (its event_time); with the real risk service it starts
// before the ReportAlert/ResolveAlert call (so it includes the risk RPC and its
// durable commit). Reports p50 and p99 in microseconds.
func BenchmarkRiskToComplianceLatency(b *testing.B) {
	b.Run("fake-risk/from-risk-commit", func(b *testing.B) {
		risk, addr := compliancetest.StartRisk(b)
		benchLatency(b, compliancetest.RiskClient(b, addr), addr, func(rev int64, _ time.Time) time.Time { return risk.EventTime(rev) })
	})
	b.Run("real-risk/from-alert-call", func(b *testing.B) {
		rc, addr := startRealRisk(b)
		benchLatency(b, rc, addr, func(_ int64, called time.Time) time.Time { return called })
	})
}

func benchLatency(b *testing.B, rc riskv1.RiskServiceClient, addr string, start func(rev int64, called time.Time) time.Time) {
	ctx := context.Background()
	h := compliancetest.Start(b, addr, compliancetest.Options{})
	if _, err := h.Devices.EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
		DeviceId: "dev-1", Platform: commonv1.Platform_PLATFORM_WINDOWS, OsVersion: "10.0.22631",
	}}); err != nil {
		b.Fatal(err)
	}
	if _, err := h.Policies.CreateCompliancePolicy(ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
		PolicyId: "max-medium", DisplayName: "max medium", MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_MEDIUM,
		Assignment: &compliancev1.PolicyAssignment{AllDevices: true},
	}}); err != nil {
		b.Fatal(err)
	}
	list, err := h.Compliance.ListDeviceCompliance(ctx, &compliancev1.ListDeviceComplianceRequest{})
	if err != nil {
		b.Fatal(err)
	}
	stream, err := h.Compliance.WatchComplianceEvents(ctx, &compliancev1.WatchComplianceEventsRequest{StartRevision: list.GetRevision()})
	if err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, 2*b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		id := fmt.Sprintf("a-%d", i)
		called := time.Now()
		rep, err := rc.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{AlertId: id, DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "t"}})
		if err != nil {
			b.Fatal(err)
		}
		t0 := start(rep.GetDeviceRisk().GetRevision(), called)
		lat = append(lat, awaitState(b, stream, commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT).Sub(t0))
		called = time.Now()
		res, err := rc.ResolveAlert(ctx, &riskv1.ResolveAlertRequest{AlertId: id, Classification: riskv1.AlertClassification_ALERT_CLASSIFICATION_FALSE_POSITIVE})
		if err != nil {
			b.Fatal(err)
		}
		t0 = start(res.GetDeviceRisk().GetRevision(), called)
		lat = append(lat, awaitState(b, stream, commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT).Sub(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

func awaitState(b *testing.B, s interface {
	Recv() (*compliancev1.WatchComplianceEventsResponse, error)
}, want commonv1.ComplianceState) time.Time {
	for {
		m, err := s.Recv()
		if err != nil {
			b.Fatal(err)
		}
		if m.GetEvent().GetDeviceComplianceChanged().GetDeviceCompliance().GetState() == want {
			return time.Now()
		}
	}
}

// BenchmarkPolicyChangeSweep100k measures re-evaluating 100,000 enrolled devices (1 in
// 20 at HIGH risk) after a policy change: UpdatePolicy returns once every device is
// re-evaluated, state and compliance events written in batches of 1,000 devices per
// transaction (SQLite, synchronous FULL). Each op flips the policy's maximum risk
// between MEDIUM and LOW, which changes every device's explanation (100,000 events).
func BenchmarkPolicyChangeSweep100k(b *testing.B) {
	const n = 100_000
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := compliancestore.Open(ctx, compliancestore.Options{Path: filepath.Join(b.TempDir(), "c.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	svc := compliance.New(compliance.Config{Store: st, Encode: compliancegrpc.EncodeEvent})
	done := make(chan struct{})
	go func() { defer close(done); _ = svc.Run(ctx) }()
	defer func() { cancel(); <-done }()
	now := time.Now().UTC()
	for start := 0; start < n; start += 5000 {
		if err := st.Update(ctx, func(tx compliance.Tx) error {
			for i := start; i < start+5000; i++ {
				d := &compliance.Device{ID: fmt.Sprintf("dev-%06d", i), Platform: compliance.Platform(1 + i%5), OSVersion: "10.0.22631",
					Groups: []string{fmt.Sprintf("g-%d", i%100)}, EnrollTime: now, UpdateTime: now, Version: 1}
				if err := tx.PutDevice(ctx, d); err != nil {
					return err
				}
				if i%20 == 0 {
					if err := tx.PutRisk(ctx, &compliance.DeviceRisk{DeviceID: d.ID, Level: compliance.RiskHigh, ActiveAlertIDs: []string{"a-" + d.ID}, Revision: 1}); err != nil {
						return err
					}
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	p, err := svc.CreatePolicy(ctx, compliance.Policy{ID: "max-risk", DisplayName: "max risk", MaxDeviceRisk: compliance.RiskMedium,
		Assignment: compliance.Assignment{AllDevices: true}})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := range b.N {
		lvl := compliance.RiskLow
		if i%2 == 1 {
			lvl = compliance.RiskMedium
		}
		start := st.Revision()
		p, err = svc.UpdatePolicy(ctx, compliance.Policy{ID: p.ID, MaxDeviceRisk: lvl}, []string{"max_device_risk"}, p.Etag())
		if err != nil {
			b.Fatal(err)
		}
		if got := st.Revision() - start; got != n {
			b.Fatalf("policy change wrote %d events, want %d", got, n)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/100k-devices")
	// CPU time of the whole process per op: the figure to compare on a busy machine.
	b.ReportMetric(float64((cpuTime()-cpu0).Milliseconds())/float64(b.N), "cpu-ms/op")
}

// cpuTime is the process's user plus system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
