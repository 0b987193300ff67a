package compliance

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// ParseVersion checks a dotted numeric version ("10.0.22631") and returns its parts
// without leading zeros. An empty string is not a version.
func ParseVersion(v string) ([]string, error) {
	if v == "" {
		return nil, fmt.Errorf("empty version")
	}
	parts := strings.Split(v, ".")
	for i, p := range parts {
		if p == "" {
			return nil, fmt.Errorf("version %q has an empty part", v)
		}
		for _, c := range p {
			if c < '0' || c > '9' {
				return nil, fmt.Errorf("version %q: part %q is not a number", v, p)
			}
		}
		p = strings.TrimLeft(p, "0")
		if p == "" {
			p = "0"
		}
		parts[i] = p
	}
	return parts, nil
}

// CompareVersions compares two dotted versions numerically part by part (a missing part
// counts as 0, so 10.0 == 10.0.0, and 10.0.9 < 10.0.22631). Both must parse.
func CompareVersions(a, b string) (int, error) {
	pa, err := ParseVersion(a)
	if err != nil {
		return 0, err
	}
	pb, err := ParseVersion(b)
	if err != nil {
		return 0, err
	}
	for i := range max(len(pa), len(pb)) {
		x, y := "0", "0"
		if i < len(pa) {
			x = pa[i]
		}
		if i < len(pb) {
			y = pb[i]
		}
		if len(x) != len(y) {
			if len(x) < len(y) {
				return -1, nil
			}
			return 1, nil
		}
		if c := strings.Compare(x, y); c != 0 {
			return c, nil
		}
	}
	return 0, nil
}

// EvalInput is everything the evaluation of one device needs.
type EvalInput struct {
	Device   *Device
	Policies []*Policy // every policy; the assigned ones are picked
	Risk     *DeviceRisk
	// Exclusion is the device's latest active exclusion, if any (it may have expired
	// by Now; Evaluate then ignores it).
	Exclusion *Exclusion
	Settings  Settings
	// Previous is the device's previous compliance, if any (for grace periods).
	Previous *DeviceCompliance
	Now      time.Time
}

// Evaluate computes a device's compliance. Rules:
//   - an active exclusion makes the device EXCLUDED (its policies are still evaluated
//     for the explanation);
//   - a retired device is NOT_EVALUATED;
//   - a device without an assigned policy is NONCOMPLIANT, or COMPLIANT when the tenant
//     setting DevicesWithoutPolicyCompliant is on;
//   - otherwise each assigned policy is COMPLIANT when every configured setting is
//     satisfied; a failing policy is IN_GRACE_PERIOD until FailingSince plus the grace
//     period for the device's risk level, then NONCOMPLIANT; the device is NONCOMPLIANT
//     if any policy is, else IN_GRACE_PERIOD if any policy is, else COMPLIANT.
//
// A device the risk service has not reported counts as RISK_LEVEL_NONE; a device with
// no OS version fails a minimum OS version.
func Evaluate(in EvalInput) DeviceCompliance {
	d, now := in.Device, in.Now
	out := DeviceCompliance{DeviceID: d.ID, EvaluateTime: now, Risk: RiskNone}
	riskKnown := in.Risk != nil && in.Risk.Level.Valid()
	if riskKnown {
		out.Risk = in.Risk.Level
		out.RiskAlertIDs = in.Risk.CauseAlerts()
		out.RiskRevision = in.Risk.Revision
	}
	if d.Retired {
		out.State = StateNotEvaluated
		out.Reason = "device retired " + d.RetireTime.UTC().Format(time.RFC3339) + "; a retired device is not evaluated and does not count as compliant"
		return out
	}
	prev := map[string]*PolicyResult{}
	if in.Previous != nil {
		for i := range in.Previous.Policies {
			prev[in.Previous.Policies[i].PolicyID] = &in.Previous.Policies[i]
		}
	}
	var next time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	var failing, grace []*PolicyResult
	for _, p := range in.Policies {
		if !p.AppliesTo(d) {
			continue
		}
		r := PolicyResult{PolicyID: p.ID, DisplayName: p.DisplayName, State: StateCompliant}
		r.Settings = evalSettings(p, d, out.Risk, riskKnown, out.RiskAlertIDs)
		ok := true
		for _, s := range r.Settings {
			ok = ok && s.Compliant
		}
		if !ok {
			r.FailingSince = now
			if pr := prev[p.ID]; pr != nil && !pr.FailingSince.IsZero() && !pr.FailingSince.After(now) {
				r.FailingSince = pr.FailingSince
			}
			g := p.Actions.GraceFor(out.Risk)
			if end := r.FailingSince.Add(g); g > 0 && now.Before(end) {
				r.State = StateInGrace
				r.GraceExpireTime = end
				earliest(end)
			} else {
				r.State = StateNoncompliant
			}
		}
		out.Policies = append(out.Policies, r)
	}
	for i := range out.Policies {
		switch out.Policies[i].State {
		case StateNoncompliant:
			failing = append(failing, &out.Policies[i])
		case StateInGrace:
			grace = append(grace, &out.Policies[i])
		}
	}
	switch {
	case len(out.Policies) == 0 && in.Settings.DevicesWithoutPolicyCompliant:
		out.State = StateCompliant
		out.Reason = "no compliance policy assigned; the tenant setting devices_without_policy_compliant makes such a device compliant"
	case len(out.Policies) == 0:
		out.State = StateNoncompliant
		out.Reason = "no compliance policy assigned; a device without a policy is noncompliant (tenant setting devices_without_policy_compliant is off)"
	case len(failing) > 0:
		out.State = StateNoncompliant
		out.Reason = "noncompliant: " + explain(failing)
	case len(grace) > 0:
		out.State = StateInGrace
		out.Reason = "in grace period until " + grace[0].GraceExpireTime.UTC().Format(time.RFC3339) + ": " + explain(grace)
	default:
		out.State = StateCompliant
		if len(out.Policies) == 1 {
			out.Reason = fmt.Sprintf("compliant with policy %s", out.Policies[0].PolicyID)
		} else {
			out.Reason = fmt.Sprintf("compliant with all %d assigned policies", len(out.Policies))
		}
	}
	if x := in.Exclusion; x != nil && x.ActiveAt(now) {
		ex := *x
		out.Exclusion = &ex
		until := ""
		if !x.ExpireTime.IsZero() {
			until = " until " + x.ExpireTime.UTC().Format(time.RFC3339)
			earliest(x.ExpireTime)
		}
		out.Reason = fmt.Sprintf("excluded from compliance evaluation by %s%s: %s (without the exclusion: %s, %s)",
			x.CreatedBy, until, x.Reason, out.State, out.Reason)
		out.State = StateExcluded
	}
	out.NextEvaluateTime = next
	return out
}

// explain lists the failing settings of the given policies.
func explain(ps []*PolicyResult) string {
	var parts []string
	for _, p := range ps {
		for _, s := range p.Settings {
			if !s.Compliant {
				parts = append(parts, fmt.Sprintf("policy %s: %s", p.PolicyID, s.Reason))
			}
		}
	}
	return strings.Join(parts, "; ")
}

func evalSettings(p *Policy, d *Device, risk RiskLevel, riskKnown bool, alerts []string) []SettingResult {
	var out []SettingResult
	if p.MaxDeviceRisk != RiskUnspecified {
		r := SettingResult{
			Setting:   "max_device_risk",
			Expected:  "RISK_LEVEL_" + p.MaxDeviceRisk.String() + " or lower",
			Actual:    "RISK_LEVEL_" + risk.String(),
			Compliant: risk <= p.MaxDeviceRisk,
		}
		if !riskKnown {
			r.Actual += " (no risk reported)"
		}
		switch {
		case !r.Compliant:
			r.Reason = fmt.Sprintf("risk %s above allowed %s", risk, p.MaxDeviceRisk)
			switch len(alerts) {
			case 0:
			case 1:
				r.Reason += ", from alert " + alerts[0]
			default:
				r.Reason += ", from alerts " + strings.Join(alerts, ", ")
			}
		case !riskKnown:
			r.Reason = fmt.Sprintf("no risk reported for the device (counts as NONE), at or under allowed %s", p.MaxDeviceRisk)
		default:
			r.Reason = fmt.Sprintf("risk %s at or under allowed %s", risk, p.MaxDeviceRisk)
		}
		out = append(out, r)
	}
	if p.MinOSVersion != "" {
		r := SettingResult{Setting: "min_os_version", Expected: p.MinOSVersion + " or later", Actual: d.OSVersion}
		if d.OSVersion == "" {
			r.Reason = fmt.Sprintf("OS version unknown, minimum %s required", p.MinOSVersion)
		} else if c, err := CompareVersions(d.OSVersion, p.MinOSVersion); err != nil {
			r.Reason = fmt.Sprintf("OS version %q cannot be compared: %v", d.OSVersion, err)
		} else if c < 0 {
			r.Reason = fmt.Sprintf("OS version %s below minimum %s", d.OSVersion, p.MinOSVersion)
		} else {
			r.Compliant = true
			r.Reason = fmt.Sprintf("OS version %s at or above minimum %s", d.OSVersion, p.MinOSVersion)
		}
		out = append(out, r)
	}
	if len(p.Platforms) > 0 {
		names := make([]string, len(p.Platforms))
		for i, pl := range p.Platforms {
			names[i] = pl.String()
		}
		out = append(out, SettingResult{
			Setting: "platforms", Expected: strings.Join(names, ", "), Actual: d.Platform.String(), Compliant: true,
			Reason: fmt.Sprintf("platform %s in the policy's scope", d.Platform),
		})
	}
	return out
}

// SameOutcome reports whether two evaluations say the same thing (state and
// explanation), ignoring when they were made and their revision.
func SameOutcome(a, b *DeviceCompliance) bool {
	if a.DeviceID != b.DeviceID || a.State != b.State || a.Reason != b.Reason || a.Risk != b.Risk ||
		a.RiskRevision != b.RiskRevision || !a.NextEvaluateTime.Equal(b.NextEvaluateTime) ||
		!slices.Equal(a.RiskAlertIDs, b.RiskAlertIDs) || len(a.Policies) != len(b.Policies) {
		return false
	}
	if (a.Exclusion == nil) != (b.Exclusion == nil) {
		return false
	}
	if a.Exclusion != nil {
		x, y := a.Exclusion, b.Exclusion
		if x.ID != y.ID || x.Reason != y.Reason || x.CreatedBy != y.CreatedBy || !x.CreateTime.Equal(y.CreateTime) ||
			!x.ExpireTime.Equal(y.ExpireTime) || !x.EndTime.Equal(y.EndTime) || x.EndedBy != y.EndedBy || x.Comment != y.Comment {
			return false
		}
	}
	for i := range a.Policies {
		p, q := &a.Policies[i], &b.Policies[i]
		if p.PolicyID != q.PolicyID || p.DisplayName != q.DisplayName || p.State != q.State ||
			!p.FailingSince.Equal(q.FailingSince) || !p.GraceExpireTime.Equal(q.GraceExpireTime) ||
			!slices.Equal(p.Settings, q.Settings) {
			return false
		}
	}
	return true
}
