package compliance_test

import (
	"strings"
	"testing"
	"time"

	"github.com/condaccess/condaccess/services/compliance"
)

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"10.0.9", "10.0.22631", -1},
		{"10.0.22631", "10.0.22631", 0},
		{"10.0", "10.0.0", 0},
		{"10.1", "10.0.99999", 1},
		{"14.4.1", "14.10", -1},
		{"007.1", "7.1", 0},
		{"99999999999999999999999.1", "99999999999999999999998.9", 1},
	}
	for _, tt := range tests {
		t.Run(tt.a+" vs "+tt.b, func(t *testing.T) {
			got, err := compliance.CompareVersions(tt.a, tt.b)
			if err != nil || got != tt.want {
				t.Errorf("CompareVersions(%q, %q) = %d, %v; want %d", tt.a, tt.b, got, err, tt.want)
			}
		})
	}
	for _, bad := range []string{"", "10..1", "10.a", ".1", "1.", "-1"} {
		if _, err := compliance.ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q) accepted a malformed version", bad)
		}
	}
}

func TestEvaluate(t *testing.T) {
	now := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	win := &compliance.Device{ID: "dev-1", Platform: compliance.PlatformWindows, OSVersion: "10.0.22631", Groups: []string{"finance"}}
	maxMedium := &compliance.Policy{ID: "max-medium", DisplayName: "M", MaxDeviceRisk: compliance.RiskMedium, Assignment: compliance.Assignment{AllDevices: true}}
	graceful := &compliance.Policy{ID: "graceful", DisplayName: "G", MaxDeviceRisk: compliance.RiskLow, Assignment: compliance.Assignment{AllDevices: true},
		Actions: compliance.Actions{Grace: time.Hour, RiskGrace: []compliance.RiskGrace{{Level: compliance.RiskMedium, Grace: 10 * time.Minute}}}}
	high := &compliance.DeviceRisk{DeviceID: "dev-1", Level: compliance.RiskHigh, ActiveAlertIDs: []string{"a-1"}, Revision: 5}
	medium := &compliance.DeviceRisk{DeviceID: "dev-1", Level: compliance.RiskMedium, ActiveAlertIDs: []string{"m-1", "m-2"}, Revision: 6}
	retired := *win
	retired.Retired = true
	noOS := *win
	noOS.OSVersion = ""
	mac := *win
	mac.Platform = compliance.PlatformMacOS

	tests := []struct {
		name     string
		in       compliance.EvalInput
		want     compliance.State
		reason   string
		nextEval time.Duration // from now; 0 = none
	}{
		{"no risk reported counts as NONE", compliance.EvalInput{Device: win, Policies: []*compliance.Policy{maxMedium}},
			compliance.StateCompliant, "compliant with policy max-medium", 0},
		{"HIGH above MEDIUM", compliance.EvalInput{Device: win, Policies: []*compliance.Policy{maxMedium}, Risk: high},
			compliance.StateNoncompliant, "risk HIGH above allowed MEDIUM, from alert a-1", 0},
		{"MEDIUM at MEDIUM", compliance.EvalInput{Device: win, Policies: []*compliance.Policy{maxMedium}, Risk: medium},
			compliance.StateCompliant, "compliant", 0},
		{"MEDIUM grace entry", compliance.EvalInput{Device: win, Policies: []*compliance.Policy{graceful}, Risk: medium},
			compliance.StateInGrace, "risk MEDIUM above allowed LOW, from alerts m-1, m-2", 10 * time.Minute},
		{"grace runs from when the policy started failing", compliance.EvalInput{Device: win, Policies: []*compliance.Policy{graceful}, Risk: medium,
			Previous: &compliance.DeviceCompliance{Policies: []compliance.PolicyResult{{PolicyID: "graceful", FailingSince: now.Add(-11 * time.Minute)}}}},
			compliance.StateNoncompliant, "risk MEDIUM above allowed LOW", 0},
		{"no HIGH entry: no grace at HIGH", compliance.EvalInput{Device: win, Policies: []*compliance.Policy{graceful}, Risk: high},
			compliance.StateNoncompliant, "risk HIGH above allowed LOW", 0},
		{"no policy: noncompliant by default", compliance.EvalInput{Device: win},
			compliance.StateNoncompliant, "no compliance policy assigned", 0},
		{"no policy: tenant setting compliant", compliance.EvalInput{Device: win, Settings: compliance.Settings{DevicesWithoutPolicyCompliant: true}},
			compliance.StateCompliant, "no compliance policy assigned", 0},
		{"excluded group beats all devices", compliance.EvalInput{Device: win, Policies: []*compliance.Policy{{ID: "p", Assignment: compliance.Assignment{AllDevices: true, ExcludeGroups: []string{"finance"}}, MaxDeviceRisk: compliance.RiskNone}}, Risk: high},
			compliance.StateNoncompliant, "no compliance policy assigned", 0},
		{"platform scope narrows", compliance.EvalInput{Device: &mac, Policies: []*compliance.Policy{{ID: "p", Platforms: []compliance.Platform{compliance.PlatformWindows}, Assignment: compliance.Assignment{AllDevices: true}}}},
			compliance.StateNoncompliant, "no compliance policy assigned", 0},
		{"min OS compared as versions", compliance.EvalInput{Device: win, Policies: []*compliance.Policy{{ID: "os", MinOSVersion: "10.0.9", Assignment: compliance.Assignment{IncludeGroups: []string{"finance"}}}}},
			compliance.StateCompliant, "compliant", 0},
		{"missing OS version fails min OS", compliance.EvalInput{Device: &noOS, Policies: []*compliance.Policy{{ID: "os", MinOSVersion: "10.0", Assignment: compliance.Assignment{AllDevices: true}}}},
			compliance.StateNoncompliant, "OS version unknown", 0},
		{"retired", compliance.EvalInput{Device: &retired, Policies: []*compliance.Policy{maxMedium}},
			compliance.StateNotEvaluated, "retired", 0},
		{"excluded until expiry", compliance.EvalInput{Device: win, Policies: []*compliance.Policy{maxMedium}, Risk: high,
			Exclusion: &compliance.Exclusion{ID: "x", Reason: "ticket 42", CreatedBy: "alice", ExpireTime: now.Add(time.Hour)}},
			compliance.StateExcluded, "excluded from compliance evaluation by alice until 2026-11-27T09:00:00Z: ticket 42 (without the exclusion: NONCOMPLIANT", time.Hour},
		{"expired exclusion is ignored", compliance.EvalInput{Device: win, Policies: []*compliance.Policy{maxMedium}, Risk: high,
			Exclusion: &compliance.Exclusion{ID: "x", Reason: "r", ExpireTime: now}},
			compliance.StateNoncompliant, "from alert a-1", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.Now = now
			got := compliance.Evaluate(tt.in)
			if got.State != tt.want || !strings.Contains(got.Reason, tt.reason) {
				t.Errorf("Evaluate = %v %q, want %v containing %q", got.State, got.Reason, tt.want, tt.reason)
			}
			var next time.Time
			if tt.nextEval != 0 {
				next = now.Add(tt.nextEval)
			}
			if !got.NextEvaluateTime.Equal(next) {
				t.Errorf("NextEvaluateTime = %v, want %v", got.NextEvaluateTime, next)
			}
		})
	}
}
