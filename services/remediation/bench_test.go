package remediation_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/condaccess/condaccess/services/remediation"
	"github.com/condaccess/condaccess/services/remediation/remediationstore"
	"github.com/condaccess/condaccess/services/remediation/remediationstore/storetest"
)

type okRisk struct{}

func (okRisk) GetAlert(context.Context, string) (*remediation.Alert, error) {
	return nil, remediation.ErrNotFound
}
func (okRisk) ResolveAlert(context.Context, string, string) error { return nil }

// BenchmarkInvestigationLifecycle measures one full automated investigation on the
// SQLite store: alert → investigation with a queued quarantine → sent → result →
// REMEDIATED with its alert pending resolution → resolved. Five durable commits.
func BenchmarkInvestigationLifecycle(b *testing.B) {
	ctx := context.Background()
	st, err := remediationstore.Open(ctx, remediationstore.Options{Path: filepath.Join(b.TempDir(), "r.db"), Encode: storetest.EncodeJSON})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	svc := remediation.New(remediation.Config{Store: st, Risk: okRisk{}})
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		dev := fmt.Sprintf("dev-%d", i)
		a := &remediation.Alert{ID: "a-" + dev, DeviceID: dev, Severity: remediation.SeverityHigh, Title: "x",
			Evidence: []remediation.Evidence{{File: &remediation.FileEvidence{Path: "/f", SHA256: "ab"}}}}
		if err := svc.OnAlert(ctx, a, remediation.TraceContext{}, int64(i+1)); err != nil {
			b.Fatal(err)
		}
		inv, err := st.OpenInvestigation(ctx, dev)
		if err != nil {
			b.Fatal(err)
		}
		full, err := st.GetInvestigation(ctx, inv.ID)
		if err != nil {
			b.Fatal(err)
		}
		id := full.Actions[0].ID
		if err := svc.ActionSent(ctx, id); err != nil {
			b.Fatal(err)
		}
		if _, err := svc.ReportResult(ctx, dev, remediation.ActionResult{ActionID: id, Succeeded: true, QuarantineID: "q"}); err != nil {
			b.Fatal(err)
		}
		if left, err := svc.ResolvePending(ctx); err != nil || left != 0 {
			b.Fatal(left, err)
		}
	}
}
