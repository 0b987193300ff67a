package policyengine

import "slices"

// CouldBlock reports whether policy p, if it were enabled, could block userID: it applies
// to the user (all users, or included directly or through a transitive group, and not
// excluded), it targets at least one application, its conditions can hold for some
// platform, location and client, and it blocks or requires a control the user might not
// meet (every valid policy does). p.State is ignored. The emergency-access lockout guard
// rejects enabling a policy that could block an emergency-access account (see
// LockoutRisk). Groups and users unknown to the snapshot never match.
func (s *Snapshot) CouldBlock(p Policy, userID string) bool {
	if !p.Block && len(p.Require) == 0 {
		return false
	}
	if !s.appliesToUser(&p.Users, userID) {
		return false
	}
	if !p.Apps.All {
		any := false
		for _, a := range p.Apps.Include {
			if !slices.Contains(p.Apps.Exclude, a) {
				any = true
				break
			}
		}
		if !any {
			return false
		}
	}
	if len(p.Platforms.Include) > 0 {
		any := false
		for _, pl := range p.Platforms.Include {
			if !slices.Contains(p.Platforms.Exclude, pl) {
				any = true
				break
			}
		}
		if !any {
			return false
		}
	}
	if len(p.IncludeIPs) > 0 {
		any := false
		for _, in := range maskAll(p.IncludeIPs) {
			covered := false
			for _, ex := range maskAll(p.ExcludeIPs) {
				if ex.Addr().Is4() == in.Addr().Is4() && ex.Bits() <= in.Bits() && ex.Contains(in.Addr()) {
					covered = true
					break
				}
			}
			if !covered {
				any = true
				break
			}
		}
		if !any {
			return false
		}
	}
	return true
}

// LockoutRisk returns the emergency-access users that policy p, if enabled, could block
// (CouldBlock), sorted. The service refuses to enable p while this is non-empty.
func (s *Snapshot) LockoutRisk(p Policy) []string {
	var out []string
	for _, u := range s.dir.emergency {
		id := s.dir.userIDs[u]
		if s.CouldBlock(p, id) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

func (s *Snapshot) appliesToUser(ua *UserAssignment, userID string) bool {
	var groups []string
	if u, ok := s.dir.userIdx[userID]; ok {
		for _, g := range s.dir.users[u].groups.of(s.dir.userGroups) {
			groups = append(groups, s.dir.groupIDs[g])
		}
	}
	inGroup := func(ids []string) bool {
		for _, g := range ids {
			if slices.Contains(groups, g) {
				return true
			}
		}
		return false
	}
	included := ua.All || slices.Contains(ua.IncludeUsers, userID) || inGroup(ua.IncludeGroups)
	if !included {
		return false
	}
	return !slices.Contains(ua.ExcludeUsers, userID) && !inGroup(ua.ExcludeGroups)
}
