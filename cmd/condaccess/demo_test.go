package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

// TestDemo runs condaccess demo as a newcomer would and checks that it prints every
// step of the flow, in order, with the alert's trace id.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole suite")
	}
	var out, errOut bytes.Buffer
	if err := run(t.Context(), []string{"demo", "--timeout", "60s"}, &out, &errOut); err != nil {
		t.Fatalf("demo failed: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	text := out.String()
	at := map[string]int{}
	for _, step := range demoSteps {
		i := strings.Index(text, " "+step+" ")
		if i < 0 {
			t.Errorf("the output has no step %q", step)
		}
		at[step] = i
	}
	// The causal chain is ordered; the investigation runs in parallel with the
	// compliance and access steps, between the alert and the approval.
	chain := []string{"alert reported", "device risk HIGH", "device noncompliant", "access BLOCK", "quarantine approved",
		"file quarantined", "alerts resolved", "device compliant", "access ALLOW"}
	for i := 1; i < len(chain); i++ {
		if at[chain[i]] < at[chain[i-1]] {
			t.Errorf("step %q is printed before %q", chain[i], chain[i-1])
		}
	}
	if inv := at["investigation opened"]; inv < at["alert reported"] || inv > at["quarantine approved"] {
		t.Errorf("the investigation is not between the alert and the approval")
	}
	m := regexp.MustCompile(`the alert's trace is ([0-9a-f]{32})`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no trace id at the end:\n%s", text)
	}
	// The alert, risk, compliance and resolution steps carry the alert's trace.
	if n := strings.Count(text, m[1]); n < 5 {
		t.Errorf("the alert's trace %s appears %d times; want it on the steps it caused:\n%s", m[1], n, text)
	}
	if t.Failed() {
		t.Logf("output:\n%s", text)
	}
}
