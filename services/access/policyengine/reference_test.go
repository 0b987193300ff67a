package policyengine_test

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	pe "github.com/condaccess/condaccess/services/access/policyengine"
)

// reference is a deliberately naive evaluator written from the rules in the package doc:
// strings and maps everywhere, recursion for nested groups, no precomputation. The
// optimized engine must agree with it on every request.
type reference struct {
	users    map[string]pe.User
	groups   map[string]pe.Group
	apps     map[string]bool
	policies []pe.Policy
}

func newReference(dir *pe.Directory, policies []pe.Policy) *reference {
	r := &reference{users: map[string]pe.User{}, groups: map[string]pe.Group{}, apps: map[string]bool{}}
	for _, u := range dir.Users {
		r.users[u.ID] = u
	}
	for _, g := range dir.Groups {
		r.groups[g.ID] = g
	}
	for _, a := range dir.Applications {
		r.apps[a.ID] = true
	}
	r.policies = slices.Clone(policies)
	slices.SortFunc(r.policies, func(a, b pe.Policy) int { return cmp.Compare(a.ID, b.ID) })
	return r
}

// inGroup reports whether user is in group g directly or through nested groups.
func (r *reference) inGroup(user, g string, seen map[string]bool) bool {
	grp, ok := r.groups[g]
	if !ok || seen[g] {
		return false
	}
	seen[g] = true
	if slices.Contains(grp.MemberUsers, user) {
		return true
	}
	for _, m := range grp.MemberGroups {
		if r.inGroup(user, m, seen) {
			return true
		}
	}
	return false
}

// outcome is the comparable part of a Result.
type outcome struct {
	Decision pe.Decision
	Reasons  []string // code/policy
	Policies []string // id state kind notApplied sat unsat
	Causes   []string // kind/id
}

func summarize(res *pe.Result) outcome {
	o := outcome{Decision: res.Decision}
	for _, r := range res.Reasons {
		o.Reasons = append(o.Reasons, r.Code+"/"+r.PolicyID)
	}
	for _, p := range res.Policies {
		o.Policies = append(o.Policies, policyLine(p.PolicyID, p.State, p.Kind, p.NotApplied, p.Satisfied, p.Unsatisfied))
	}
	for _, c := range res.Causes {
		o.Causes = append(o.Causes, fmt.Sprintf("%d/%s", c.Kind, c.ID))
	}
	return o
}

var kindNames = map[pe.ResultKind]string{
	pe.ResultGranted: "GRANTED", pe.ResultBlocked: "BLOCKED", pe.ResultNotApplied: "NOT_APPLIED",
	pe.ResultReportOnlyWouldBlock: "WOULD_BLOCK", pe.ResultReportOnlyWouldGrant: "WOULD_GRANT",
	pe.ResultReportOnlyNotApplied: "RO_NOT_APPLIED",
}

func controlsString(cs pe.Controls) string {
	var parts []string
	if cs.Has(pe.ControlCompliantDevice) {
		parts = append(parts, "CD")
	}
	if cs.Has(pe.ControlMFA) {
		parts = append(parts, "MFA")
	}
	if cs.Has(pe.ControlRegisteredDevice) {
		parts = append(parts, "RD")
	}
	return strings.Join(parts, "+")
}

func policyLine(id string, st pe.State, k pe.ResultKind, na string, sat, unsat pe.Controls) string {
	line := id + " " + kindNames[k]
	if na != "" {
		line += " (" + na + ")"
	}
	if sat != 0 {
		line += " sat=" + controlsString(sat)
	}
	if unsat != 0 {
		line += " unsat=" + controlsString(unsat)
	}
	_ = st
	return line
}

func (r *reference) evaluate(req *pe.Request, dev *pe.DeviceState, feed pe.Feed) outcome {
	var o outcome
	user, uok := r.users[req.UserID]
	aok := r.apps[req.AppID]
	if !uok || !aok {
		o.Decision = pe.DecisionBlock
		if !uok {
			o.Reasons = append(o.Reasons, pe.CodeUnknownUser+"/")
		}
		if !aok {
			o.Reasons = append(o.Reasons, pe.CodeUnknownApplication+"/")
		}
		return o
	}
	if user.Disabled {
		return outcome{Decision: pe.DecisionBlock, Reasons: []string{pe.CodeUserDisabled + "/"}}
	}
	platform := req.Platform
	if platform == 0 && dev != nil {
		platform = dev.Platform
	}
	clientApp := req.ClientApp
	if clientApp == 0 {
		clientApp = pe.ClientAppOther
	}
	ip := req.IP.Unmap()
	compliant := !feed.Stale && dev != nil && (dev.State == pe.ComplianceCompliant || dev.State == pe.ComplianceInGracePeriod || dev.State == pe.ComplianceExcluded)
	deviceCode := pe.CodeCompliantDeviceRequired
	switch {
	case feed.Stale:
		deviceCode = pe.CodeComplianceStateStale
	case dev == nil:
		deviceCode = pe.CodeUnknownDevice
	}

	type applied struct {
		p          pe.Policy
		grant      bool
		sat, unsat pe.Controls
		ipUnknown  bool
	}
	var enabledApplied []applied
	for _, p := range r.policies {
		if p.State == pe.StateDisabled {
			continue
		}
		na := ""
		switch {
		case !p.Apps.All && !slices.Contains(p.Apps.Include, req.AppID):
			na = pe.NotAppliedAppNotTargeted
		case slices.Contains(p.Apps.Exclude, req.AppID):
			na = pe.NotAppliedAppExcluded
		}
		if na == "" {
			included := p.Users.All || slices.Contains(p.Users.IncludeUsers, req.UserID)
			for _, g := range p.Users.IncludeGroups {
				if r.inGroup(req.UserID, g, map[string]bool{}) {
					included = true
				}
			}
			if !included {
				na = pe.NotAppliedUserNotIncluded
			} else if slices.Contains(p.Users.ExcludeUsers, req.UserID) {
				na = pe.NotAppliedUserExcluded
			} else {
				for _, g := range p.Users.ExcludeGroups {
					if r.inGroup(req.UserID, g, map[string]bool{}) {
						na = "user excluded by group " + g
						break
					}
				}
			}
		}
		if na == "" {
			switch {
			case len(p.Platforms.Include) > 0 && !slices.Contains(p.Platforms.Include, platform):
				na = pe.NotAppliedPlatformNotIncl
			case slices.Contains(p.Platforms.Exclude, platform):
				na = pe.NotAppliedPlatformExcluded
			}
		}
		ipUnknown := false
		if na == "" && (len(p.IncludeIPs) > 0 || len(p.ExcludeIPs) > 0) && !ip.IsValid() {
			ipUnknown = true
		} else if na == "" && len(p.IncludeIPs) > 0 {
			in := false
			for _, pr := range p.IncludeIPs {
				if ip.IsValid() && pr.Contains(ip) {
					in = true
				}
			}
			if !in {
				na = pe.NotAppliedLocationNotIncl
			}
		}
		if na == "" && !ipUnknown {
			for _, pr := range p.ExcludeIPs {
				if ip.IsValid() && pr.Contains(ip) {
					na = pe.NotAppliedLocationExcluded
				}
			}
		}
		if na == "" && len(p.ClientApps) > 0 && !slices.Contains(p.ClientApps, clientApp) {
			na = pe.NotAppliedClientAppNotIncl
		}
		if na != "" {
			if (na == pe.NotAppliedAppNotTargeted && !req.AllPolicies) || req.OnlyApplied {
				continue
			}
			k := pe.ResultNotApplied
			if p.State == pe.StateReportOnly {
				k = pe.ResultReportOnlyNotApplied
			}
			o.Policies = append(o.Policies, policyLine(p.ID, p.State, k, na, 0, 0))
			continue
		}
		var sat, unsat pe.Controls
		grant := false
		registered := dev != nil && dev.RegisteredTo(req.UserID)
		if !p.Block && !ipUnknown {
			for _, c := range p.Require {
				ok := (c == pe.ControlMFA && req.MFADone) || (c == pe.ControlCompliantDevice && compliant) ||
					(c == pe.ControlRegisteredDevice && registered)
				if ok {
					sat = sat.With(c)
				} else {
					unsat = unsat.With(c)
				}
			}
			if p.Operator == pe.OperatorOR {
				grant = sat != 0
			} else {
				grant = unsat == 0
			}
		}
		var k pe.ResultKind
		switch {
		case p.State == pe.StateReportOnly && grant:
			k = pe.ResultReportOnlyWouldGrant
		case p.State == pe.StateReportOnly:
			k = pe.ResultReportOnlyWouldBlock
		case grant:
			k = pe.ResultGranted
		default:
			k = pe.ResultBlocked
		}
		o.Policies = append(o.Policies, policyLine(p.ID, p.State, k, "", sat, unsat))
		if p.State == pe.StateEnabled {
			enabledApplied = append(enabledApplied, applied{p: p, grant: grant, sat: sat, unsat: unsat, ipUnknown: ipUnknown})
		}
	}

	blocked := false
	for _, a := range enabledApplied {
		if !a.grant {
			blocked = true
		}
	}
	if !blocked {
		o.Decision = pe.DecisionAllow
		if len(enabledApplied) == 0 {
			o.Reasons = []string{pe.CodeAllowed + "/"}
			return o
		}
		for _, a := range enabledApplied {
			if dev != nil && dev.State == pe.ComplianceExcluded && !feed.Stale && a.sat.Has(pe.ControlCompliantDevice) {
				o.Reasons = []string{pe.CodeDeviceExcluded + "/"}
				break
			}
		}
		for _, a := range enabledApplied {
			o.Reasons = append(o.Reasons, pe.CodeGrantedByPolicy+"/"+a.p.ID)
		}
		return o
	}
	o.Decision = pe.DecisionBlock
	deviceChain := false
	for _, a := range enabledApplied {
		if a.grant {
			continue
		}
		if a.ipUnknown {
			o.Reasons = append(o.Reasons, pe.CodeClientIPUnknown+"/"+a.p.ID)
			continue
		}
		if a.p.Block {
			o.Reasons = append(o.Reasons, pe.CodeBlockedByPolicy+"/"+a.p.ID)
			continue
		}
		if a.unsat.Has(pe.ControlCompliantDevice) {
			o.Reasons = append(o.Reasons, deviceCode+"/"+a.p.ID)
			if deviceCode == pe.CodeCompliantDeviceRequired {
				deviceChain = true
			}
		}
		if a.unsat.Has(pe.ControlMFA) {
			o.Reasons = append(o.Reasons, pe.CodeMFARequired+"/"+a.p.ID)
		}
		if a.unsat.Has(pe.ControlRegisteredDevice) {
			o.Reasons = append(o.Reasons, pe.CodeDeviceNotRegistered+"/"+a.p.ID)
		}
	}
	if deviceChain {
		for _, id := range dev.AlertIDs {
			o.Causes = append(o.Causes, fmt.Sprintf("%d/%s", pe.CauseAlert, id))
		}
		if dev.Risk != pe.RiskUnspecified {
			o.Causes = append(o.Causes, fmt.Sprintf("%d/RISK_LEVEL_%s", pe.CauseRiskLevel, riskName[dev.Risk]))
		}
		if dev.Setting != "" || dev.Reason != "" {
			o.Causes = append(o.Causes, fmt.Sprintf("%d/%s", pe.CauseComplianceSetting, dev.Setting))
		}
	}
	for _, a := range enabledApplied {
		if a.grant {
			continue
		}
		o.Causes = append(o.Causes, fmt.Sprintf("%d/%s", pe.CausePolicy, a.p.ID))
		if a.ipUnknown {
			o.Causes = append(o.Causes, fmt.Sprintf("%d/LOCATION", pe.CauseControl))
			continue
		}
		if a.p.Block {
			o.Causes = append(o.Causes, fmt.Sprintf("%d/BLOCK", pe.CauseControl))
			continue
		}
		if a.unsat.Has(pe.ControlCompliantDevice) {
			o.Causes = append(o.Causes, fmt.Sprintf("%d/COMPLIANT_DEVICE", pe.CauseControl))
		}
		if a.unsat.Has(pe.ControlMFA) {
			o.Causes = append(o.Causes, fmt.Sprintf("%d/MFA", pe.CauseControl))
		}
		if a.unsat.Has(pe.ControlRegisteredDevice) {
			o.Causes = append(o.Causes, fmt.Sprintf("%d/REGISTERED_DEVICE", pe.CauseControl))
		}
	}
	return o
}

var riskName = map[pe.RiskLevel]string{pe.RiskNone: "NONE", pe.RiskLow: "LOW", pe.RiskMedium: "MEDIUM", pe.RiskHigh: "HIGH"}
