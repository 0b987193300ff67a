// Package w1gen generates the W1 benchmark workload (BENCHMARK.md) for the policy engine,
// deterministically from a seed.
package w1gen

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"

	"github.com/condaccess/condaccess/services/access/policyengine"
)

// Scale sizes a workload.
type Scale struct {
	Users    int
	Groups   int
	Apps     int
	Policies int
	Devices  int
	Requests int
	// Extras adds what W1 does not have, to exercise every rule in tests: nested groups
	// (with a cycle), disabled users, disabled policies, user and application exclusions,
	// OR operators, platform/location/client-app conditions, references to unknown ids,
	// every compliance state, and requests with unknown users, devices and applications,
	// platforms, IPs and client app types.
	Extras bool
}

// W1 is the full workload of BENCHMARK.md.
var W1 = Scale{Users: 100_000, Groups: 1_000, Apps: 1_000, Policies: 10_000, Devices: 1_000_000, Requests: 1 << 20}

// Small is a small W1-shaped workload for tests.
var Small = Scale{Users: 2_000, Groups: 100, Apps: 40, Policies: 400, Devices: 5_000, Requests: 20_000}

// Workload is a generated workload.
type Workload struct {
	Directory *policyengine.Directory
	Policies  []policyengine.Policy
	Devices   []policyengine.DeviceEntry
	Requests  []policyengine.Request
}

// Seed is the fixed seed the benchmarks use.
const Seed = 20260527

// UserID is the id of user i (exported so that a bulk import names things the same way).
func UserID(i int) string { return fmt.Sprintf("u-%06d", i) }

// GroupID is the id of group i.
func GroupID(i int) string { return fmt.Sprintf("g-%04d", i) }

// AppID is the id of application i.
func AppID(i int) string { return fmt.Sprintf("app-%04d", i) }

// PolicyID is the id of policy i.
func PolicyID(i int) string { return fmt.Sprintf("ca-%05d", i) }

// DeviceID is the id of device i.
func DeviceID(i int) string { return fmt.Sprintf("d-%07d", i) }

var prefixes = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("10.1.0.0/16"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("2001:db8::/32"),
}

var addrs = []netip.Addr{
	{},
	netip.MustParseAddr("10.1.2.3"),
	netip.MustParseAddr("10.9.9.9"),
	netip.MustParseAddr("192.168.1.1"),
	netip.MustParseAddr("203.0.113.7"),
	netip.MustParseAddr("198.51.100.1"),
	netip.MustParseAddr("2001:db8::1"),
	netip.MustParseAddr("::ffff:10.1.2.3"),
}

// Generate builds a workload. The same seed and scale give the same workload.
func Generate(seed int64, sc Scale) *Workload {
	r := rand.New(rand.NewPCG(uint64(seed), 0x57_31))
	w := &Workload{Directory: &policyengine.Directory{}}
	d := w.Directory

	users := make([]string, sc.Users)
	d.Users = make([]policyengine.User, sc.Users)
	for i := range users {
		users[i] = UserID(i)
		d.Users[i] = policyengine.User{ID: users[i]}
		if sc.Extras {
			d.Users[i].Disabled = r.IntN(50) == 0
			d.Users[i].EmergencyAccess = r.IntN(500) == 0
		}
	}
	groups := make([]string, sc.Groups)
	d.Groups = make([]policyengine.Group, sc.Groups)
	for i := range groups {
		groups[i] = GroupID(i)
		d.Groups[i].ID = groups[i]
	}
	// Each user is a direct member of 1–5 distinct random groups.
	for u := range users {
		n := 1 + r.IntN(5)
		if n > sc.Groups {
			n = sc.Groups
		}
		for _, g := range distinct(r, sc.Groups, n) {
			d.Groups[g].MemberUsers = append(d.Groups[g].MemberUsers, users[u])
		}
	}
	if sc.Extras && sc.Groups > 2 {
		for g := range d.Groups {
			if r.IntN(5) == 0 {
				for range 1 + r.IntN(2) {
					d.Groups[g].MemberGroups = append(d.Groups[g].MemberGroups, groups[r.IntN(sc.Groups)])
				}
			}
		}
		// A cycle and a dangling member.
		d.Groups[0].MemberGroups = append(d.Groups[0].MemberGroups, groups[1], "g-missing")
		d.Groups[1].MemberGroups = append(d.Groups[1].MemberGroups, groups[0])
		d.Groups[2].MemberUsers = append(d.Groups[2].MemberUsers, "u-missing")
	}
	apps := make([]string, sc.Apps)
	d.Applications = make([]policyengine.Application, sc.Apps)
	for i := range apps {
		apps[i] = AppID(i)
		d.Applications[i].ID = apps[i]
	}

	w.Policies = make([]policyengine.Policy, sc.Policies)
	for i := range w.Policies {
		p := &w.Policies[i]
		p.ID = PolicyID(i)
		p.DisplayName = "Policy " + p.ID
		p.State = policyengine.StateEnabled
		if r.IntN(10) == 0 {
			p.State = policyengine.StateReportOnly
		}
		allAppsOdds := 200
		if sc.Extras {
			allAppsOdds = 20
			if r.IntN(10) == 0 {
				p.State = policyengine.StateDisabled
			}
		}
		if r.IntN(allAppsOdds) == 0 {
			p.Apps.All = true
		} else {
			for _, a := range distinct(r, sc.Apps, min(1+r.IntN(3), sc.Apps)) {
				p.Apps.Include = append(p.Apps.Include, apps[a])
			}
		}
		allUsers := false
		switch r.IntN(10) {
		case 0:
			p.Block = true
		case 1:
			p.Require = []policyengine.Control{policyengine.ControlMFA}
		default:
			p.Require = []policyengine.Control{policyengine.ControlCompliantDevice}
			allUsers = r.IntN(10) == 0
		}
		if allUsers {
			p.Users.All = true
		} else {
			for _, g := range distinct(r, sc.Groups, min(1+r.IntN(5), sc.Groups)) {
				p.Users.IncludeGroups = append(p.Users.IncludeGroups, groups[g])
			}
			for _, u := range distinct(r, sc.Users, min(r.IntN(4), sc.Users)) {
				p.Users.IncludeUsers = append(p.Users.IncludeUsers, users[u])
			}
		}
		for _, g := range distinct(r, sc.Groups, min(r.IntN(3), sc.Groups)) {
			p.Users.ExcludeGroups = append(p.Users.ExcludeGroups, groups[g])
		}
		if sc.Extras {
			extras(r, p, users, groups, apps)
		}
	}

	w.Devices = make([]policyengine.DeviceEntry, sc.Devices)
	for i := range w.Devices {
		e := &w.Devices[i]
		e.ID = DeviceID(i)
		e.State = policyengine.DeviceState{
			State:    policyengine.ComplianceCompliant,
			Risk:     policyengine.RiskNone,
			Platform: policyengine.Platform(1 + r.IntN(5)),
			Revision: int64(i + 1),
		}
		if r.IntN(20) == 0 {
			e.State.State = policyengine.ComplianceNoncompliant
			e.State.Risk = policyengine.RiskHigh
			e.State.AlertIDs = []string{fmt.Sprintf("alert-%07d", i)}
			e.State.Setting = "max-medium/maxDeviceRisk"
			e.State.Reason = "device risk HIGH is above the maximum MEDIUM"
		}
		if sc.Extras {
			switch r.IntN(8) {
			case 0:
				e.State.State = policyengine.ComplianceInGracePeriod
			case 1:
				e.State.State = policyengine.ComplianceExcluded
			case 2:
				e.State.State = policyengine.ComplianceNotEvaluated
			case 3:
				e.State.State = policyengine.ComplianceNoncompliant
				e.State.Risk = policyengine.RiskMedium
				e.State.AlertIDs = []string{fmt.Sprintf("alert-%07d-a", i), fmt.Sprintf("alert-%07d-b", i)}
			}
		}
	}

	w.Requests = make([]policyengine.Request, sc.Requests)
	for i := range w.Requests {
		q := &w.Requests[i]
		q.UserID = users[r.IntN(sc.Users)]
		q.DeviceID = w.Devices[r.IntN(sc.Devices)].ID
		q.AppID = apps[r.IntN(sc.Apps)]
		q.MFADone = r.IntN(2) == 0
		// Fresh copies, as in a just-decoded request (not pointers into the directory).
		q.UserID, q.DeviceID, q.AppID = strings.Clone(q.UserID), strings.Clone(q.DeviceID), strings.Clone(q.AppID)
		if sc.Extras {
			switch r.IntN(50) {
			case 0:
				q.UserID = "u-unknown"
			case 1:
				q.AppID = "app-unknown"
			case 2, 3:
				q.DeviceID = "d-unknown"
			}
			q.Platform = policyengine.Platform(r.IntN(6))
			q.IP = addrs[r.IntN(len(addrs))]
			q.ClientApp = policyengine.ClientApp(r.IntN(5))
		}
	}
	return w
}

// extras adds the non-W1 variations to a policy.
func extras(r *rand.Rand, p *policyengine.Policy, users, groups, apps []string) {
	if r.IntN(8) == 0 {
		p.Users.ExcludeUsers = append(p.Users.ExcludeUsers, users[r.IntN(len(users))])
	}
	if r.IntN(30) == 0 {
		p.Users.IncludeGroups = append(p.Users.IncludeGroups, "g-unknown")
		p.Users.ExcludeUsers = append(p.Users.ExcludeUsers, "u-unknown")
	}
	if r.IntN(10) == 0 {
		p.Apps.Exclude = append(p.Apps.Exclude, apps[r.IntN(len(apps))])
	}
	if !p.Apps.All && r.IntN(20) == 0 {
		p.Apps.Exclude = append(p.Apps.Exclude, p.Apps.Include[0])
	}
	if len(p.Require) == 1 && r.IntN(5) == 0 {
		p.Require = []policyengine.Control{policyengine.ControlCompliantDevice, policyengine.ControlMFA}
		if r.IntN(2) == 0 {
			p.Operator = policyengine.OperatorOR
		} else {
			p.Operator = policyengine.OperatorAND
		}
	}
	if r.IntN(5) == 0 {
		p.Platforms.Include = []policyengine.Platform{policyengine.Platform(1 + r.IntN(5)), policyengine.Platform(1 + r.IntN(5))}
	}
	if r.IntN(6) == 0 {
		p.Platforms.Exclude = []policyengine.Platform{policyengine.Platform(1 + r.IntN(5))}
	}
	if r.IntN(5) == 0 {
		p.IncludeIPs = []netip.Prefix{prefixes[r.IntN(len(prefixes))]}
	}
	if r.IntN(5) == 0 {
		p.ExcludeIPs = []netip.Prefix{prefixes[r.IntN(len(prefixes))], prefixes[r.IntN(len(prefixes))]}
	}
	if r.IntN(5) == 0 {
		p.ClientApps = []policyengine.ClientApp{policyengine.ClientApp(1 + r.IntN(4)), policyengine.ClientApp(1 + r.IntN(4))}
	}
}

// distinct returns n distinct ints in [0, max).
func distinct(r *rand.Rand, max, n int) []int {
	out := make([]int, 0, n)
	for len(out) < n {
		v := r.IntN(max)
		dup := false
		for _, x := range out {
			if x == v {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, v)
		}
	}
	return out
}
