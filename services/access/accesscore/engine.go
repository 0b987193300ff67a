package accesscore

import (
	"net/netip"

	"github.com/condaccess/condaccess/services/access"
	pe "github.com/condaccess/condaccess/services/access/policyengine"
)

func engineDirectory(m *access.Model) pe.Directory {
	d := m.Directory()
	out := pe.Directory{
		Users:        make([]pe.User, len(d.Users)),
		Groups:       make([]pe.Group, len(d.Groups)),
		Applications: make([]pe.Application, len(d.Applications)),
	}
	for i, u := range d.Users {
		out.Users[i] = pe.User{ID: u.ID, Disabled: u.Disabled, EmergencyAccess: u.EmergencyAccess, ExternalID: u.ExternalID}
	}
	for i, g := range d.Groups {
		out.Groups[i] = pe.Group{ID: g.ID, MemberUsers: g.MemberUserIDs, MemberGroups: g.MemberGroupIDs}
	}
	for i, a := range d.Applications {
		out.Applications[i] = pe.Application{ID: a.ID}
	}
	return out
}

func conv[T ~uint8, F ~int32](in []F) []T {
	if len(in) == 0 {
		return nil
	}
	out := make([]T, len(in))
	for i, v := range in {
		out[i] = T(v)
	}
	return out
}

func prefixes(in []string) []netip.Prefix {
	if len(in) == 0 {
		return nil
	}
	out := make([]netip.Prefix, 0, len(in))
	for _, s := range in {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// EnginePolicy converts a domain policy to the engine's view.
func EnginePolicy(p *access.Policy) pe.Policy {
	return pe.Policy{
		ID: p.ID, DisplayName: p.DisplayName, State: pe.State(p.State),
		Users: pe.UserAssignment{All: p.Users.All, IncludeUsers: p.Users.IncludeUsers, IncludeGroups: p.Users.IncludeGroups,
			ExcludeUsers: p.Users.ExcludeUsers, ExcludeGroups: p.Users.ExcludeGroups},
		Apps:       pe.AppAssignment{All: p.Applications.All, Include: p.Applications.Include, Exclude: p.Applications.Exclude},
		Platforms:  pe.PlatformCondition{Include: conv[pe.Platform](p.Conditions.IncludePlatforms), Exclude: conv[pe.Platform](p.Conditions.ExcludePlatforms)},
		IncludeIPs: prefixes(p.Conditions.IncludeIPRanges),
		ExcludeIPs: prefixes(p.Conditions.ExcludeIPRanges),
		ClientApps: conv[pe.ClientApp](p.Conditions.ClientAppTypes),
		Block:      p.Grant.Block,
		Require:    conv[pe.Control](p.Grant.Require),
		Operator:   pe.Operator(p.Grant.Operator),
	}
}

func enginePolicies(m *access.Model) []pe.Policy {
	ps := m.PolicyList()
	out := make([]pe.Policy, len(ps))
	for i, p := range ps {
		out[i] = EnginePolicy(p)
	}
	return out
}

// DeviceState converts a device compliance to the engine's view.
func DeviceState(d *access.DeviceCompliance) pe.DeviceState {
	st := pe.DeviceState{
		State: pe.ComplianceState(d.State), Risk: pe.RiskLevel(d.Risk), Platform: pe.Platform(d.Platform),
		AlertIDs: d.RiskAlertIDs, Revision: d.Revision, Reason: d.Reason,
		Owner: d.OwnerUserID, RegisteredUsers: d.RegisteredUserIDs,
	}
	for _, s := range d.Settings {
		if !s.Compliant {
			st.Setting = s.PolicyID + "/" + s.Setting
			if s.Reason != "" {
				st.Reason = s.Reason
			}
			break
		}
	}
	return st
}
