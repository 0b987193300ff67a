package w1gen_test

import (
	"math"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	pe "github.com/condaccess/condaccess/services/access/policyengine"
	"github.com/condaccess/condaccess/services/access/policyengine/w1gen"
)

func TestDeterministic(t *testing.T) {
	a := w1gen.Generate(7, w1gen.Small)
	b := w1gen.Generate(7, w1gen.Small)
	if diff := cmp.Diff(a, b, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
		t.Fatalf("same seed, different workloads:\n%s", diff)
	}
	c := w1gen.Generate(8, w1gen.Small)
	if cmp.Equal(a.Policies, c.Policies, cmpopts.EquateComparable(netip.Prefix{})) {
		t.Fatal("different seeds, same policies")
	}
}

// TestShape checks the W1 proportions of BENCHMARK.md on a workload large enough for them.
func TestShape(t *testing.T) {
	sc := w1gen.Scale{Users: 20_000, Groups: 1_000, Apps: 1_000, Policies: 40_000, Devices: 40_000, Requests: 40_000}
	w := w1gen.Generate(w1gen.Seed, sc)
	if len(w.Directory.Users) != sc.Users || len(w.Directory.Groups) != sc.Groups || len(w.Directory.Applications) != sc.Apps ||
		len(w.Policies) != sc.Policies || len(w.Devices) != sc.Devices || len(w.Requests) != sc.Requests {
		t.Fatal("sizes differ from the scale")
	}
	near := func(name string, got, n int, want float64) {
		t.Helper()
		f := float64(got) / float64(n)
		if math.Abs(f-want) > 4*math.Sqrt(want*(1-want)/float64(n)) {
			t.Errorf("%s: %.4f, want about %.4f", name, f, want)
		}
	}
	var reportOnly, blocks, mfa, compliant, allUsers, allApps int
	for _, p := range w.Policies {
		if p.State == pe.StateReportOnly {
			reportOnly++
		}
		if p.Apps.All {
			allApps++
		} else if n := len(p.Apps.Include); n < 1 || n > 3 {
			t.Fatalf("%s targets %d applications", p.ID, n)
		}
		switch {
		case p.Block:
			blocks++
		case p.Require[0] == pe.ControlMFA:
			mfa++
		default:
			compliant++
			if p.Users.All {
				allUsers++
			}
		}
		if !p.Users.All {
			if n := len(p.Users.IncludeGroups); n < 1 || n > 5 {
				t.Fatalf("%s includes %d groups", p.ID, n)
			}
			if n := len(p.Users.IncludeUsers); n > 3 {
				t.Fatalf("%s includes %d users", p.ID, n)
			}
		}
		if n := len(p.Users.ExcludeGroups); n > 2 {
			t.Fatalf("%s excludes %d groups", p.ID, n)
		}
	}
	n := len(w.Policies)
	near("report-only", reportOnly, n, 0.1)
	near("block", blocks, n, 0.1)
	near("mfa", mfa, n, 0.1)
	near("all users among compliant-device policies", allUsers, compliant, 0.1)
	near("all applications", allApps, n, 1.0/200)

	groupsOf := map[string]int{}
	for _, g := range w.Directory.Groups {
		for _, u := range g.MemberUsers {
			groupsOf[u]++
		}
	}
	for _, u := range w.Directory.Users {
		if n := groupsOf[u.ID]; n < 1 || n > 5 {
			t.Fatalf("%s is in %d groups", u.ID, n)
		}
	}
	noncompliant := 0
	for _, d := range w.Devices {
		if d.State.State == pe.ComplianceNoncompliant {
			noncompliant++
		}
	}
	near("noncompliant devices", noncompliant, len(w.Devices), 1.0/20)
	withMFA := 0
	for _, r := range w.Requests {
		if r.MFADone {
			withMFA++
		}
	}
	near("requests with MFA", withMFA, len(w.Requests), 0.5)
}
