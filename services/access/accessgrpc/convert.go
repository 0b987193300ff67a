package accessgrpc

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/services/access"
)

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func tm(p *timestamppb.Timestamp) time.Time {
	if p == nil {
		return time.Time{}
	}
	return p.AsTime()
}

func userToProto(u *access.User) *accessv1.User {
	return &accessv1.User{UserId: u.ID, DisplayName: u.DisplayName, Disabled: u.Disabled, EmergencyAccess: u.EmergencyAccess, ExternalId: u.ExternalID,
		GroupIds: u.GroupIDs, TransitiveGroupIds: u.TransitiveGroupIDs, CreateTime: ts(u.CreateTime), UpdateTime: ts(u.UpdateTime), Etag: u.Etag}
}

func userFromProto(p *accessv1.User) *access.User {
	return &access.User{ID: p.GetUserId(), DisplayName: p.GetDisplayName(), Disabled: p.GetDisabled(), EmergencyAccess: p.GetEmergencyAccess(), ExternalID: p.GetExternalId(), Etag: p.GetEtag()}
}

func groupToProto(g *access.Group) *accessv1.Group {
	return &accessv1.Group{GroupId: g.ID, DisplayName: g.DisplayName, MemberUserIds: g.MemberUserIDs, MemberGroupIds: g.MemberGroupIDs,
		CreateTime: ts(g.CreateTime), UpdateTime: ts(g.UpdateTime), Etag: g.Etag}
}

func groupFromProto(p *accessv1.Group) *access.Group {
	return &access.Group{ID: p.GetGroupId(), DisplayName: p.GetDisplayName(), MemberUserIDs: p.GetMemberUserIds(), MemberGroupIDs: p.GetMemberGroupIds(), Etag: p.GetEtag()}
}

func appToProto(a *access.Application) *accessv1.Application {
	return &accessv1.Application{ApplicationId: a.ID, DisplayName: a.DisplayName, CreateTime: ts(a.CreateTime), UpdateTime: ts(a.UpdateTime), Etag: a.Etag}
}

func appFromProto(p *accessv1.Application) *access.Application {
	return &access.Application{ID: p.GetApplicationId(), DisplayName: p.GetDisplayName(), Etag: p.GetEtag()}
}

func enums[T ~int32, P ~int32](in []P) []T {
	if len(in) == 0 {
		return nil
	}
	out := make([]T, len(in))
	for i, v := range in {
		out[i] = T(v)
	}
	return out
}

// PolicyFromProto converts a policy (also used for WhatIf drafts).
func PolicyFromProto(p *accessv1.ConditionalAccessPolicy) *access.Policy {
	u, a, c, g := p.GetUsers(), p.GetApplications(), p.GetConditions(), p.GetGrantControls()
	return &access.Policy{
		ID: p.GetPolicyId(), DisplayName: p.GetDisplayName(), Description: p.GetDescription(), State: access.PolicyState(p.GetState()),
		Users: access.UserAssignment{All: u.GetAll(), IncludeUsers: u.GetIncludeUsers(), IncludeGroups: u.GetIncludeGroups(),
			ExcludeUsers: u.GetExcludeUsers(), ExcludeGroups: u.GetExcludeGroups()},
		Applications: access.ApplicationAssignment{All: a.GetAll(), Include: a.GetInclude(), Exclude: a.GetExclude()},
		Conditions: access.Conditions{
			IncludePlatforms: enums[access.Platform](c.GetPlatforms().GetInclude()),
			ExcludePlatforms: enums[access.Platform](c.GetPlatforms().GetExclude()),
			IncludeIPRanges:  c.GetLocations().GetIncludeIpRanges(),
			ExcludeIPRanges:  c.GetLocations().GetExcludeIpRanges(),
			ClientAppTypes:   enums[access.ClientAppType](c.GetClientAppTypes().GetInclude()),
		},
		Grant: access.GrantControls{Block: g.GetBlock(), Require: enums[access.GrantControl](g.GetRequire()), Operator: access.GrantOperator(g.GetOperator())},
		Etag:  p.GetEtag(),
	}
}

func policyToProto(p *access.Policy) *accessv1.ConditionalAccessPolicy {
	out := &accessv1.ConditionalAccessPolicy{
		PolicyId: p.ID, DisplayName: p.DisplayName, Description: p.Description, State: accessv1.PolicyState(p.State),
		Users: &accessv1.UserAssignment{All: p.Users.All, IncludeUsers: p.Users.IncludeUsers, IncludeGroups: p.Users.IncludeGroups,
			ExcludeUsers: p.Users.ExcludeUsers, ExcludeGroups: p.Users.ExcludeGroups},
		Applications:  &accessv1.ApplicationAssignment{All: p.Applications.All, Include: p.Applications.Include, Exclude: p.Applications.Exclude},
		GrantControls: &accessv1.GrantControls{Block: p.Grant.Block, Require: enums[accessv1.GrantControl](p.Grant.Require), Operator: accessv1.GrantOperator(p.Grant.Operator)},
		CreateTime:    ts(p.CreateTime), UpdateTime: ts(p.UpdateTime), Etag: p.Etag,
	}
	c := p.Conditions
	if len(c.IncludePlatforms)+len(c.ExcludePlatforms)+len(c.IncludeIPRanges)+len(c.ExcludeIPRanges)+len(c.ClientAppTypes) > 0 {
		out.Conditions = &accessv1.Conditions{}
		if len(c.IncludePlatforms)+len(c.ExcludePlatforms) > 0 {
			out.Conditions.Platforms = &accessv1.PlatformCondition{Include: enums[commonv1.Platform](c.IncludePlatforms), Exclude: enums[commonv1.Platform](c.ExcludePlatforms)}
		}
		if len(c.IncludeIPRanges)+len(c.ExcludeIPRanges) > 0 {
			out.Conditions.Locations = &accessv1.LocationCondition{IncludeIpRanges: c.IncludeIPRanges, ExcludeIpRanges: c.ExcludeIPRanges}
		}
		if len(c.ClientAppTypes) > 0 {
			out.Conditions.ClientAppTypes = &accessv1.ClientAppCondition{Include: enums[accessv1.ClientAppType](c.ClientAppTypes)}
		}
	}
	return out
}

func sessionToProto(x *access.Session) *accessv1.Session {
	return &accessv1.Session{SessionId: x.ID, UserId: x.UserID, DeviceId: x.DeviceID, ApplicationId: x.AppID,
		State: accessv1.SessionState(x.State), CreateTime: ts(x.CreateTime), LastAccessTime: ts(x.LastAccessTime),
		RevokeTime: ts(x.RevokeTime), RevokeReason: x.RevokeReason}
}

func sessionEventToProto(e *access.SessionEvent) *accessv1.SessionEvent {
	out := &accessv1.SessionEvent{Revision: e.Revision, EventTime: ts(e.Time)}
	if e.TraceParent != "" {
		out.TraceContext = &commonv1.TraceContext{Traceparent: e.TraceParent, Tracestate: e.TraceState}
	}
	switch e.Kind {
	case access.SessionOpenedEvent:
		out.Payload = &accessv1.SessionEvent_SessionOpened{SessionOpened: &accessv1.SessionOpened{Session: sessionToProto(&e.Session)}}
	case access.SessionRevokedEvent:
		out.Payload = &accessv1.SessionEvent_SessionRevoked{SessionRevoked: &accessv1.SessionRevoked{Session: sessionToProto(&e.Session),
			ReasonCode: e.ReasonCode, ComplianceRevision: e.ComplianceRevision}}
	}
	return out
}
