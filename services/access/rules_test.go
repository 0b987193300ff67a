package access_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/condaccess/condaccess/services/access"
)

func TestValidatePolicy(t *testing.T) {
	valid := func() *access.Policy {
		return &access.Policy{ID: "p", DisplayName: "P", State: access.PolicyEnabled,
			Users: access.UserAssignment{All: true}, Applications: access.ApplicationAssignment{Include: []string{"app"}},
			Grant: access.GrantControls{Require: []access.GrantControl{access.ControlMFA}}}
	}
	tests := []struct {
		name   string
		mut    func(p *access.Policy)
		fields []string
	}{
		{"valid", func(*access.Policy) {}, nil},
		{"no grant control", func(p *access.Policy) { p.Grant = access.GrantControls{} }, []string{"policy.grant_controls"}},
		{"block and requirement", func(p *access.Policy) { p.Grant.Block = true }, []string{"policy.grant_controls"}},
		{"no state", func(p *access.Policy) { p.State = 0 }, []string{"policy.state"}},
		{"no users", func(p *access.Policy) { p.Users = access.UserAssignment{ExcludeUsers: []string{"u"}} }, []string{"policy.users"}},
		{"no applications", func(p *access.Policy) { p.Applications = access.ApplicationAssignment{} }, []string{"policy.applications"}},
		{"bad range", func(p *access.Policy) { p.Conditions.ExcludeIPRanges = []string{"10.0.0.0/8", "nope"} },
			[]string{"policy.conditions.locations.exclude_ip_ranges[1]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := valid()
			tt.mut(p)
			err := access.ValidatePolicy(p, "policy")
			var fields []string
			var inv *access.InvalidError
			if errors.As(err, &inv) {
				for _, v := range inv.Violations {
					fields = append(fields, v.Field)
				}
			}
			if diff := cmp.Diff(tt.fields, fields); diff != "" {
				t.Fatalf("violations (-want +got):\n%s", diff)
			}
			if (err != nil) != errors.Is(err, access.ErrInvalid) {
				t.Fatalf("err %v is not ErrInvalid", err)
			}
		})
	}
}

func TestGroupCycle(t *testing.T) {
	graph := map[string][]string{"a": {"b"}, "b": {"c"}, "c": nil, "d": nil}
	members := func(g string) []string { return graph[g] }
	tests := []struct {
		name    string
		id      string
		members []string
		want    []string
	}{
		{"no cycle", "d", []string{"a"}, nil},
		{"self", "a", []string{"a"}, []string{"a", "a"}},
		{"through nesting", "c", []string{"a"}, []string{"c", "a", "b", "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, access.GroupCycle(tt.id, tt.members, members)); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
}
