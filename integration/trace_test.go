package integration

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/condaccess/condaccess/integration/harness"
)

// TestEndToEndTrace plays the flow with every process exporting spans to an OTLP
// receiver inside the test, and checks that one trace links the alert, the risk
// change, the compliance change, the access revocation, the investigation and the
// alert's resolution.
func TestEndToEndTrace(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: starts real processes")
	}
	s := harness.StartSuite(t, harness.Options{Traces: true})
	s.Setup(t)
	alerts := playRemediationFlow(t, s, "dev-trace", harness.AutoGroup)

	// The alert's trace starts where the risk service recorded it.
	isReport := func(sp harness.Span) bool {
		return sp.Service == "condaccess-risk" && sp.Kind == "SERVER" && strings.Contains(sp.Name, "RiskService/ReportAlert")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var story []harness.Span
	err := s.Traces.WaitFor(ctx, func(spans []harness.Span) (bool, string) {
		var reports []harness.Span
		for _, sp := range spans {
			if isReport(sp) {
				reports = append(reports, sp)
			}
		}
		if len(reports) == 0 {
			return false, fmt.Sprintf("no ReportAlert server span from condaccess-risk among %d spans: %s", len(spans), summarize(spans))
		}
		// The flow reports one alert (the agent may report it more than once: idempotent).
		var missing []string
		for _, r := range reports {
			story = harness.Connected(spans, r.TraceID)
			missing = missingLinks(story)
			if len(missing) == 0 {
				return true, ""
			}
		}
		return false, fmt.Sprintf("the alert's trace (%d spans) lacks %s; its spans: %s", len(story), strings.Join(missing, ", "), summarize(story))
	})
	if err != nil {
		t.Fatalf("alerts %v: %v", alerts, err)
	}
	t.Logf("one trace (%s) tells the story in %d spans:\n%s", story[0].TraceID, len(story), summarize(story))
}

// missingLinks lists the steps of the flow that have no span in the story.
func missingLinks(story []harness.Span) []string {
	has := func(pred func(harness.Span) bool) bool { return slices.ContainsFunc(story, pred) }
	byService := func(svc string) func(harness.Span) bool {
		return func(sp harness.Span) bool { return sp.Service == svc }
	}
	var missing []string
	if !has(func(sp harness.Span) bool {
		return sp.Service == "condaccess-risk" && strings.Contains(sp.Name, "RiskService/ReportAlert")
	}) {
		missing = append(missing, "the alert (risk ReportAlert)")
	}
	if !has(byService("condaccess-compliance")) {
		missing = append(missing, "the compliance change (a condaccess-compliance span)")
	}
	if !has(byService("condaccess-access")) {
		missing = append(missing, "the access revocation (a condaccess-access span)")
	}
	if !has(byService("condaccess-remediation")) {
		missing = append(missing, "the investigation (a condaccess-remediation span)")
	}
	if !has(func(sp harness.Span) bool {
		return sp.Service == "condaccess-risk" && strings.HasSuffix(sp.Name, "ResolveAlert")
	}) {
		missing = append(missing, "the alert's resolution (risk ResolveAlert)")
	}
	return missing
}

func summarize(spans []harness.Span) string {
	var b strings.Builder
	for i, sp := range spans {
		if i == 60 {
			fmt.Fprintf(&b, "  ... %d more\n", len(spans)-i)
			break
		}
		fmt.Fprintf(&b, "  %s\n", sp)
	}
	return b.String()
}
