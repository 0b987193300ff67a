package access

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Violation is one bad field (snake_case proto path).
type Violation struct{ Field, Description string }

// InvalidError is an ErrInvalid with field violations.
type InvalidError struct{ Violations []Violation }

func (e *InvalidError) Error() string {
	var b strings.Builder
	b.WriteString("invalid argument")
	for i, v := range e.Violations {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(v.Field + ": " + v.Description)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

// Invalid returns an *InvalidError with one violation.
func Invalid(field, format string, args ...any) error {
	return &InvalidError{Violations: []Violation{{field, fmt.Sprintf(format, args...)}}}
}

// ValidatePolicy checks the rules the proto cannot express, and repeats the
// grant-control rule so the domain never stores a policy without a control.
// prefix is the field path of the policy, e.g. "policy".
func ValidatePolicy(p *Policy, prefix string) error {
	var vs []Violation
	add := func(f, d string) { vs = append(vs, Violation{prefix + "." + f, d}) }
	if p.ID == "" {
		add("policy_id", "required")
	}
	if strings.TrimSpace(p.DisplayName) == "" {
		add("display_name", "required")
	}
	if p.State < PolicyEnabled || p.State > PolicyDisabled {
		add("state", "must be POLICY_STATE_ENABLED, POLICY_STATE_REPORT_ONLY or POLICY_STATE_DISABLED")
	}
	switch {
	case p.Grant.Block && len(p.Grant.Require) > 0:
		add("grant_controls", "a policy either blocks or requires controls, not both")
	case !p.Grant.Block && len(p.Grant.Require) == 0:
		add("grant_controls", "a policy needs a grant control: block, or at least one required control")
	}
	for _, c := range p.Grant.Require {
		if c != ControlCompliantDevice && c != ControlMFA && c != ControlRegisteredDevice {
			add("grant_controls.require", fmt.Sprintf("unknown control %d", c))
		}
	}
	if p.Grant.Operator != 0 && p.Grant.Operator != OperatorAnd && p.Grant.Operator != OperatorOr {
		add("grant_controls.operator", "must be AND or OR")
	}
	u := p.Users
	if !u.All && len(u.IncludeUsers) == 0 && len(u.IncludeGroups) == 0 {
		add("users", "include all users, or some users or groups")
	}
	a := p.Applications
	if !a.All && len(a.Include) == 0 {
		add("applications", "include all applications, or some applications")
	}
	for i, r := range p.Conditions.IncludeIPRanges {
		if _, err := netip.ParsePrefix(r); err != nil {
			add(fmt.Sprintf("conditions.locations.include_ip_ranges[%d]", i), "not a CIDR range")
		}
	}
	for i, r := range p.Conditions.ExcludeIPRanges {
		if _, err := netip.ParsePrefix(r); err != nil {
			add(fmt.Sprintf("conditions.locations.exclude_ip_ranges[%d]", i), "not a CIDR range")
		}
	}
	if len(vs) > 0 {
		return &InvalidError{Violations: vs}
	}
	return nil
}

// GroupCycle returns the cycle (group ids, first == last) that giving group id
// the member groups members would create in a graph whose nested members are
// memberGroups(g), or nil.
func GroupCycle(id string, members []string, memberGroups func(g string) []string) []string {
	// A cycle exists iff id is reachable from one of its new members.
	seen := map[string]bool{}
	var path []string
	var dfs func(g string) bool
	dfs = func(g string) bool {
		path = append(path, g)
		if g == id {
			return true
		}
		if seen[g] {
			path = path[:len(path)-1]
			return false
		}
		seen[g] = true
		for _, m := range memberGroups(g) {
			if dfs(m) {
				return true
			}
		}
		path = path[:len(path)-1]
		return false
	}
	for _, m := range members {
		path = path[:0]
		if dfs(m) {
			return append([]string{id}, path...)
		}
	}
	return nil
}

// CycleError describes a membership cycle.
func CycleError(cycle []string) error {
	return fmt.Errorf("%w: nested group membership would form a cycle: %s", ErrMembershipCycle, strings.Join(cycle, " → "))
}

// Model is an in-memory copy of the directory and policies, kept by the
// service's single writer and compiled into decision snapshots. Not safe for
// concurrent use.
type Model struct {
	Users    map[string]*User
	Groups   map[string]*Group
	Apps     map[string]*Application
	Policies map[string]*Policy
}

// NewModel builds a model from a loaded directory and policies.
func NewModel(d *Directory, ps []*Policy) *Model {
	m := &Model{Users: map[string]*User{}, Groups: map[string]*Group{}, Apps: map[string]*Application{}, Policies: map[string]*Policy{}}
	for _, u := range d.Users {
		m.Users[u.ID] = u
	}
	for _, g := range d.Groups {
		m.Groups[g.ID] = g
	}
	for _, a := range d.Applications {
		m.Apps[a.ID] = a
	}
	for _, p := range ps {
		m.Policies[p.ID] = p
	}
	return m
}

// MemberGroups returns g's nested groups.
func (m *Model) MemberGroups(g string) []string {
	if x := m.Groups[g]; x != nil {
		return x.MemberGroupIDs
	}
	return nil
}

// Directory returns the model's directory (sorted by id for determinism).
func (m *Model) Directory() *Directory {
	d := &Directory{}
	for _, u := range m.Users {
		d.Users = append(d.Users, u)
	}
	for _, g := range m.Groups {
		d.Groups = append(d.Groups, g)
	}
	for _, a := range m.Apps {
		d.Applications = append(d.Applications, a)
	}
	slices.SortFunc(d.Users, func(a, b *User) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(d.Groups, func(a, b *Group) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(d.Applications, func(a, b *Application) int { return strings.Compare(a.ID, b.ID) })
	return d
}

// PolicyList returns the policies sorted by id.
func (m *Model) PolicyList() []*Policy {
	out := make([]*Policy, 0, len(m.Policies))
	for _, p := range m.Policies {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *Policy) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// RemoveUser drops a user and its memberships.
func (m *Model) RemoveUser(id string) {
	delete(m.Users, id)
	for _, g := range m.Groups {
		if i := slices.Index(g.MemberUserIDs, id); i >= 0 {
			g.MemberUserIDs = slices.Delete(slices.Clone(g.MemberUserIDs), i, i+1)
		}
	}
}

// RemoveGroup drops a group and its membership in other groups.
func (m *Model) RemoveGroup(id string) {
	delete(m.Groups, id)
	for _, g := range m.Groups {
		if i := slices.Index(g.MemberGroupIDs, id); i >= 0 {
			g.MemberGroupIDs = slices.Delete(slices.Clone(g.MemberGroupIDs), i, i+1)
		}
	}
}

// UserGroups returns the user's direct and transitive groups, sorted.
func (m *Model) UserGroups(userID string) (direct, transitive []string) {
	parents := map[string][]string{}
	for _, g := range m.Groups {
		for _, c := range g.MemberGroupIDs {
			parents[c] = append(parents[c], g.ID)
		}
		if slices.Contains(g.MemberUserIDs, userID) {
			direct = append(direct, g.ID)
		}
	}
	seen := map[string]bool{}
	queue := slices.Clone(direct)
	for len(queue) > 0 {
		g := queue[0]
		queue = queue[1:]
		if seen[g] {
			continue
		}
		seen[g] = true
		transitive = append(transitive, g)
		queue = append(queue, parents[g]...)
	}
	slices.Sort(direct)
	slices.Sort(transitive)
	return direct, transitive
}
