package policyengine_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	pe "github.com/condaccess/condaccess/services/access/policyengine"
	"github.com/condaccess/condaccess/services/access/policyengine/w1gen"
)

// TestMatchesReference compares the optimized engine with the naive reference evaluator on
// small generated workloads, plain W1-shaped and with every extra rule exercised.
func TestMatchesReference(t *testing.T) {
	for _, tt := range []struct {
		name     string
		seed     int64
		scale    w1gen.Scale
		allCodes bool // every reason code must occur
		mutate   func(w *w1gen.Workload)
		// noTemplate: NOT_APPLIED results built per position (the path of snapshots too
		// large for per-application templates).
		noTemplate bool
	}{
		{"w1-small", w1gen.Seed, w1gen.Small, false, nil, false},
		{"extras-1", 1, withExtras(w1gen.Small), true, nil, false},
		{"extras-2", 2, withExtras(w1gen.Small), true, nil, false},
		{"extras-tiny", 3, w1gen.Scale{Users: 50, Groups: 8, Apps: 4, Policies: 60, Devices: 40, Requests: 5000, Extras: true}, false, nil, false},
		// Long user and group lists (more than fit in a policy's inline record), all-apps
		// policies naming users, and every policy targeting all applications in some.
		{"long-lists", 4, w1gen.Scale{Users: 300, Groups: 40, Apps: 6, Policies: 200, Devices: 300, Requests: 6000, Extras: true}, false, longLists, false},
		{"extras-no-template", 5, withExtras(w1gen.Small), true, nil, true},
		{"long-lists-no-template", 6, w1gen.Scale{Users: 300, Groups: 40, Apps: 6, Policies: 200, Devices: 300, Requests: 6000, Extras: true}, false, longLists, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.noTemplate {
				defer pe.SetMaxTemplate(0)()
			}
			w := w1gen.Generate(tt.seed, tt.scale)
			if tt.mutate != nil {
				tt.mutate(w)
			}
			snap, err := pe.Compile(w.Directory, w.Policies)
			if err != nil {
				t.Fatal(err)
			}
			ref := newReference(w.Directory, w.Policies)
			devs := pe.NewDeviceIndex()
			devs.PutMany(w.Devices)
			var res pe.Result
			kinds := map[pe.Decision]int{}
			reasons := map[string]int{}
			n := min(len(w.Requests), 6000)
			for i := range n {
				req := w.Requests[i]
				req.AllPolicies = i%7 == 0
				req.OnlyApplied = i%5 == 0
				feed := pe.Feed{Stale: tt.scale.Extras && i%11 == 0}
				dev, _ := devs.Get(req.DeviceID)
				if i%2 == 0 {
					snap.Evaluate(&req, dev, feed, &res)
				} else {
					snap.EvaluateIn(&req, devs, feed, &res) // the device index's hot fields
				}
				got := summarize(&res)
				want := ref.evaluate(&req, dev, feed)
				if diff := cmp.Diff(want, got); diff != "" {
					t.Fatalf("request %d %+v (device %+v, feed %+v): engine differs from the reference (-want +got):\n%s", i, req, dev, feed, diff)
				}
				kinds[res.Decision]++
				for _, r := range res.Reasons {
					reasons[r.Code]++
				}
			}
			t.Logf("decisions %v; reasons %v", kinds, reasons)
			// The comparison is only meaningful if both outcomes occur.
			if kinds[pe.DecisionAllow] == 0 || kinds[pe.DecisionBlock] == 0 {
				t.Fatalf("degenerate workload: %v", kinds)
			}
			if tt.allCodes {
				for _, code := range []string{pe.CodeAllowed, pe.CodeGrantedByPolicy, pe.CodeBlockedByPolicy, pe.CodeCompliantDeviceRequired,
					pe.CodeMFARequired, pe.CodeComplianceStateStale, pe.CodeDeviceExcluded, pe.CodeUnknownUser, pe.CodeUnknownDevice,
					pe.CodeUnknownApplication, pe.CodeUserDisabled} {
					if reasons[code] == 0 {
						t.Errorf("reason %s never occurred: the workload does not exercise it", code)
					}
				}
			}
		})
	}
}

func withExtras(s w1gen.Scale) w1gen.Scale {
	s.Extras = true
	return s
}

// longLists gives every third policy long include/exclude lists and makes every fifth
// target all applications (keeping its exclusions).
func longLists(w *w1gen.Workload) {
	d := w.Directory
	for i := range w.Policies {
		p := &w.Policies[i]
		if i%3 == 0 {
			for k := range 12 {
				p.Users.IncludeUsers = append(p.Users.IncludeUsers, d.Users[(i*7+k*13)%len(d.Users)].ID)
			}
			for k := range 3 {
				p.Users.ExcludeUsers = append(p.Users.ExcludeUsers, d.Users[(i*11+k*17)%len(d.Users)].ID)
				p.Users.ExcludeGroups = append(p.Users.ExcludeGroups, d.Groups[(i+k*5)%len(d.Groups)].ID)
			}
		}
		if i%5 == 0 {
			p.Apps.All, p.Apps.Include = true, nil
		}
	}
}
