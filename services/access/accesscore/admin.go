package accesscore

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/condaccess/condaccess/internal/telemetry"
	"github.com/condaccess/condaccess/services/access"
)

func (s *Service) etag(now time.Time) string {
	return strconv.FormatInt(now.UnixNano(), 36)
}

// maskFields validates update_mask paths against allowed and returns the set
// to apply; an empty mask or "*" selects every field.
func maskFields(paths []string, allowed ...string) (map[string]bool, error) {
	out := map[string]bool{}
	if len(paths) == 0 || (len(paths) == 1 && paths[0] == "*") {
		for _, a := range allowed {
			out[a] = true
		}
		return out, nil
	}
	for _, p := range paths {
		if !slices.Contains(allowed, p) {
			return nil, access.Invalid("update_mask", "unknown or immutable field %q (mutable: %s)", p, strings.Join(allowed, ", "))
		}
		out[p] = true
	}
	return out, nil
}

// ---- users ----

// CreateUser creates a user.
func (s *Service) CreateUser(ctx context.Context, u *access.User) (*access.User, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	ctx, done, err := s.guard(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	now := s.now()
	nu := &access.User{ID: u.ID, DisplayName: u.DisplayName, Disabled: u.Disabled, EmergencyAccess: u.EmergencyAccess,
		ExternalID: u.ExternalID, CreateTime: now, UpdateTime: now, Etag: s.etag(now)}
	if err := s.store.CreateUser(ctx, nu); err != nil {
		return nil, err
	}
	s.model.Users[nu.ID] = nu
	s.rebuild()
	return s.withGroups(nu), nil
}

func (s *Service) withGroups(u *access.User) *access.User {
	c := *u
	c.GroupIDs, c.TransitiveGroupIDs = s.model.UserGroups(u.ID)
	return &c
}

// GetUser returns a user with its direct and transitive groups.
func (s *Service) GetUser(ctx context.Context, id string) (*access.User, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	u := s.model.Users[id]
	if u == nil {
		return nil, fmt.Errorf("%w: user %q", access.ErrNotFound, id)
	}
	return s.withGroups(u), nil
}

// UserByExternalID returns the user whose external id is ext, from the store
// (without groups), or ErrNotFound.
func (s *Service) UserByExternalID(ctx context.Context, ext string) (*access.User, error) {
	return s.store.UserByExternalID(ctx, ext)
}

// ListUsers lists users by id.
func (s *Service) ListUsers(ctx context.Context, token string, limit int) ([]*access.User, string, error) {
	return s.store.ListUsers(ctx, token, limit)
}

// UpdateUser applies the fields of u named by mask (display_name, disabled or
// its alias enabled, emergency_access, external_id).
func (s *Service) UpdateUser(ctx context.Context, u *access.User, mask []string) (*access.User, error) {
	for i, p := range mask {
		if p == "enabled" {
			mask = slices.Clone(mask)
			mask[i] = "disabled"
		}
	}
	f, err := maskFields(mask, "display_name", "disabled", "emergency_access", "external_id")
	if err != nil {
		return nil, err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	ctx, done, err := s.guard(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	cur := s.model.Users[u.ID]
	if cur == nil {
		return nil, fmt.Errorf("%w: user %q", access.ErrNotFound, u.ID)
	}
	nu := *cur
	if f["display_name"] {
		nu.DisplayName = u.DisplayName
	}
	if f["disabled"] {
		nu.Disabled = u.Disabled
	}
	if f["emergency_access"] {
		nu.EmergencyAccess = u.EmergencyAccess
	}
	if f["external_id"] {
		nu.ExternalID = u.ExternalID
	}
	now := s.now()
	nu.UpdateTime, nu.Etag = now, s.etag(now)
	// Disabling a user revokes its sessions, in the same store write; so does
	// changing or removing its external id (the sessions were opened for the
	// identity-provider account it named).
	reason := revokeReason(cur, &nu)
	revoke := reason != ""
	var ls []*access.LiveSession
	var revs []access.Revocation
	if revoke {
		if ls, revs, err = s.userRevocations(ctx, nu.ID, reason); err != nil {
			return nil, err
		}
	}
	if err := s.store.UpdateUser(ctx, &nu, u.Etag, revs); err != nil {
		return nil, err
	}
	s.model.Users[nu.ID] = &nu
	s.rebuild()
	if revoke {
		if err := s.revokedUser(ctx, nu.ID, reason, ls); err != nil {
			return nil, err
		}
	}
	return s.withGroups(&nu), nil
}

// revokeReason says why a change from cur to nu revokes the user's sessions, or "":
// disabling the user, or changing or removing its external id (the sessions were
// opened for the identity-provider account it named).
func revokeReason(cur, nu *access.User) string {
	switch {
	case cur == nil:
		return ""
	case nu.Disabled && !cur.Disabled:
		return ReasonUserDisabled
	case cur.ExternalID != "" && nu.ExternalID != cur.ExternalID:
		return ReasonUserExternalIDChanged
	}
	return ""
}

// DeleteUser deletes a user and its memberships, and revokes its sessions.
func (s *Service) DeleteUser(ctx context.Context, id, etag string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	ctx, done, err := s.guard(ctx)
	if err != nil {
		return err
	}
	defer done()
	ls, revs, err := s.userRevocations(ctx, id, ReasonUserDeleted)
	if err != nil {
		return err
	}
	if err := s.store.DeleteUser(ctx, id, etag, revs); err != nil {
		return err
	}
	s.model.RemoveUser(id)
	s.rebuild()
	return s.revokedUser(ctx, id, ReasonUserDeleted, ls)
}

// Revoke reasons of directory changes.
const (
	ReasonUserDisabled = "USER_DISABLED"
	ReasonUserDeleted  = "USER_DELETED"
	// ReasonUserExternalIDChanged: the user's external id was changed or removed.
	ReasonUserExternalIDChanged = "USER_EXTERNAL_ID_CHANGED"
)

// userRevocations returns the user's active sessions and their revocations, with
// the trace context of ctx (the admin request); on a shared store also those of
// the user's stored sessions that other replicas opened.
func (s *Service) userRevocations(ctx context.Context, user, reason string) ([]*access.LiveSession, []access.Revocation, error) {
	ls := s.sessions.ForUser(user)
	tc := telemetry.TraceContextFromContext(ctx)
	var revs []access.Revocation
	if len(ls) > 0 {
		revs = s.revocationsFor(ls, reason, 0, tc.GetTraceparent(), tc.GetTracestate())
	}
	others, err := s.storedRevocations(ctx, access.SessionFilter{UserID: user}, reason, ls, 0, tc.GetTraceparent(), tc.GetTracestate())
	if err != nil {
		return nil, nil, err
	}
	return ls, append(revs, others...), nil
}

// revokedUser finishes the revocation of a disabled or deleted user's sessions
// once the store write has committed and the snapshot that blocks the user is in
// place (continuous access evaluation, as for a noncompliant device): the revoked
// sessions leave the table, and sessions opened meanwhile by decisions that still
// saw the old snapshot are revoked by a second write.
func (s *Service) revokedUser(ctx context.Context, user, reason string, revoked []*access.LiveSession) error {
	s.sessions.Remove(revoked)
	cutoff := time.Now()
	var late []*access.LiveSession
	for _, l := range s.sessions.ForUser(user) {
		if !l.CreateTime.After(cutoff) {
			late = append(late, l)
		}
	}
	if len(late) == 0 {
		return nil
	}
	tc := telemetry.TraceContextFromContext(ctx)
	return s.store.RevokeSessions(ctx, s.revocationsFor(late, reason, 0, tc.GetTraceparent(), tc.GetTracestate()), func() { s.sessions.Remove(late) })
}

// ---- groups ----

func (s *Service) checkGroup(g *access.Group) error {
	for _, u := range g.MemberUserIDs {
		if s.model.Users[u] == nil {
			return fmt.Errorf("%w: member user %q of group %q", access.ErrNotFound, u, g.ID)
		}
	}
	for _, m := range g.MemberGroupIDs {
		if m != g.ID && s.model.Groups[m] == nil {
			return fmt.Errorf("%w: member group %q of group %q", access.ErrNotFound, m, g.ID)
		}
	}
	if c := access.GroupCycle(g.ID, g.MemberGroupIDs, s.model.MemberGroups); c != nil {
		return access.CycleError(c)
	}
	return nil
}

func dedup(ids []string) []string {
	if len(ids) == 0 {
		return nil
	}
	out := slices.Clone(ids)
	slices.Sort(out)
	return slices.Compact(out)
}

// CreateGroup creates a group.
func (s *Service) CreateGroup(ctx context.Context, g *access.Group) (*access.Group, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	ctx, done, err := s.guard(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	if s.model.Groups[g.ID] != nil {
		return nil, fmt.Errorf("%w: group %q", access.ErrAlreadyExists, g.ID)
	}
	now := s.now()
	ng := &access.Group{ID: g.ID, DisplayName: g.DisplayName, MemberUserIDs: dedup(g.MemberUserIDs), MemberGroupIDs: dedup(g.MemberGroupIDs),
		CreateTime: now, UpdateTime: now, Etag: s.etag(now)}
	if err := s.checkGroup(ng); err != nil {
		return nil, err
	}
	if err := s.store.CreateGroup(ctx, ng); err != nil {
		return nil, err
	}
	s.model.Groups[ng.ID] = ng
	s.rebuild()
	return ng, nil
}

// GetGroup returns a group.
func (s *Service) GetGroup(ctx context.Context, id string) (*access.Group, error) {
	return s.store.GetGroup(ctx, id)
}

// ListGroups lists groups by id.
func (s *Service) ListGroups(ctx context.Context, token string, limit int) ([]*access.Group, string, error) {
	return s.store.ListGroups(ctx, token, limit)
}

// UpdateGroup applies the fields of g named by mask.
func (s *Service) UpdateGroup(ctx context.Context, g *access.Group, mask []string) (*access.Group, error) {
	f, err := maskFields(mask, "display_name", "member_user_ids", "member_group_ids")
	if err != nil {
		return nil, err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	ctx, done, err := s.guard(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	cur := s.model.Groups[g.ID]
	if cur == nil {
		return nil, fmt.Errorf("%w: group %q", access.ErrNotFound, g.ID)
	}
	ng := *cur
	if f["display_name"] {
		ng.DisplayName = g.DisplayName
	}
	if f["member_user_ids"] {
		ng.MemberUserIDs = dedup(g.MemberUserIDs)
	}
	if f["member_group_ids"] {
		ng.MemberGroupIDs = dedup(g.MemberGroupIDs)
	}
	if g.Etag != "" && g.Etag != cur.Etag {
		return nil, fmt.Errorf("%w: group %q was changed (etag %q, current %q): read it again", access.ErrEtagMismatch, g.ID, g.Etag, cur.Etag)
	}
	if err := s.checkGroup(&ng); err != nil {
		return nil, err
	}
	now := s.now()
	ng.UpdateTime, ng.Etag = now, s.etag(now)
	if err := s.store.UpdateGroup(ctx, &ng, g.Etag); err != nil {
		return nil, err
	}
	s.model.Groups[ng.ID] = &ng
	s.rebuild()
	return &ng, nil
}

// DeleteGroup deletes a group.
func (s *Service) DeleteGroup(ctx context.Context, id, etag string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	ctx, done, err := s.guard(ctx)
	if err != nil {
		return err
	}
	defer done()
	if err := s.store.DeleteGroup(ctx, id, etag); err != nil {
		return err
	}
	s.model.RemoveGroup(id)
	s.rebuild()
	return nil
}

// ---- applications ----

// CreateApplication creates an application.
func (s *Service) CreateApplication(ctx context.Context, a *access.Application) (*access.Application, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	ctx, done, err := s.guard(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	now := s.now()
	na := &access.Application{ID: a.ID, DisplayName: a.DisplayName, CreateTime: now, UpdateTime: now, Etag: s.etag(now)}
	if err := s.store.CreateApplication(ctx, na); err != nil {
		return nil, err
	}
	s.model.Apps[na.ID] = na
	s.rebuild()
	return na, nil
}

// GetApplication returns an application.
func (s *Service) GetApplication(ctx context.Context, id string) (*access.Application, error) {
	return s.store.GetApplication(ctx, id)
}

// ListApplications lists applications by id.
func (s *Service) ListApplications(ctx context.Context, token string, limit int) ([]*access.Application, string, error) {
	return s.store.ListApplications(ctx, token, limit)
}

// UpdateApplication applies the fields of a named by mask.
func (s *Service) UpdateApplication(ctx context.Context, a *access.Application, mask []string) (*access.Application, error) {
	f, err := maskFields(mask, "display_name")
	if err != nil {
		return nil, err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	ctx, done, err := s.guard(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	cur := s.model.Apps[a.ID]
	if cur == nil {
		return nil, fmt.Errorf("%w: application %q", access.ErrNotFound, a.ID)
	}
	na := *cur
	if f["display_name"] {
		na.DisplayName = a.DisplayName
	}
	now := s.now()
	na.UpdateTime, na.Etag = now, s.etag(now)
	if err := s.store.UpdateApplication(ctx, &na, a.Etag); err != nil {
		return nil, err
	}
	s.model.Apps[na.ID] = &na
	s.rebuild()
	return &na, nil
}

// DeleteApplication deletes an application.
func (s *Service) DeleteApplication(ctx context.Context, id, etag string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	ctx, done, err := s.guard(ctx)
	if err != nil {
		return err
	}
	defer done()
	if err := s.store.DeleteApplication(ctx, id, etag); err != nil {
		return err
	}
	delete(s.model.Apps, id)
	s.rebuild()
	return nil
}

// ImportStats counts an import.
type ImportStats struct{ Users, Groups, Applications int64 }

// ImportDirectory creates or replaces everything in d, checks membership
// (unknown members, cycles) against the resulting directory, stores it in
// batches and rebuilds the snapshot once.
func (s *Service) ImportDirectory(ctx context.Context, d *access.Directory) (ImportStats, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.catchUp(ctx); err != nil {
		return ImportStats{}, err
	}
	now := s.now()
	et := s.etag(now)
	// The resulting directory, for the checks.
	next := &access.Model{Users: map[string]*access.User{}, Groups: map[string]*access.Group{}, Apps: s.model.Apps, Policies: s.model.Policies}
	for k, v := range s.model.Users {
		next.Users[k] = v
	}
	for k, v := range s.model.Groups {
		next.Groups[k] = v
	}
	stamp := func(id string, created func() (time.Time, bool)) (time.Time, time.Time) {
		if c, ok := created(); ok {
			return c, now
		}
		return now, now
	}
	var users []*access.User
	for _, u := range d.Users {
		nu := &access.User{ID: u.ID, DisplayName: u.DisplayName, Disabled: u.Disabled, EmergencyAccess: u.EmergencyAccess, ExternalID: u.ExternalID, Etag: et}
		nu.CreateTime, nu.UpdateTime = stamp(u.ID, func() (time.Time, bool) {
			if c := s.model.Users[u.ID]; c != nil {
				return c.CreateTime, true
			}
			return time.Time{}, false
		})
		next.Users[nu.ID] = nu
		users = append(users, nu)
	}
	if err := externalIDsUnique(next, d.Users); err != nil {
		return ImportStats{}, err
	}
	var groups []*access.Group
	for _, g := range d.Groups {
		ng := &access.Group{ID: g.ID, DisplayName: g.DisplayName, MemberUserIDs: dedup(g.MemberUserIDs), MemberGroupIDs: dedup(g.MemberGroupIDs), Etag: et}
		ng.CreateTime, ng.UpdateTime = stamp(g.ID, func() (time.Time, bool) {
			if c := s.model.Groups[g.ID]; c != nil {
				return c.CreateTime, true
			}
			return time.Time{}, false
		})
		next.Groups[ng.ID] = ng
		groups = append(groups, ng)
	}
	for _, g := range groups {
		for _, u := range g.MemberUserIDs {
			if next.Users[u] == nil {
				return ImportStats{}, fmt.Errorf("%w: group %q: member user %q is neither in the directory nor in the import", access.ErrFailedPrecondition, g.ID, u)
			}
		}
		for _, m := range g.MemberGroupIDs {
			if next.Groups[m] == nil {
				return ImportStats{}, fmt.Errorf("%w: group %q: member group %q is neither in the directory nor in the import", access.ErrFailedPrecondition, g.ID, m)
			}
		}
	}
	if c := cycleAnywhere(next); c != nil {
		return ImportStats{}, access.CycleError(c)
	}
	apps := map[string]*access.Application{}
	for k, v := range s.model.Apps {
		apps[k] = v
	}
	var appList []*access.Application
	for _, a := range d.Applications {
		na := &access.Application{ID: a.ID, DisplayName: a.DisplayName, Etag: et, CreateTime: now, UpdateTime: now}
		if c := s.model.Apps[a.ID]; c != nil {
			na.CreateTime = c.CreateTime
		}
		apps[na.ID] = na
		appList = append(appList, na)
	}
	if err := s.store.ImportDirectory(ctx, &access.Directory{Users: users, Groups: groups, Applications: appList}); err != nil {
		// Partially stored: reload what the store has so memory matches it.
		if d, lerr := s.store.LoadDirectory(context.WithoutCancel(ctx)); lerr == nil {
			s.model = access.NewModel(d, s.model.PolicyList())
			s.rebuild()
		}
		return ImportStats{}, err
	}
	prev := s.model.Users
	next.Apps = apps
	s.model = next
	s.rebuild()
	// An import that disables a user or changes its external id revokes the user's
	// sessions as UpdateUser does, once the import (and the snapshot that blocks the
	// user) is in place: in a store write of its own, right after the import's.
	for _, nu := range users {
		reason := revokeReason(prev[nu.ID], nu)
		if reason == "" {
			continue
		}
		ls, revs, err := s.userRevocations(ctx, nu.ID, reason)
		if err == nil && len(revs) > 0 {
			err = s.store.RevokeSessions(ctx, revs, nil)
		}
		if err == nil {
			err = s.revokedUser(ctx, nu.ID, reason, ls)
		}
		if err != nil {
			return ImportStats{}, fmt.Errorf("directory imported, but revoking the sessions of user %q (%s) failed: %w", nu.ID, reason, err)
		}
	}
	return ImportStats{int64(len(users)), int64(len(groups)), int64(len(appList))}, nil
}

// externalIDsUnique checks that no two users of the directory an import results in
// (next) share an external id: a clash with a user outside the import is
// ALREADY_EXISTS, one inside it INVALID_ARGUMENT naming the imported user.
func externalIDsUnique(next *access.Model, imported []*access.User) error {
	pos := make(map[string]int, len(imported))
	for i, u := range imported {
		pos[u.ID] = i
	}
	holder := map[string]string{}
	for _, u := range next.Users {
		if u.ExternalID == "" {
			continue
		}
		other, clash := holder[u.ExternalID]
		if !clash {
			holder[u.ExternalID] = u.ID
			continue
		}
		i, iok := pos[u.ID]
		j, jok := pos[other]
		if iok && jok {
			return access.Invalid(fmt.Sprintf("users[%d].external_id", max(i, j)), "users %q and %q of the import share external id %q",
				imported[min(i, j)].ID, imported[max(i, j)].ID, u.ExternalID)
		}
		return fmt.Errorf("%w: external id %q would be held by users %q and %q", access.ErrAlreadyExists, u.ExternalID, min(u.ID, other), max(u.ID, other))
	}
	return nil
}

// cycleAnywhere finds a membership cycle in the whole graph (iterative colouring).
func cycleAnywhere(m *access.Model) []string {
	const (
		white = iota
		grey
		black
	)
	colour := make(map[string]int, len(m.Groups))
	for root := range m.Groups {
		if colour[root] != white {
			continue
		}
		type frame struct {
			id string
			i  int
		}
		stack := []frame{{root, 0}}
		colour[root] = grey
		for len(stack) > 0 {
			top := &stack[len(stack)-1]
			kids := m.MemberGroups(top.id)
			if top.i >= len(kids) {
				colour[top.id] = black
				stack = stack[:len(stack)-1]
				continue
			}
			k := kids[top.i]
			top.i++
			switch colour[k] {
			case grey:
				var cyc []string
				for j := range stack {
					if stack[j].id == k {
						for _, f := range stack[j:] {
							cyc = append(cyc, f.id)
						}
						break
					}
				}
				return append(cyc, k)
			case white:
				colour[k] = grey
				stack = append(stack, frame{k, 0})
			}
		}
	}
	return nil
}
