package compliancegrpc_test

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/condaccess/condaccess/services/compliance"
	"github.com/condaccess/condaccess/services/compliance/compliancegrpc"
	"github.com/condaccess/condaccess/services/compliance/compliancestore"
	"github.com/condaccess/condaccess/services/compliance/compliancetest"
)

// BenchmarkRiskToComplianceLatency measures, over loopback gRPC with the compliance
// service in-process, the time from a risk event's commit at the in-process fake risk
// service (its event_time) until a WatchComplianceEvents client receives the compliance
// event it causes (risk watch stream -> consumer -> one store transaction -> compliance
// watch stream). Reports p50 and p99 in microseconds. The same against the real risk
// service: compliancetest's BenchmarkRiskToComplianceLatencyRealRisk.
func BenchmarkRiskToComplianceLatency(b *testing.B) {
	risk, addr := compliancetest.StartRisk(b)
	compliancetest.BenchLatency(b, compliancetest.RiskClient(b, addr), addr, func(rev int64, _ time.Time) time.Time { return risk.EventTime(rev) })
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
