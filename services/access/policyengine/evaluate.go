package policyengine

import (
	"math/bits"
	"net/netip"
)

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
	ctlRegistered     = "REGISTERED_DEVICE"
	ctlLocation       = "LOCATION"
	descRegistered    = "a device registered to the user is required; the device is not the user's"
	descIPUnknown     = "the policy has a location condition and the client IP is unknown (fail closed)"
	// condIPUnknown is what excludedOrCond returns for a policy whose location
	// condition cannot be checked: the policy applies and blocks.
	condIPUnknown = "\x00client IP unknown"
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
	bits      []uint64 // the groups that count for inclusion
	xbits     []uint64 // the groups that count for exclusion (directory groups only)
	platBit   uint8
	clientBit uint8
	ok        Controls // the controls the request meets
	dev       uint8
	skip      bool // Request.OnlyApplied
	ipBlocked bool // for outcome: the policy's location condition cannot be checked
}

// Evaluate decides req and writes the outcome into res (reset first). dev is the device's
// state from the DeviceIndex, nil when unknown; feed is the compliance feed's health. It
// allocates nothing once res has grown to the sizes it needs (unless req.AllPolicies).
func (s *Snapshot) Evaluate(req *Request, dev *DeviceState, feed Feed, res *Result) {
	var v devView
	if dev != nil {
		v = devView{known: true, state: dev.State, risk: dev.Risk, platform: dev.Platform, revision: dev.Revision,
			registered: dev.RegisteredTo(req.UserID)}
	}
	if s.evaluate(req, &v, feed, res) {
		s.causes(&v, dev, res)
	}
}

// EvaluateIn is Evaluate with the device looked up in devs (req.DeviceID): what a
// decision does. It reads the device's slot (one cache line with the id and the hot
// fields of its state) and its full state only for the cause chain of a block; if the
// device changed between the two reads, it decides again from the full state, so a
// decision always reflects one state of the device.
func (s *Snapshot) EvaluateIn(req *Request, devs *DeviceIndex, feed Feed, res *Result) {
	sl := devs.lookup(req.DeviceID)
	var v devView
	var hot uint64
	if sl != nil {
		if hot = sl.hot.Load(); hot == 0 {
			s.Evaluate(req, &sl.node.Load().st, feed, res) // no hot word (revision too large)
			return
		}
		v = devView{known: true, state: ComplianceState(hot), risk: RiskLevel(hot >> 8), platform: Platform(hot >> 16),
			revision: int64(hot>>24) & hotRevMax}
		if s.needRegistered {
			n := sl.node.Load()
			if packHot(&n.st) != hot {
				s.Evaluate(req, &n.st, feed, res)
				return
			}
			v.registered = n.st.RegisteredTo(req.UserID)
		}
	}
	if !s.evaluate(req, &v, feed, res) {
		return
	}
	var dev *DeviceState
	if sl != nil && res.devOutcome == devNoncompliant {
		n := sl.node.Load()
		if packHot(&n.st) != hot {
			s.Evaluate(req, &n.st, feed, res)
			return
		}
		dev = &n.st
	}
	s.causes(&v, dev, res)
}

// devView is what a decision reads of the device's state.
type devView struct {
	known    bool
	state    ComplianceState
	risk     RiskLevel
	platform Platform
	revision int64
	// registered: the device belongs to the request's user (read only when a policy
	// requires REGISTERED_DEVICE).
	registered bool
}

// evaluate decides req into res, except for a block's cause chain: it reports whether
// the decision is a block by policy (causes to write; res.devOutcome says why the
// device failed COMPLIANT_DEVICE).
func (s *Snapshot) evaluate(req *Request, dev *devView, feed Feed, res *Result) (causes bool) {
	res.Reset()
	res.SnapshotVersion = s.version
	res.Device.Age = feed.Age
	res.Device.Stale = feed.Stale
	if dev.known {
		res.Device.Known = true
		res.Device.State = dev.state
		res.Device.Risk = dev.risk
		res.Device.Revision = dev.revision
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
		return false
	}
	if cu.disabled {
		res.Decision = DecisionBlock
		res.Reasons = append(res.Reasons, Reason{Code: CodeUserDisabled, Message: msgUserDisabled})
		return false
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

	ctx := evalCtx{user: u, bits: bits, xbits: bits, umask: 1 << (u & 63), gmask: cu.gmask, skip: req.OnlyApplied}
	if len(req.TokenGroups) > 0 {
		groups = s.addTokenGroups(req.TokenGroups, groups, &ctx, res)
	}
	if req.MFADone {
		ctx.ok = ctx.ok.With(ControlMFA)
	}
	plat := req.Platform
	if plat == PlatformUnspecified && dev.known {
		plat = dev.platform
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
	case !dev.known:
		ctx.dev = devUnknown
	case !dev.state.CountsAsCompliant():
		ctx.dev = devNoncompliant
	}
	if ctx.dev == devOK {
		ctx.ok = ctx.ok.With(ControlCompliantDevice)
	}
	if dev.known && dev.registered {
		ctx.ok = ctx.ok.With(ControlRegisteredDevice)
	}

	var blocked, applied bool
	if req.AllPolicies {
		for _, pi := range s.active {
			b, ap := s.evalTargeting(pi, a, &ctx, ip, res)
			blocked, applied = blocked || b, applied || ap
		}
	} else {
		blocked, applied = s.evalApp(a, groups, &ctx, ip, res)
	}

	for _, g := range groups {
		bits[g>>6] = 0
	}
	if len(req.TokenGroups) > 0 {
		clear(res.dirBits[:d.groupWords])
	}

	if blocked {
		res.Decision = DecisionBlock
		res.devOutcome = ctx.dev
		return true
	}
	res.Decision = DecisionAllow
	if !applied {
		res.Reasons = append(res.Reasons, Reason{Code: CodeAllowed, Message: msgAllowed})
		return false
	}
	if res.grantedByDevice && dev.known && dev.state == ComplianceExcluded && ctx.dev == devOK {
		res.Reasons = append(res.Reasons, Reason{Code: CodeDeviceExcluded, Message: msgDeviceExcluded})
	}
	for _, k := range res.granted {
		res.Reasons = append(res.Reasons, Reason{Code: CodeGrantedByPolicy, Message: msgGranted, PolicyID: res.Policies[k].PolicyID})
	}
	return false
}

// addTokenGroups adds the token's groups and their enclosing groups to the user's
// groups for inclusion (ctx.bits and the returned list, for the candidate index),
// and points ctx.xbits, which exclusions read, at a copy of the directory groups only.
func (s *Snapshot) addTokenGroups(names []string, groups []int32, ctx *evalCtx, res *Result) []int32 {
	d := s.dir
	if len(res.dirBits) < d.groupWords {
		res.dirBits = make([]uint64, d.groupWords)
	}
	copy(res.dirBits, ctx.bits[:d.groupWords])
	ctx.xbits = res.dirBits
	all := append(res.allGroups[:0], groups...)
	for _, n := range names {
		g, ok := d.groupIdx[n]
		if !ok {
			continue
		}
		anc := d.groupAnc[g]
		if anc == nil {
			anc = []int32{g}
		}
		for _, a := range anc {
			if ctx.bits[a>>6]&(1<<(a&63)) == 0 {
				ctx.bits[a>>6] |= 1 << (a & 63)
				all = append(all, a)
			}
		}
	}
	res.allGroups = all
	return all
}

// evalApp evaluates the policies targeting application a (the common path): the
// candidate index gives the positions of the policies that include the user (all users,
// directly, or through one of the user's groups); every other position keeps its
// NOT_APPLIED result from the application's template.
func (s *Snapshot) evalApp(a int32, groups []int32, ctx *evalCtx, ip netip.Addr, res *Result) (blocked, applied bool) {
	sp := s.appSpan[a]
	nw := int(sp.n+63) >> 6
	if len(res.candBits) < nw {
		res.candBits = make([]uint64, nw)
	}
	cand := res.candBits[:nw]
	for _, p := range s.always[a].of(s.pos) {
		cand[p>>6] |= 1 << (p & 63)
	}
	nAll := len(s.allPis)
	allPos := s.allPos[int(a)*nAll : int(a)*nAll+nAll]
	var ag []uint64
	if s.appGroups != nil {
		gw := len(s.appGroups) / len(s.appSpan)
		ag = s.appGroups[int(a)*gw : int(a)*gw+gw]
	}
	for _, g := range groups {
		if ag == nil || ag[g>>6]&(1<<(g&63)) != 0 {
			for _, p := range s.keys.get(keyAppGroup(a, g)).of(s.pos) {
				cand[p>>6] |= 1 << (p & 63)
			}
		}
		for _, j := range s.allByGroup[g].of(s.pos) {
			if p := allPos[j]; p >= 0 {
				cand[p>>6] |= 1 << (p & 63)
			}
		}
	}
	u := ctx.user
	if b := userBloomBit(u); s.appUsers[int(a)*8+int(b>>6)]&(1<<(b&63)) != 0 {
		for _, p := range s.keys.get(keyAppUser(a, u)).of(s.pos) {
			cand[p>>6] |= 1 << (p & 63)
		}
	}
	if s.allUsers[u>>6]&(1<<(u&63)) != 0 {
		for _, j := range s.keys.get(keyAllUser(u)).of(s.pos) {
			if p := allPos[j]; p >= 0 {
				cand[p>>6] |= 1 << (p & 63)
			}
		}
	}

	pis := s.appPis[sp.off : sp.off+sp.n]
	if !ctx.skip {
		n := int(sp.n)
		if cap(res.Policies) < n {
			res.Policies = make([]PolicyResult, n, n+n/4)
		}
		res.Policies = res.Policies[:n]
		if s.tmpl != nil {
			copy(res.Policies, s.tmpl[sp.off:sp.off+sp.n])
		} else {
			for p, v := range pis {
				if v >= 0 {
					res.Policies[p] = s.ptmpl[v]
				} else {
					res.Policies[p] = s.ptmpl[^v]
					res.Policies[p].NotApplied = NotAppliedAppExcluded
				}
			}
		}
	}
	for w := range cand {
		for m := cand[w]; m != 0; m &= m - 1 {
			p := w<<6 | bits.TrailingZeros64(m)
			pi := pis[p]
			r := &s.recs[pi]
			why := s.excludedOrCond(r, ctx, ip)
			if why != "" && why != condIPUnknown {
				if !ctx.skip {
					res.Policies[p].NotApplied = why
				}
				continue
			}
			ctx.ipBlocked = why == condIPUnknown
			var pr *PolicyResult
			if ctx.skip {
				p = len(res.Policies)
				pr = res.nextPolicy()
				pr.PolicyID = r.id
				pr.DisplayName = r.name
				pr.State = r.state
				pr.idx = pi
			} else {
				pr = &res.Policies[p]
			}
			pr.NotApplied = ""
			b, ap := s.outcome(r, pr, p, ctx, res)
			blocked, applied = blocked || b, applied || ap
		}
		cand[w] = 0
	}
	return blocked, applied
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
	r := &s.recs[pi]
	if notApplied == "" {
		if r.flags&fAllUsers == 0 && !s.userIncluded(r, ctx) {
			notApplied = NotAppliedUserNotIncluded
		} else {
			notApplied = s.excludedOrCond(r, ctx, ip)
		}
	}
	ctx.ipBlocked = notApplied == condIPUnknown
	if ctx.ipBlocked {
		notApplied = ""
	}
	pr := res.nextPolicy()
	pr.PolicyID = r.id
	pr.DisplayName = r.name
	pr.State = r.state
	pr.idx = pi
	pr.NotApplied = notApplied
	if notApplied != "" {
		pr.Kind = ResultNotApplied
		if r.state != StateEnabled {
			pr.Kind = ResultReportOnlyNotApplied
		}
		pr.Satisfied, pr.Unsatisfied = 0, 0
		if ctx.skip {
			res.Policies = res.Policies[:len(res.Policies)-1]
		}
		return false, false
	}
	return s.outcome(r, pr, len(res.Policies)-1, ctx, res)
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

// outcome evaluates the grant controls of an applying policy into pr (Kind, Satisfied,
// Unsatisfied; pr is Policies[k]) and, for an enabled policy, records a grant or appends
// the block reasons. It reports whether an enabled policy blocked and whether one applied.
func (s *Snapshot) outcome(r *hrec, pr *PolicyResult, k int, ctx *evalCtx, res *Result) (blocked, applied bool) {
	var sat, unsat Controls
	grant := false
	block := r.flags&fBlock != 0
	pr.ipUnknown = ctx.ipBlocked
	if ctx.ipBlocked {
		ctx.ipBlocked = false
		pr.Satisfied, pr.Unsatisfied = 0, 0
		if r.state != StateEnabled {
			pr.Kind = ResultReportOnlyWouldBlock
			return false, false
		}
		pr.Kind = ResultBlocked
		st := &s.strs[r.pi]
		res.Reasons = append(res.Reasons, Reason{Code: CodeClientIPUnknown, Message: st.msgIPUnknown, PolicyID: st.id})
		return true, true
	}
	if !block {
		sat, unsat = r.req&ctx.ok, r.req&^ctx.ok
		if r.flags&fOr != 0 {
			grant = sat != 0
		} else {
			grant = unsat == 0
		}
	}
	pr.Satisfied, pr.Unsatisfied = sat, unsat
	if r.state != StateEnabled {
		pr.Kind = ResultReportOnlyWouldBlock
		if grant {
			pr.Kind = ResultReportOnlyWouldGrant
		}
		return false, false
	}
	if grant {
		pr.Kind = ResultGranted
		if sat.Has(ControlCompliantDevice) {
			res.grantedByDevice = true
		}
		res.granted = append(res.granted, int32(k))
		return false, true
	}
	pr.Kind = ResultBlocked
	st := &s.strs[r.pi]
	if block {
		res.Reasons = append(res.Reasons, Reason{Code: CodeBlockedByPolicy, Message: st.msgBlock, PolicyID: st.id})
		return true, true
	}
	if unsat.Has(ControlCompliantDevice) {
		switch ctx.dev {
		case devStale:
			res.Reasons = append(res.Reasons, Reason{Code: CodeComplianceStateStale, Message: st.msgStale, PolicyID: st.id})
		case devUnknown:
			res.Reasons = append(res.Reasons, Reason{Code: CodeUnknownDevice, Message: st.msgUnknownDevice, PolicyID: st.id})
		default:
			res.Reasons = append(res.Reasons, Reason{Code: CodeCompliantDeviceRequired, Message: st.msgCompliant, PolicyID: st.id})
		}
	}
	if unsat.Has(ControlMFA) {
		res.Reasons = append(res.Reasons, Reason{Code: CodeMFARequired, Message: st.msgMFA, PolicyID: st.id})
	}
	if unsat.Has(ControlRegisteredDevice) {
		res.Reasons = append(res.Reasons, Reason{Code: CodeDeviceNotRegistered, Message: st.msgRegistered, PolicyID: st.id})
	}
	return true, true
}

// lists returns a policy's include users, include groups, exclude users and exclude groups.
func (s *Snapshot) lists(c *hrec) (iu, ig, eu, eg []int32) {
	if c.flags&fBig == 0 {
		n1 := c.nIU
		n2 := n1 + c.nIG
		cold := &s.cold[c.pi]
		n3 := n2 + cold.nEU
		n4 := n3 + cold.nEG
		return cold.ids[:n1], cold.ids[n1:n2], cold.ids[n2:n3], cold.ids[n3:n4]
	}
	p := &s.pols[c.pi]
	return p.inclUsers.of(s.arena), p.inclGroups.of(s.arena), p.exclUsers.of(s.arena), p.exclGroups.of(s.arena)
}

// userIncluded reports whether the user is included by a policy that does not target all
// users (exclusions aside). The common path knows this from the candidate index.
func (s *Snapshot) userIncluded(c *hrec, ctx *evalCtx) bool {
	iu, ig, _, _ := s.lists(c)
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

// excludedOrCond returns why a policy that includes the user does not apply (user
// exclusions, then the conditions), or "" when it applies.
func (s *Snapshot) excludedOrCond(c *hrec, ctx *evalCtx, ip netip.Addr) string {
	if c.egmask&ctx.gmask != 0 || c.eumask&ctx.umask != 0 {
		_, _, eu, eg := s.lists(c)
		for _, v := range eu {
			if v == ctx.user {
				return NotAppliedUserExcluded
			}
		}
		for k, g := range eg {
			if ctx.xbits[g>>6]&(1<<(g&63)) != 0 {
				return s.exclMsgs[s.pols[c.pi].exclGroups.off+uint32(k)]
			}
		}
	}
	if c.platInc != 0 && c.platInc&ctx.platBit == 0 {
		return NotAppliedPlatformNotIncl
	}
	if c.platExc&ctx.platBit != 0 {
		return NotAppliedPlatformExcluded
	}
	ipUnknown := false
	if c.ips >= 0 && !ip.IsValid() {
		// Fail closed: a location condition is never "not applied" for want of an IP.
		ipUnknown = true
	} else if c.ips >= 0 {
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
	if ipUnknown {
		return condIPUnknown
	}
	return ""
}

// causes writes the cause chain of a block (res.devOutcome set): v is the device's state
// the decision used, dev its full state (needed when the device is noncompliant).
func (s *Snapshot) causes(v *devView, dev *DeviceState, res *Result) {
	devOutcome := res.devOutcome
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
		if pr.ipUnknown {
			// Blocked for want of a client IP (see outcome).
			res.Causes = append(res.Causes, Cause{Kind: CauseControl, ID: ctlLocation, Description: descIPUnknown})
			continue
		}
		if s.pols[pr.idx].block {
			res.Causes = append(res.Causes, Cause{Kind: CauseControl, ID: ctlBlock, Description: descBlock})
			continue
		}
		if pr.Unsatisfied.Has(ControlCompliantDevice) {
			desc := descStale
			switch {
			case devOutcome == devUnknown:
				desc = descUnknownDevice
			case devOutcome == devNoncompliant && v.known && int(v.state) < len(compliantDescs):
				desc = compliantDescs[v.state]
			}
			res.Causes = append(res.Causes, Cause{Kind: CauseControl, ID: ctlCompliant, Description: desc})
		}
		if pr.Unsatisfied.Has(ControlMFA) {
			res.Causes = append(res.Causes, Cause{Kind: CauseControl, ID: ctlMFA, Description: descMFA})
		}
		if pr.Unsatisfied.Has(ControlRegisteredDevice) {
			res.Causes = append(res.Causes, Cause{Kind: CauseControl, ID: ctlRegistered, Description: descRegistered})
		}
	}
}
