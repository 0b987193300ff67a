package policyengine

import "net/netip"

// Static strings used by Evaluate (never built per decision).
const (
	msgAllowed        = "no enabled policy applies"
	msgUnknownUser    = "the user is not in the directory"
	msgUnknownApp     = "the application is not in the directory"
	msgUserDisabled   = "the user is disabled"
	msgGranted        = "the policy applies and its controls are satisfied"
	msgDeviceExcluded = "the device is excluded from compliance evaluation, so it counts as compliant"
	descAlert         = "active alert on the device"
	descBlock         = "the policy blocks access"
	descMFA           = "multi-factor authentication is required and was not done"
	descStale         = "a compliant device is required; the compliance feed is stale (fail closed)"
	descUnknownDevice = "a compliant device is required; the device is unknown to the compliance feed"
	ctlBlock          = "BLOCK"
	ctlCompliant      = "COMPLIANT_DEVICE"
	ctlMFA            = "MFA"
)

var riskIDs = [...]string{"RISK_LEVEL_UNSPECIFIED", "RISK_LEVEL_NONE", "RISK_LEVEL_LOW", "RISK_LEVEL_MEDIUM", "RISK_LEVEL_HIGH"}
var riskDescs = [...]string{"device risk level unknown", "device risk level NONE", "device risk level LOW", "device risk level MEDIUM", "device risk level HIGH"}
var compliantDescs = [...]string{
	"a compliant device is required; the device has no compliance state",
	"a compliant device is required; the device is compliant",
	"a compliant device is required; the device is NONCOMPLIANT",
	"a compliant device is required; the device is in its grace period",
	"a compliant device is required; the device is excluded",
	"a compliant device is required; the device is NOT_EVALUATED",
}

// device compliance outcome for COMPLIANT_DEVICE, computed once per decision.
const (
	devOK uint8 = iota
	devStale
	devUnknown
	devNoncompliant
)

// evalCtx is the per-decision input of the policy loop.
type evalCtx struct {
	gmask     uint64 // Bloom filter of the user's groups (bit g%64)
	umask     uint64 // bit user%64
	user      int32
	bits      []uint64
	platBit   uint8
	clientBit uint8
	mfa       bool
	dev       uint8
	skip      bool // Request.OnlyApplied
}

// Evaluate decides req and writes the outcome into res (reset first). dev is the device's
// state from the DeviceIndex, nil when unknown; feed is the compliance feed's health. It
// allocates nothing once res has grown to the sizes it needs (unless req.AllPolicies).
func (s *Snapshot) Evaluate(req *Request, dev *DeviceState, feed Feed, res *Result) {
	res.Reset()
	res.SnapshotVersion = s.version
	res.Device.Age = feed.Age
	res.Device.Stale = feed.Stale
	if dev != nil {
		res.Device.Known = true
		res.Device.State = dev.State
		res.Device.Risk = dev.Risk
		res.Device.Revision = dev.Revision
	}
	d := s.dir
	u, cu, uok := d.userTab.get(req.UserID)
	a, aok := d.appIdx[req.AppID]
	if !uok || !aok {
		res.Decision = DecisionBlock
		if !uok {
			res.Reasons = append(res.Reasons, Reason{Code: CodeUnknownUser, Message: msgUnknownUser})
		}
		if !aok {
			res.Reasons = append(res.Reasons, Reason{Code: CodeUnknownApplication, Message: msgUnknownApp})
		}
		return
	}
	if cu.disabled {
		res.Decision = DecisionBlock
		res.Reasons = append(res.Reasons, Reason{Code: CodeUserDisabled, Message: msgUserDisabled})
		return
	}

	// The user's transitive groups as a bitset in res's scratch space.
	if len(res.groupBits) < d.groupWords {
		res.groupBits = make([]uint64, d.groupWords)
	}
	bits := res.groupBits
	groups := d.groupList(cu)
	for _, g := range groups {
		bits[g>>6] |= 1 << (g & 63)
	}

	ctx := evalCtx{user: u, bits: bits, mfa: req.MFADone, umask: 1 << (u & 63), gmask: cu.gmask, skip: req.OnlyApplied}
	plat := req.Platform
	if plat == PlatformUnspecified && dev != nil {
		plat = dev.Platform
	}
	if plat < 8 {
		ctx.platBit = 1 << plat // bit 0 (unspecified) is never in a condition
	}
	ca := req.ClientApp
	if ca == ClientAppUnspecified || ca >= 8 {
		ca = ClientAppOther
	}
	ctx.clientBit = 1 << ca
	ip := req.IP.Unmap()
	switch {
	case feed.Stale:
		ctx.dev = devStale
	case dev == nil:
		ctx.dev = devUnknown
	case !dev.State.CountsAsCompliant():
		ctx.dev = devNoncompliant
	}

	var blocked, applied bool
	if req.AllPolicies {
		for _, pi := range s.active {
			b, ap := s.evalTargeting(pi, a, &ctx, ip, res)
			blocked, applied = blocked || b, applied || ap
		}
	} else {
		sp := s.appRecSpan[a]
		for _, r := range s.appRecs[sp.off : sp.off+sp.n] {
			if r.flags&(fAllUsers|fAppExcluded) == 0 &&
				((r.gmask&ctx.gmask == 0 && r.umask&ctx.umask == 0) || !s.userIncluded(r, &ctx)) {
				// Fast path for the common case: the user is not included.
				if !ctx.skip {
					res.addNotApplied(r, NotAppliedUserNotIncluded)
				}
				continue
			}
			notApplied := ""
			if r.flags&fAppExcluded != 0 {
				notApplied = NotAppliedAppExcluded
			}
			b, ap := s.evalPolicy(r, notApplied, &ctx, ip, res)
			blocked, applied = blocked || b, applied || ap
		}
	}

	for _, g := range groups {
		bits[g>>6] = 0
	}

	if blocked {
		res.Decision = DecisionBlock
		s.causes(dev, ctx.dev, res)
		return
	}
	res.Decision = DecisionAllow
	if !applied {
		res.Reasons = append(res.Reasons, Reason{Code: CodeAllowed, Message: msgAllowed})
		return
	}
	if res.grantedByDevice && dev != nil && dev.State == ComplianceExcluded && ctx.dev == devOK {
		res.Reasons = append(res.Reasons, Reason{Code: CodeDeviceExcluded, Message: msgDeviceExcluded})
	}
	for _, k := range res.granted {
		res.Reasons = append(res.Reasons, Reason{Code: CodeGrantedByPolicy, Message: msgGranted, PolicyID: res.Policies[k].PolicyID})
	}
}

// evalTargeting evaluates policy pi for application a, working out whether the policy
// targets the application (slow path for Request.AllPolicies).
func (s *Snapshot) evalTargeting(pi, a int32, ctx *evalCtx, ip netip.Addr, res *Result) (blocked, applied bool) {
	c := &s.pols[pi]
	notApplied := ""
	switch {
	case !c.allApps && !containsIdx(c.inclApps.of(s.arena), a):
		notApplied = NotAppliedAppNotTargeted
	case containsIdx(c.exclApps.of(s.arena), a):
		notApplied = NotAppliedAppExcluded
	}
	return s.evalPolicy(&s.recs[pi], notApplied, ctx, ip, res)
}

// addNotApplied appends a NOT_APPLIED (or REPORT_ONLY_NOT_APPLIED) result.
func (res *Result) addNotApplied(r *hrec, why string) {
	k := ResultNotApplied
	if r.state != StateEnabled {
		k = ResultReportOnlyNotApplied
	}
	// Field by field into the slot: building the struct on the stack and copying it makes
	// the compiler mix narrow stores with wide loads (failed store forwarding).
	p := res.nextPolicy()
	p.PolicyID = r.id
	p.DisplayName = r.name
	p.NotApplied = why
	p.State = r.state
	p.Kind = k
	p.Satisfied = 0
	p.Unsatisfied = 0
	p.idx = r.pi
}

// nextPolicy extends Policies by one element and returns it (not cleared).
func (res *Result) nextPolicy() *PolicyResult {
	n := len(res.Policies)
	if n == cap(res.Policies) {
		res.Policies = append(res.Policies, PolicyResult{})
	} else {
		res.Policies = res.Policies[:n+1]
	}
	return &res.Policies[n]
}

func containsIdx(xs []int32, v int32) bool {
	for _, x := range xs {
		if x == v {
			return true
		}
	}
	return false
}

// evalPolicy evaluates one targeted policy (notApplied set when the application is not
// targeted or excluded), appends its PolicyResult, and for an enabled policy the block
// reasons. It reports whether an enabled policy blocked and whether one applied.
func (s *Snapshot) evalPolicy(c *hrec, notApplied string, ctx *evalCtx, ip netip.Addr, res *Result) (blocked, applied bool) {
	if notApplied == "" {
		notApplied = s.notApplied(c, ctx, ip)
	}
	pr := PolicyResult{PolicyID: c.id, DisplayName: c.name, State: c.state, idx: c.pi}
	enabled := c.state == StateEnabled
	if notApplied != "" {
		if ctx.skip {
			return false, false
		}
		pr.NotApplied = notApplied
		pr.Kind = ResultNotApplied
		if !enabled {
			pr.Kind = ResultReportOnlyNotApplied
		}
		res.Policies = append(res.Policies, pr)
		return false, false
	}
	grant := false
	block := c.flags&fBlock != 0
	if !block {
		if c.req.Has(ControlCompliantDevice) {
			if ctx.dev == devOK {
				pr.Satisfied = pr.Satisfied.With(ControlCompliantDevice)
			} else {
				pr.Unsatisfied = pr.Unsatisfied.With(ControlCompliantDevice)
			}
		}
		if c.req.Has(ControlMFA) {
			if ctx.mfa {
				pr.Satisfied = pr.Satisfied.With(ControlMFA)
			} else {
				pr.Unsatisfied = pr.Unsatisfied.With(ControlMFA)
			}
		}
		if c.flags&fOr != 0 {
			grant = pr.Satisfied != 0
		} else {
			grant = pr.Unsatisfied == 0
		}
	}
	if !enabled {
		pr.Kind = ResultReportOnlyWouldBlock
		if grant {
			pr.Kind = ResultReportOnlyWouldGrant
		}
		res.Policies = append(res.Policies, pr)
		return false, false
	}
	if grant {
		pr.Kind = ResultGranted
		if pr.Satisfied.Has(ControlCompliantDevice) {
			res.grantedByDevice = true
		}
		res.granted = append(res.granted, int32(len(res.Policies)))
		res.Policies = append(res.Policies, pr)
		return false, true
	}
	pr.Kind = ResultBlocked
	res.Policies = append(res.Policies, pr)
	st := &s.strs[c.pi]
	if block {
		res.Reasons = append(res.Reasons, Reason{Code: CodeBlockedByPolicy, Message: st.msgBlock, PolicyID: st.id})
		return true, true
	}
	if pr.Unsatisfied.Has(ControlCompliantDevice) {
		switch ctx.dev {
		case devStale:
			res.Reasons = append(res.Reasons, Reason{Code: CodeComplianceStateStale, Message: st.msgStale, PolicyID: st.id})
		case devUnknown:
			res.Reasons = append(res.Reasons, Reason{Code: CodeUnknownDevice, Message: st.msgUnknownDevice, PolicyID: st.id})
		default:
			res.Reasons = append(res.Reasons, Reason{Code: CodeCompliantDeviceRequired, Message: st.msgCompliant, PolicyID: st.id})
		}
	}
	if pr.Unsatisfied.Has(ControlMFA) {
		res.Reasons = append(res.Reasons, Reason{Code: CodeMFARequired, Message: st.msgMFA, PolicyID: st.id})
	}
	return true, true
}

// userIncluded reports whether the user is included by a policy that does not target all
// users (exclusions aside).
func (s *Snapshot) userIncluded(c *hrec, ctx *evalCtx) bool {
	var iu, ig []int32
	if c.flags&fBig == 0 {
		n1 := int(c.nIU)
		ids := s.cold[c.pi].ids[:n1+int(c.nIG)]
		iu, ig = ids[:n1], ids[n1:]
	} else {
		p := &s.pols[c.pi]
		iu, ig = p.inclUsers.of(s.arena), p.inclGroups.of(s.arena)
	}
	for _, v := range iu {
		if v == ctx.user {
			return true
		}
	}
	bits := ctx.bits
	for _, g := range ig {
		if bits[g>>6]&(1<<(g&63)) != 0 {
			return true
		}
	}
	return false
}

// notApplied returns why a targeted policy does not apply, or "" when it applies.
func (s *Snapshot) notApplied(c *hrec, ctx *evalCtx, ip netip.Addr) string {
	if c.gmask&ctx.gmask == 0 && c.umask&ctx.umask == 0 && c.flags&fAllUsers == 0 {
		return NotAppliedUserNotIncluded // the common case, decided from the first cache line
	}
	var iu, ig, eu, eg []int32
	if c.flags&fBig == 0 {
		n1 := c.nIU
		n2 := n1 + c.nIG
		cold := &s.cold[c.pi]
		n3 := n2 + cold.nEU
		n4 := n3 + cold.nEG
		iu, ig, eu, eg = cold.ids[:n1], cold.ids[n1:n2], cold.ids[n2:n3], cold.ids[n3:n4]
	} else {
		p := &s.pols[c.pi]
		iu, ig, eu, eg = p.inclUsers.of(s.arena), p.inclGroups.of(s.arena), p.exclUsers.of(s.arena), p.exclGroups.of(s.arena)
	}
	included := c.flags&fAllUsers != 0
	if !included {
		for _, v := range iu {
			if v == ctx.user {
				included = true
				break
			}
		}
	}
	if !included {
		for _, g := range ig {
			if ctx.bits[g>>6]&(1<<(g&63)) != 0 {
				included = true
				break
			}
		}
	}
	if !included {
		return NotAppliedUserNotIncluded
	}
	for _, v := range eu {
		if v == ctx.user {
			return NotAppliedUserExcluded
		}
	}
	for k, g := range eg {
		if ctx.bits[g>>6]&(1<<(g&63)) != 0 {
			return s.exclMsgs[s.pols[c.pi].exclGroups.off+uint32(k)]
		}
	}
	if c.platInc != 0 && c.platInc&ctx.platBit == 0 {
		return NotAppliedPlatformNotIncl
	}
	if c.platExc&ctx.platBit != 0 {
		return NotAppliedPlatformExcluded
	}
	if c.ips >= 0 {
		cond := &s.ipConds[c.ips]
		if len(cond.include) > 0 {
			in := false
			if ip.IsValid() {
				for _, p := range cond.include {
					if p.Contains(ip) {
						in = true
						break
					}
				}
			}
			if !in {
				return NotAppliedLocationNotIncl
			}
		}
		if ip.IsValid() {
			for _, p := range cond.exclude {
				if p.Contains(ip) {
					return NotAppliedLocationExcluded
				}
			}
		}
	}
	if c.clientInc != 0 && c.clientInc&ctx.clientBit == 0 {
		return NotAppliedClientAppNotIncl
	}
	return ""
}

// causes writes the cause chain of a block.
func (s *Snapshot) causes(dev *DeviceState, devOutcome uint8, res *Result) {
	if devOutcome == devNoncompliant && dev != nil {
		needed := false
		for k := range res.Policies {
			pr := &res.Policies[k]
			if pr.Kind == ResultBlocked && pr.Unsatisfied.Has(ControlCompliantDevice) {
				needed = true
				break
			}
		}
		if needed {
			for _, id := range dev.AlertIDs {
				res.Causes = append(res.Causes, Cause{Kind: CauseAlert, ID: id, Description: descAlert})
			}
			if dev.Risk != RiskUnspecified && int(dev.Risk) < len(riskIDs) {
				res.Causes = append(res.Causes, Cause{Kind: CauseRiskLevel, ID: riskIDs[dev.Risk], Description: riskDescs[dev.Risk]})
			}
			if dev.Setting != "" || dev.Reason != "" {
				res.Causes = append(res.Causes, Cause{Kind: CauseComplianceSetting, ID: dev.Setting, Description: dev.Reason})
			}
		}
	}
	for k := range res.Policies {
		pr := &res.Policies[k]
		if pr.Kind != ResultBlocked {
			continue
		}
		res.Causes = append(res.Causes, Cause{Kind: CausePolicy, ID: pr.PolicyID, Description: s.strs[pr.idx].label})
		if s.pols[pr.idx].block {
			res.Causes = append(res.Causes, Cause{Kind: CauseControl, ID: ctlBlock, Description: descBlock})
			continue
		}
		if pr.Unsatisfied.Has(ControlCompliantDevice) {
			desc := descStale
			switch {
			case devOutcome == devUnknown:
				desc = descUnknownDevice
			case devOutcome == devNoncompliant && dev != nil && int(dev.State) < len(compliantDescs):
				desc = compliantDescs[dev.State]
			}
			res.Causes = append(res.Causes, Cause{Kind: CauseControl, ID: ctlCompliant, Description: desc})
		}
		if pr.Unsatisfied.Has(ControlMFA) {
			res.Causes = append(res.Causes, Cause{Kind: CauseControl, ID: ctlMFA, Description: descMFA})
		}
	}
}
