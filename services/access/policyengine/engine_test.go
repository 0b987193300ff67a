package policyengine_test

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	pe "github.com/condaccess/condaccess/services/access/policyengine"
)

// testDir: g-all ⊃ {g-eng ⊃ {g-contractors}, g-sales}.
func testDir() *pe.Directory {
	return &pe.Directory{
		Users: []pe.User{
			{ID: "alice"}, {ID: "bob"}, {ID: "carol", Disabled: true}, {ID: "dave", EmergencyAccess: true}, {ID: "erin"},
		},
		Groups: []pe.Group{
			{ID: "g-all", MemberGroups: []string{"g-eng", "g-sales"}},
			{ID: "g-eng", MemberUsers: []string{"bob"}, MemberGroups: []string{"g-contractors"}},
			{ID: "g-sales", MemberUsers: []string{"alice"}},
			{ID: "g-contractors", MemberUsers: []string{"erin"}},
			{ID: "g-admins", MemberUsers: []string{"dave"}},
		},
		Applications: []pe.Application{{ID: "payroll"}, {ID: "wiki"}, {ID: "mail"}},
	}
}

var (
	compliant    = &pe.DeviceState{State: pe.ComplianceCompliant, Risk: pe.RiskNone, Platform: pe.PlatformWindows, Revision: 7}
	noncompliant = &pe.DeviceState{
		State: pe.ComplianceNoncompliant, Risk: pe.RiskHigh, Platform: pe.PlatformWindows, Revision: 9,
		AlertIDs: []string{"a-1", "a-2"}, Setting: "max-medium/maxDeviceRisk", Reason: "device risk HIGH is above MEDIUM",
	}
	inGrace  = &pe.DeviceState{State: pe.ComplianceInGracePeriod, Platform: pe.PlatformMacOS}
	excluded = &pe.DeviceState{State: pe.ComplianceExcluded, Risk: pe.RiskHigh, Platform: pe.PlatformWindows}
	notEval  = &pe.DeviceState{State: pe.ComplianceNotEvaluated}
)

// pol builds an enabled policy for all users on payroll requiring a compliant device;
// options adjust it.
func pol(id string, opts ...func(*pe.Policy)) pe.Policy {
	p := pe.Policy{
		ID: id, DisplayName: "Policy " + id, State: pe.StateEnabled,
		Users: pe.UserAssignment{All: true}, Apps: pe.AppAssignment{Include: []string{"payroll"}},
		Require: []pe.Control{pe.ControlCompliantDevice},
	}
	for _, o := range opts {
		o(&p)
	}
	return p
}

func block(p *pe.Policy)      { p.Block, p.Require = true, nil }
func mfa(p *pe.Policy)        { p.Require = []pe.Control{pe.ControlMFA} }
func reportOnly(p *pe.Policy) { p.State = pe.StateReportOnly }
func disabled(p *pe.Policy)   { p.State = pe.StateDisabled }
func both(op pe.Operator) func(*pe.Policy) {
	return func(p *pe.Policy) { p.Require, p.Operator = []pe.Control{pe.ControlCompliantDevice, pe.ControlMFA}, op }
}
func users(u pe.UserAssignment) func(*pe.Policy) { return func(p *pe.Policy) { p.Users = u } }
func apps(a pe.AppAssignment) func(*pe.Policy)   { return func(p *pe.Policy) { p.Apps = a } }
func platforms(inc, exc []pe.Platform) func(*pe.Policy) {
	return func(p *pe.Policy) { p.Platforms = pe.PlatformCondition{Include: inc, Exclude: exc} }
}
func ips(inc, exc []string) func(*pe.Policy) {
	return func(p *pe.Policy) {
		for _, s := range inc {
			p.IncludeIPs = append(p.IncludeIPs, netip.MustParsePrefix(s))
		}
		for _, s := range exc {
			p.ExcludeIPs = append(p.ExcludeIPs, netip.MustParsePrefix(s))
		}
	}
}
func registeredAnd(p *pe.Policy) {
	p.Require = []pe.Control{pe.ControlCompliantDevice, pe.ControlRegisteredDevice}
}
func ownedBy(owner string, users ...string) *pe.DeviceState {
	return &pe.DeviceState{State: pe.ComplianceCompliant, Risk: pe.RiskNone, Platform: pe.PlatformWindows, Revision: 7, Owner: owner, RegisteredUsers: users}
}
func clientApps(c ...pe.ClientApp) func(*pe.Policy) { return func(p *pe.Policy) { p.ClientApps = c } }

func TestEvaluate(t *testing.T) {
	req := func(user, app string, opts ...func(*pe.Request)) *pe.Request {
		r := &pe.Request{UserID: user, DeviceID: "dev-1", AppID: app}
		for _, o := range opts {
			o(r)
		}
		return r
	}
	withMFA := func(r *pe.Request) { r.MFADone = true }
	fromIP := func(s string) func(*pe.Request) { return func(r *pe.Request) { r.IP = netip.MustParseAddr(s) } }
	onPlatform := func(p pe.Platform) func(*pe.Request) { return func(r *pe.Request) { r.Platform = p } }
	client := func(c pe.ClientApp) func(*pe.Request) { return func(r *pe.Request) { r.ClientApp = c } }
	all := func(r *pe.Request) { r.AllPolicies = true }

	for _, tt := range []struct {
		name     string
		policies []pe.Policy
		req      *pe.Request
		dev      *pe.DeviceState
		stale    bool
		want     outcome
	}{
		{
			name: "no policy allows",
			req:  req("alice", "payroll"), dev: compliant,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"ALLOWED/"}},
		},
		{
			name:     "compliant device grants",
			policies: []pe.Policy{pol("p1")},
			req:      req("alice", "payroll"), dev: compliant,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"GRANTED_BY_POLICY/p1"}, Policies: []string{"p1 GRANTED sat=CD"}},
		},
		{
			name:     "noncompliant device blocks with the cause chain",
			policies: []pe.Policy{pol("p1")},
			req:      req("alice", "payroll"), dev: noncompliant,
			want: outcome{
				Decision: pe.DecisionBlock, Reasons: []string{"COMPLIANT_DEVICE_REQUIRED/p1"}, Policies: []string{"p1 BLOCKED unsat=CD"},
				Causes: []string{"1/a-1", "1/a-2", "2/RISK_LEVEL_HIGH", "3/max-medium/maxDeviceRisk", "4/p1", "5/COMPLIANT_DEVICE"},
			},
		},
		{
			name:     "in grace period counts as compliant",
			policies: []pe.Policy{pol("p1")},
			req:      req("alice", "payroll"), dev: inGrace,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"GRANTED_BY_POLICY/p1"}, Policies: []string{"p1 GRANTED sat=CD"}},
		},
		{
			name:     "excluded device is allowed and the reason says so first",
			policies: []pe.Policy{pol("p1")},
			req:      req("alice", "payroll"), dev: excluded,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"DEVICE_EXCLUDED/", "GRANTED_BY_POLICY/p1"}, Policies: []string{"p1 GRANTED sat=CD"}},
		},
		{
			name:     "not evaluated does not count as compliant",
			policies: []pe.Policy{pol("p1")},
			req:      req("alice", "payroll"), dev: notEval,
			want: outcome{Decision: pe.DecisionBlock, Reasons: []string{"COMPLIANT_DEVICE_REQUIRED/p1"}, Policies: []string{"p1 BLOCKED unsat=CD"},
				Causes: []string{"4/p1", "5/COMPLIANT_DEVICE"}},
		},
		{
			name:     "stale feed fails closed even for a compliant device",
			policies: []pe.Policy{pol("p1")},
			req:      req("alice", "payroll"), dev: compliant, stale: true,
			want: outcome{Decision: pe.DecisionBlock, Reasons: []string{"COMPLIANCE_STATE_STALE/p1"}, Policies: []string{"p1 BLOCKED unsat=CD"},
				Causes: []string{"4/p1", "5/COMPLIANT_DEVICE"}},
		},
		{
			name:     "stale feed does not matter to an MFA policy",
			policies: []pe.Policy{pol("p1", mfa)},
			req:      req("alice", "payroll", withMFA), dev: compliant, stale: true,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"GRANTED_BY_POLICY/p1"}, Policies: []string{"p1 GRANTED sat=MFA"}},
		},
		{
			name:     "unknown device does not satisfy a compliant device",
			policies: []pe.Policy{pol("p1")},
			req:      req("alice", "payroll"), dev: nil,
			want: outcome{Decision: pe.DecisionBlock, Reasons: []string{"UNKNOWN_DEVICE/p1"}, Policies: []string{"p1 BLOCKED unsat=CD"},
				Causes: []string{"4/p1", "5/COMPLIANT_DEVICE"}},
		},
		{
			name:     "unknown device is fine when no policy needs it",
			policies: []pe.Policy{pol("p1", mfa)},
			req:      req("alice", "payroll", withMFA), dev: nil,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"GRANTED_BY_POLICY/p1"}, Policies: []string{"p1 GRANTED sat=MFA"}},
		},
		{
			name:     "unknown user blocks",
			policies: []pe.Policy{pol("p1")},
			req:      req("mallory", "payroll"), dev: compliant,
			want: outcome{Decision: pe.DecisionBlock, Reasons: []string{"UNKNOWN_USER/"}},
		},
		{
			name:     "unknown application blocks",
			policies: []pe.Policy{pol("p1")},
			req:      req("alice", "nope"), dev: compliant,
			want: outcome{Decision: pe.DecisionBlock, Reasons: []string{"UNKNOWN_APPLICATION/"}},
		},
		{
			name: "unknown user and application",
			req:  req("mallory", "nope"), dev: compliant,
			want: outcome{Decision: pe.DecisionBlock, Reasons: []string{"UNKNOWN_USER/", "UNKNOWN_APPLICATION/"}},
		},
		{
			name: "disabled user blocks even with no policy",
			req:  req("carol", "payroll"), dev: compliant,
			want: outcome{Decision: pe.DecisionBlock, Reasons: []string{"USER_DISABLED/"}},
		},
		{
			name:     "user exclusion beats user inclusion",
			policies: []pe.Policy{pol("p1", block, users(pe.UserAssignment{IncludeUsers: []string{"alice"}, ExcludeUsers: []string{"alice"}}))},
			req:      req("alice", "payroll"), dev: compliant,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"ALLOWED/"}, Policies: []string{"p1 NOT_APPLIED (user excluded)"}},
		},
		{
			name:     "group exclusion beats inclusion",
			policies: []pe.Policy{pol("p1", block, users(pe.UserAssignment{All: true, ExcludeGroups: []string{"g-sales"}}))},
			req:      req("alice", "payroll"), dev: compliant,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"ALLOWED/"}, Policies: []string{"p1 NOT_APPLIED (user excluded by group g-sales)"}},
		},
		{
			name:     "nested group inclusion (erin in g-contractors in g-eng in g-all)",
			policies: []pe.Policy{pol("p1", block, users(pe.UserAssignment{IncludeGroups: []string{"g-all"}}))},
			req:      req("erin", "payroll"), dev: compliant,
			want: outcome{Decision: pe.DecisionBlock, Reasons: []string{"BLOCKED_BY_POLICY/p1"}, Policies: []string{"p1 BLOCKED"},
				Causes: []string{"4/p1", "5/BLOCK"}},
		},
		{
			name:     "nested group exclusion beats nested inclusion",
			policies: []pe.Policy{pol("p1", block, users(pe.UserAssignment{IncludeGroups: []string{"g-all"}, ExcludeGroups: []string{"g-sales", "g-eng"}}))},
			req:      req("erin", "payroll"), dev: compliant,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"ALLOWED/"}, Policies: []string{"p1 NOT_APPLIED (user excluded by group g-eng)"}},
		},
		{
			name:     "a user outside the included groups is not included",
			policies: []pe.Policy{pol("p1", block, users(pe.UserAssignment{IncludeGroups: []string{"g-eng"}, IncludeUsers: []string{"bob"}}))},
			req:      req("alice", "payroll"), dev: compliant,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"ALLOWED/"}, Policies: []string{"p1 NOT_APPLIED (user not included)"}},
		},
		{
			name:     "references to unknown groups and users never match",
			policies: []pe.Policy{pol("p1", block, users(pe.UserAssignment{IncludeGroups: []string{"g-nope"}, IncludeUsers: []string{"nobody"}}))},
			req:      req("alice", "payroll"), dev: compliant,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"ALLOWED/"}, Policies: []string{"p1 NOT_APPLIED (user not included)"}},
		},
		{
			name:     "block beats grant",
			policies: []pe.Policy{pol("p1", mfa), pol("p2", block)},
			req:      req("alice", "payroll", withMFA), dev: compliant,
			want: outcome{Decision: pe.DecisionBlock, Reasons: []string{"BLOCKED_BY_POLICY/p2"}, Policies: []string{"p1 GRANTED sat=MFA", "p2 BLOCKED"},
				Causes: []string{"4/p2", "5/BLOCK"}},
		},
		{
			name:     "every applying enabled policy must be satisfied",
			policies: []pe.Policy{pol("p1"), pol("p2", mfa)},
			req:      req("alice", "payroll"), dev: noncompliant,
			want: outcome{Decision: pe.DecisionBlock, Reasons: []string{"COMPLIANT_DEVICE_REQUIRED/p1", "MFA_REQUIRED/p2"},
				Policies: []string{"p1 BLOCKED unsat=CD", "p2 BLOCKED unsat=MFA"},
				Causes:   []string{"1/a-1", "1/a-2", "2/RISK_LEVEL_HIGH", "3/max-medium/maxDeviceRisk", "4/p1", "5/COMPLIANT_DEVICE", "4/p2", "5/MFA"}},
		},
		{
			name:     "AND needs both controls",
			policies: []pe.Policy{pol("p1", both(pe.OperatorAND))},
			req:      req("alice", "payroll"), dev: compliant,
			want: outcome{Decision: pe.DecisionBlock, Reasons: []string{"MFA_REQUIRED/p1"}, Policies: []string{"p1 BLOCKED sat=CD unsat=MFA"},
				Causes: []string{"4/p1", "5/MFA"}},
		},
		{
			name:     "unspecified operator means AND",
			policies: []pe.Policy{pol("p1", both(pe.OperatorUnspecified))},
			req:      req("alice", "payroll", withMFA), dev: noncompliant,
			want: outcome{Decision: pe.DecisionBlock, Reasons: []string{"COMPLIANT_DEVICE_REQUIRED/p1"}, Policies: []string{"p1 BLOCKED sat=MFA unsat=CD"},
				Causes: []string{"1/a-1", "1/a-2", "2/RISK_LEVEL_HIGH", "3/max-medium/maxDeviceRisk", "4/p1", "5/COMPLIANT_DEVICE"}},
		},
		{
			name:     "OR needs one control",
			policies: []pe.Policy{pol("p1", both(pe.OperatorOR))},
			req:      req("alice", "payroll", withMFA), dev: noncompliant,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"GRANTED_BY_POLICY/p1"}, Policies: []string{"p1 GRANTED sat=MFA unsat=CD"}},
		},
		{
			name:     "OR with neither control blocks with both reasons",
			policies: []pe.Policy{pol("p1", both(pe.OperatorOR))},
			req:      req("alice", "payroll"), dev: noncompliant,
			want: outcome{Decision: pe.DecisionBlock, Reasons: []string{"COMPLIANT_DEVICE_REQUIRED/p1", "MFA_REQUIRED/p1"}, Policies: []string{"p1 BLOCKED unsat=CD+MFA"},
				Causes: []string{"1/a-1", "1/a-2", "2/RISK_LEVEL_HIGH", "3/max-medium/maxDeviceRisk", "4/p1", "5/COMPLIANT_DEVICE", "5/MFA"}},
		},
		{
			name:     "report-only never blocks and reports would-block",
			policies: []pe.Policy{pol("p1", block, reportOnly)},
			req:      req("alice", "payroll"), dev: compliant,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"ALLOWED/"}, Policies: []string{"p1 WOULD_BLOCK"}},
		},
		{
			name:     "report-only would block on a noncompliant device, enabled MFA policy grants",
			policies: []pe.Policy{pol("p1", reportOnly), pol("p2", mfa)},
			req:      req("alice", "payroll", withMFA), dev: noncompliant,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"GRANTED_BY_POLICY/p2"}, Policies: []string{"p1 WOULD_BLOCK unsat=CD", "p2 GRANTED sat=MFA"}},
		},
		{
			name:     "report-only would grant",
			policies: []pe.Policy{pol("p1", reportOnly)},
			req:      req("alice", "payroll"), dev: compliant,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"ALLOWED/"}, Policies: []string{"p1 WOULD_GRANT sat=CD"}},
		},
		{
			name:     "report-only not applied",
			policies: []pe.Policy{pol("p1", reportOnly, users(pe.UserAssignment{IncludeUsers: []string{"bob"}}))},
			req:      req("alice", "payroll"), dev: compliant,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"ALLOWED/"}, Policies: []string{"p1 RO_NOT_APPLIED (user not included)"}},
		},
		{
			name:     "disabled policies are skipped and not reported",
			policies: []pe.Policy{pol("p1", block, disabled)},
			req:      req("alice", "payroll", all), dev: compliant,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"ALLOWED/"}},
		},
		{
			name:     "application not targeted is left out unless AllPolicies",
			policies: []pe.Policy{pol("p1", block), pol("p2", block, apps(pe.AppAssignment{All: true, Exclude: []string{"wiki"}}))},
			req:      req("alice", "wiki"), dev: compliant,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"ALLOWED/"}, Policies: []string{"p2 NOT_APPLIED (application excluded)"}},
		},
		{
			name:     "AllPolicies lists untargeted policies",
			policies: []pe.Policy{pol("p1", block), pol("p2", block, apps(pe.AppAssignment{All: true, Exclude: []string{"wiki"}}))},
			req:      req("alice", "wiki", all), dev: compliant,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"ALLOWED/"}, Policies: []string{"p1 NOT_APPLIED (application not targeted)", "p2 NOT_APPLIED (application excluded)"}},
		},
		{
			name:     "application excluded beats application included",
			policies: []pe.Policy{pol("p1", block, apps(pe.AppAssignment{Include: []string{"payroll"}, Exclude: []string{"payroll"}}))},
			req:      req("alice", "payroll"), dev: compliant,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"ALLOWED/"}, Policies: []string{"p1 NOT_APPLIED (application excluded)"}},
		},
		{
			name:     "all applications",
			policies: []pe.Policy{pol("p1", block, apps(pe.AppAssignment{All: true}))},
			req:      req("alice", "mail"), dev: compliant,
			want: outcome{Decision: pe.DecisionBlock, Reasons: []string{"BLOCKED_BY_POLICY/p1"}, Policies: []string{"p1 BLOCKED"}, Causes: []string{"4/p1", "5/BLOCK"}},
		},
		{
			name:     "platform not included (device platform used when the request says none)",
			policies: []pe.Policy{pol("p1", block, platforms([]pe.Platform{pe.PlatformIOS, pe.PlatformAndroid}, nil))},
			req:      req("alice", "payroll"), dev: compliant,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"ALLOWED/"}, Policies: []string{"p1 NOT_APPLIED (platform not included)"}},
		},
		{
			name:     "request platform overrides the device's",
			policies: []pe.Policy{pol("p1", block, platforms([]pe.Platform{pe.PlatformIOS}, nil))},
			req:      req("alice", "payroll", onPlatform(pe.PlatformIOS)), dev: compliant,
			want: outcome{Decision: pe.DecisionBlock, Reasons: []string{"BLOCKED_BY_POLICY/p1"}, Policies: []string{"p1 BLOCKED"}, Causes: []string{"4/p1", "5/BLOCK"}},
		},
		{
			name:     "platform exclusion beats inclusion",
			policies: []pe.Policy{pol("p1", block, platforms([]pe.Platform{pe.PlatformWindows}, []pe.Platform{pe.PlatformWindows}))},
			req:      req("alice", "payroll"), dev: compliant,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"ALLOWED/"}, Policies: []string{"p1 NOT_APPLIED (platform excluded)"}},
		},
		{
			name:     "unknown platform matches no include list",
			policies: []pe.Policy{pol("p1", block, platforms([]pe.Platform{pe.PlatformWindows}, nil)), pol("p2", block, platforms(nil, []pe.Platform{pe.PlatformWindows}))},
			req:      req("alice", "payroll"), dev: nil,
			want: outcome{Decision: pe.DecisionBlock, Reasons: []string{"BLOCKED_BY_POLICY/p2"}, Policies: []string{"p1 NOT_APPLIED (platform not included)", "p2 BLOCKED"},
				Causes: []string{"4/p2", "5/BLOCK"}},
		},
		{
			name:     "location excluded (trusted office network) beats included",
			policies: []pe.Policy{pol("p1", block, ips([]string{"10.0.0.0/8"}, []string{"10.1.0.0/16"}))},
			req:      req("alice", "payroll", fromIP("10.1.2.3")), dev: compliant,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"ALLOWED/"}, Policies: []string{"p1 NOT_APPLIED (location excluded)"}},
		},
		{
			name:     "location included (IPv4-mapped IPv6 address)",
			policies: []pe.Policy{pol("p1", block, ips([]string{"10.0.0.0/8"}, []string{"10.1.0.0/16"}))},
			req:      req("alice", "payroll", fromIP("::ffff:10.2.0.1")), dev: compliant,
			want: outcome{Decision: pe.DecisionBlock, Reasons: []string{"BLOCKED_BY_POLICY/p1"}, Policies: []string{"p1 BLOCKED"}, Causes: []string{"4/p1", "5/BLOCK"}},
		},
		{
			// Attack: no client IP must not make a location condition "not applied".
			name:     "unknown IP under a location condition blocks with CLIENT_IP_UNKNOWN (fail closed)",
			policies: []pe.Policy{pol("p1", block, ips([]string{"10.0.0.0/8"}, nil)), pol("p2", ips([]string{"2001:db8::/32"}, nil))},
			req:      req("alice", "payroll"), dev: compliant,
			want: outcome{Decision: pe.DecisionBlock, Reasons: []string{"CLIENT_IP_UNKNOWN/p1", "CLIENT_IP_UNKNOWN/p2"}, Policies: []string{"p1 BLOCKED", "p2 BLOCKED"},
				Causes: []string{"4/p1", "5/LOCATION", "4/p2", "5/LOCATION"}},
		},
		{
			// "Block payroll unless 10.0.0.0/8", asked without an IP.
			name:     "unknown IP under an exclude-only location condition blocks with CLIENT_IP_UNKNOWN",
			policies: []pe.Policy{pol("p1", block, ips(nil, []string{"10.0.0.0/8"}))},
			req:      req("alice", "payroll"), dev: compliant,
			want: outcome{Decision: pe.DecisionBlock, Reasons: []string{"CLIENT_IP_UNKNOWN/p1"}, Policies: []string{"p1 BLOCKED"}, Causes: []string{"4/p1", "5/LOCATION"}},
		},
		{
			name:     "known IP inside the exclusion: the block does not apply",
			policies: []pe.Policy{pol("p1", block, ips(nil, []string{"10.0.0.0/8"}))},
			req:      req("alice", "payroll", fromIP("10.1.2.3")), dev: compliant,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"ALLOWED/"}, Policies: []string{"p1 NOT_APPLIED (location excluded)"}},
		},
		{
			name:     "unknown IP under a report-only location condition: would block, allowed",
			policies: []pe.Policy{pol("p1", block, reportOnly, ips(nil, []string{"10.0.0.0/8"}))},
			req:      req("alice", "payroll"), dev: compliant,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"ALLOWED/"}, Policies: []string{"p1 WOULD_BLOCK"}},
		},
		{
			name:     "unknown IP: a policy that excludes the user still does not apply",
			policies: []pe.Policy{pol("p1", block, ips(nil, []string{"10.0.0.0/8"}), users(pe.UserAssignment{All: true, ExcludeUsers: []string{"alice"}}))},
			req:      req("alice", "payroll"), dev: compliant,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"ALLOWED/"}, Policies: []string{"p1 NOT_APPLIED (user excluded)"}},
		},
		{
			name:     "registered device: the owner is granted",
			policies: []pe.Policy{pol("p1", registeredAnd)},
			req:      req("alice", "payroll"), dev: ownedBy("alice"),
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"GRANTED_BY_POLICY/p1"}, Policies: []string{"p1 GRANTED sat=CD+RD"}},
		},
		{
			name:     "registered device: a registered user is granted",
			policies: []pe.Policy{pol("p1", registeredAnd)},
			req:      req("bob", "payroll"), dev: ownedBy("alice", "bob"),
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"GRANTED_BY_POLICY/p1"}, Policies: []string{"p1 GRANTED sat=CD+RD"}},
		},
		{
			// Attack: the intern presents the CEO's compliant device.
			name:     "registered device: another user's compliant device is refused",
			policies: []pe.Policy{pol("p1", registeredAnd)},
			req:      req("bob", "payroll"), dev: ownedBy("alice"),
			want: outcome{Decision: pe.DecisionBlock, Reasons: []string{"DEVICE_NOT_REGISTERED_TO_USER/p1"}, Policies: []string{"p1 BLOCKED sat=CD unsat=RD"},
				Causes: []string{"4/p1", "5/REGISTERED_DEVICE"}},
		},
		{
			name:     "registered device: an unknown device is refused",
			policies: []pe.Policy{pol("p1", registeredAnd)},
			req:      req("alice", "payroll"),
			want: outcome{Decision: pe.DecisionBlock, Reasons: []string{"UNKNOWN_DEVICE/p1", "DEVICE_NOT_REGISTERED_TO_USER/p1"}, Policies: []string{"p1 BLOCKED unsat=CD+RD"},
				Causes: []string{"4/p1", "5/COMPLIANT_DEVICE", "5/REGISTERED_DEVICE"}},
		},
		{
			name:     "IPv6 location",
			policies: []pe.Policy{pol("p1", block, ips([]string{"2001:db8::/32"}, nil))},
			req:      req("alice", "payroll", fromIP("2001:db8::5")), dev: compliant,
			want: outcome{Decision: pe.DecisionBlock, Reasons: []string{"BLOCKED_BY_POLICY/p1"}, Policies: []string{"p1 BLOCKED"}, Causes: []string{"4/p1", "5/BLOCK"}},
		},
		{
			name:     "client app not included",
			policies: []pe.Policy{pol("p1", block, clientApps(pe.ClientAppExchangeActiveSync))},
			req:      req("alice", "payroll", client(pe.ClientAppBrowser)), dev: compliant,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"ALLOWED/"}, Policies: []string{"p1 NOT_APPLIED (client app not included)"}},
		},
		{
			name:     "a client that does not say counts as OTHER (legacy clients blocked)",
			policies: []pe.Policy{pol("p1", block, clientApps(pe.ClientAppExchangeActiveSync, pe.ClientAppOther))},
			req:      req("alice", "payroll"), dev: compliant,
			want: outcome{Decision: pe.DecisionBlock, Reasons: []string{"BLOCKED_BY_POLICY/p1"}, Policies: []string{"p1 BLOCKED"}, Causes: []string{"4/p1", "5/BLOCK"}},
		},
		{
			name:     "results are in policy id order, granted reasons for each granting policy",
			policies: []pe.Policy{pol("z", mfa), pol("a"), pol("m", reportOnly, block)},
			req:      req("alice", "payroll", withMFA), dev: compliant,
			want: outcome{Decision: pe.DecisionAllow, Reasons: []string{"GRANTED_BY_POLICY/a", "GRANTED_BY_POLICY/z"},
				Policies: []string{"a GRANTED sat=CD", "m WOULD_BLOCK", "z GRANTED sat=MFA"}},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			snap, err := pe.Compile(testDir(), tt.policies)
			if err != nil {
				t.Fatal(err)
			}
			var res pe.Result
			snap.Evaluate(tt.req, tt.dev, pe.Feed{Stale: tt.stale}, &res)
			if diff := cmp.Diff(tt.want, summarize(&res)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			// The reference evaluator agrees.
			if diff := cmp.Diff(tt.want, newReference(testDir(), tt.policies).evaluate(tt.req, tt.dev, pe.Feed{Stale: tt.stale})); diff != "" {
				t.Errorf("reference (-want +got):\n%s", diff)
			}
			// Evaluating again into the same Result gives the same outcome.
			snap.Evaluate(tt.req, tt.dev, pe.Feed{Stale: tt.stale}, &res)
			if diff := cmp.Diff(tt.want, summarize(&res)); diff != "" {
				t.Errorf("second evaluation (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEvaluateDetails(t *testing.T) {
	snap, err := pe.Compile(testDir(), []pe.Policy{pol("p1"), pol("p2", func(p *pe.Policy) { p.DisplayName = "" })}, pe.WithVersion(42))
	if err != nil {
		t.Fatal(err)
	}
	var res pe.Result
	snap.Evaluate(&pe.Request{UserID: "alice", AppID: "payroll"}, noncompliant, pe.Feed{Age: 3e9}, &res)
	if res.SnapshotVersion != 42 || snap.Version() != 42 {
		t.Errorf("version = %d, %d; want 42", res.SnapshotVersion, snap.Version())
	}
	wantDev := pe.DeviceInfo{Known: true, State: pe.ComplianceNoncompliant, Risk: pe.RiskHigh, Revision: 9, Age: 3e9}
	if res.Device != wantDev {
		t.Errorf("device = %+v, want %+v", res.Device, wantDev)
	}
	wantCauses := []pe.Cause{
		{Kind: pe.CauseAlert, ID: "a-1", Description: "active alert on the device"},
		{Kind: pe.CauseAlert, ID: "a-2", Description: "active alert on the device"},
		{Kind: pe.CauseRiskLevel, ID: "RISK_LEVEL_HIGH", Description: "device risk level HIGH"},
		{Kind: pe.CauseComplianceSetting, ID: "max-medium/maxDeviceRisk", Description: "device risk HIGH is above MEDIUM"},
		{Kind: pe.CausePolicy, ID: "p1", Description: "Policy p1"},
		{Kind: pe.CauseControl, ID: "COMPLIANT_DEVICE", Description: "a compliant device is required; the device is NONCOMPLIANT"},
		{Kind: pe.CausePolicy, ID: "p2", Description: "p2"},
		{Kind: pe.CauseControl, ID: "COMPLIANT_DEVICE", Description: "a compliant device is required; the device is NONCOMPLIANT"},
	}
	if diff := cmp.Diff(wantCauses, res.Causes); diff != "" {
		t.Errorf("causes (-want +got):\n%s", diff)
	}
	if res.Reasons[0].Message != `policy "Policy p1" requires a compliant device; the device is not compliant` {
		t.Errorf("message = %q", res.Reasons[0].Message)
	}
	if res.Policies[0].DisplayName != "Policy p1" || res.Policies[0].State != pe.StateEnabled {
		t.Errorf("policy result = %+v", res.Policies[0])
	}
	if got := res.MainReason(); got != pe.CodeCompliantDeviceRequired {
		t.Errorf("MainReason = %q", got)
	}

	snap.Evaluate(&pe.Request{UserID: "alice", AppID: "payroll"}, nil, pe.Feed{Stale: true}, &res)
	if res.Device != (pe.DeviceInfo{Stale: true}) {
		t.Errorf("unknown device info = %+v", res.Device)
	}
}

func TestCompileErrors(t *testing.T) {
	for _, tt := range []struct {
		name     string
		dir      *pe.Directory
		policies []pe.Policy
		field    string // "" = directory error
	}{
		{"no control", nil, []pe.Policy{pol("p1", func(p *pe.Policy) { p.Require = nil })}, "grant_controls"},
		{"block and require", nil, []pe.Policy{pol("p1", func(p *pe.Policy) { p.Block = true })}, "grant_controls"},
		{"unknown control", nil, []pe.Policy{pol("p1", func(p *pe.Policy) { p.Require = []pe.Control{7} })}, "grant_controls.require"},
		{"duplicate control", nil, []pe.Policy{pol("p1", func(p *pe.Policy) { p.Require = []pe.Control{1, 1} })}, "grant_controls.require"},
		{"no state", nil, []pe.Policy{pol("p1", func(p *pe.Policy) { p.State = 0 })}, "state"},
		{"empty id", nil, []pe.Policy{pol("")}, "policy_id"},
		{"duplicate id", nil, []pe.Policy{pol("p1"), pol("p1")}, "policy_id"},
		{"bad platform", nil, []pe.Policy{pol("p1", platforms([]pe.Platform{0}, nil))}, "conditions.platforms.include"},
		{"bad prefix", nil, []pe.Policy{pol("p1", func(p *pe.Policy) { p.IncludeIPs = []netip.Prefix{{}} })}, "conditions.locations.include_ip_ranges"},
		{"bad client app", nil, []pe.Policy{pol("p1", clientApps(9))}, "conditions.client_app_types.include"},
		{"duplicate user", &pe.Directory{Users: []pe.User{{ID: "a"}, {ID: "a"}}}, nil, ""},
		{"empty group id", &pe.Directory{Groups: []pe.Group{{}}}, nil, ""},
		{"duplicate application", &pe.Directory{Applications: []pe.Application{{ID: "x"}, {ID: "x"}}}, nil, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.dir
			if dir == nil {
				dir = testDir()
			}
			_, err := pe.Compile(dir, tt.policies)
			if tt.field == "" {
				if !errors.Is(err, pe.ErrInvalidDirectory) {
					t.Fatalf("err = %v, want ErrInvalidDirectory", err)
				}
				return
			}
			var perr *pe.PolicyError
			if !errors.As(err, &perr) || !errors.Is(err, pe.ErrInvalidPolicy) {
				t.Fatalf("err = %v, want a *PolicyError", err)
			}
			if perr.Field != tt.field {
				t.Errorf("field = %q, want %q", perr.Field, tt.field)
			}
		})
	}
}

func TestWithDraftsAndPolicies(t *testing.T) {
	base, err := pe.Compile(testDir(), []pe.Policy{pol("p1"), pol("p2", mfa)}, pe.WithVersion(5))
	if err != nil {
		t.Fatal(err)
	}
	draft, err := base.WithDrafts([]pe.Policy{pol("p1", block), pol("p3", reportOnly, block)})
	if err != nil {
		t.Fatal(err)
	}
	var res pe.Result
	r := &pe.Request{UserID: "alice", AppID: "payroll", MFADone: true}
	draft.Evaluate(r, compliant, pe.Feed{}, &res)
	want := outcome{Decision: pe.DecisionBlock, Reasons: []string{"BLOCKED_BY_POLICY/p1"},
		Policies: []string{"p1 BLOCKED", "p2 GRANTED sat=MFA", "p3 WOULD_BLOCK"}, Causes: []string{"4/p1", "5/BLOCK"}}
	if diff := cmp.Diff(want, summarize(&res)); diff != "" {
		t.Errorf("draft (-want +got):\n%s", diff)
	}
	if draft.Version() != 5 {
		t.Errorf("draft version = %d, want the base's 5", draft.Version())
	}
	// The base snapshot is unchanged.
	base.Evaluate(r, compliant, pe.Feed{}, &res)
	if res.Decision != pe.DecisionAllow || len(res.Policies) != 2 {
		t.Errorf("base changed: %+v", summarize(&res))
	}
	if _, err := base.WithDrafts([]pe.Policy{pol("p9", func(p *pe.Policy) { p.Require = nil })}); !errors.Is(err, pe.ErrInvalidPolicy) {
		t.Errorf("invalid draft: err = %v", err)
	}
	// WithPolicies keeps the directory and takes a new version.
	next, err := base.WithPolicies([]pe.Policy{pol("q", block)})
	if err != nil {
		t.Fatal(err)
	}
	if next.Version() == base.Version() || !next.HasUser("alice") || next.NumPolicies() != 1 {
		t.Errorf("WithPolicies: version %d, users ok %v, policies %d", next.Version(), next.HasUser("alice"), next.NumPolicies())
	}
}

func TestDirectoryQueries(t *testing.T) {
	snap, err := pe.Compile(testDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := snap.TransitiveGroups("erin")
	if want := []string{"g-all", "g-contractors", "g-eng"}; !ok || !cmp.Equal(got, want) {
		t.Errorf("TransitiveGroups(erin) = %v, %v; want %v", got, ok, want)
	}
	if _, ok := snap.TransitiveGroups("nobody"); ok {
		t.Error("TransitiveGroups(nobody) ok")
	}
	if got := snap.EmergencyAccessUsers(); !cmp.Equal(got, []string{"dave"}) {
		t.Errorf("EmergencyAccessUsers = %v", got)
	}
	// Cycles are tolerated.
	cyc := &pe.Directory{Users: []pe.User{{ID: "u"}}, Groups: []pe.Group{
		{ID: "a", MemberGroups: []string{"b"}, MemberUsers: []string{"u"}}, {ID: "b", MemberGroups: []string{"a"}},
	}}
	s2, err := pe.Compile(cyc, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s2.TransitiveGroups("u"); !cmp.Equal(got, []string{"a", "b"}) {
		t.Errorf("cycle: %v", got)
	}
}

func TestCouldBlock(t *testing.T) {
	snap, err := pe.Compile(testDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		p    pe.Policy
		want []string // LockoutRisk
	}{
		{"all users, block", pol("p", block), []string{"dave"}},
		{"all users, requires compliant device", pol("p"), []string{"dave"}},
		{"report-only state is ignored", pol("p", reportOnly), []string{"dave"}},
		{"emergency account excluded by user", pol("p", users(pe.UserAssignment{All: true, ExcludeUsers: []string{"dave"}})), nil},
		{"emergency account excluded by group", pol("p", users(pe.UserAssignment{All: true, ExcludeGroups: []string{"g-admins"}})), nil},
		{"included by group", pol("p", users(pe.UserAssignment{IncludeGroups: []string{"g-admins"}})), []string{"dave"}},
		{"not included", pol("p", users(pe.UserAssignment{IncludeGroups: []string{"g-all"}})), nil},
		{"no application left", pol("p", apps(pe.AppAssignment{Include: []string{"payroll"}, Exclude: []string{"payroll"}})), nil},
		{"application not created yet still counts", pol("p", apps(pe.AppAssignment{Include: []string{"future"}})), []string{"dave"}},
		{"no platform left", pol("p", platforms([]pe.Platform{1}, []pe.Platform{1})), nil},
		{"a platform left", pol("p", platforms([]pe.Platform{1, 2}, []pe.Platform{1})), []string{"dave"}},
		{"every included range excluded", pol("p", ips([]string{"10.1.0.0/16"}, []string{"10.0.0.0/8"})), nil},
		{"part of a range left", pol("p", ips([]string{"10.0.0.0/8"}, []string{"10.1.0.0/16"})), []string{"dave"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := snap.LockoutRisk(tt.p); !cmp.Equal(got, tt.want) {
				t.Errorf("LockoutRisk = %v, want %v", got, tt.want)
			}
			if got, want := snap.CouldBlock(tt.p, "dave"), len(tt.want) > 0; got != want {
				t.Errorf("CouldBlock(dave) = %v, want %v", got, want)
			}
		})
	}
	if snap.CouldBlock(pol("p", users(pe.UserAssignment{IncludeUsers: []string{"bob"}})), "alice") {
		t.Error("CouldBlock(alice) for a policy on bob")
	}
}
