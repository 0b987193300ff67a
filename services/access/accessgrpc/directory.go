package accessgrpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	"github.com/condaccess/condaccess/services/access"
	"github.com/condaccess/condaccess/services/access/accesscore"
)

type directoryServer struct {
	accessv1.UnsafeDirectoryServiceServer
	s *Server
}

func (d *directoryServer) CreateUser(ctx context.Context, req *accessv1.CreateUserRequest) (*accessv1.CreateUserResponse, error) {
	u, err := d.s.svc.CreateUser(ctx, userFromProto(req.GetUser()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &accessv1.CreateUserResponse{User: userToProto(u)}, nil
}

func (d *directoryServer) GetUser(ctx context.Context, req *accessv1.GetUserRequest) (*accessv1.GetUserResponse, error) {
	u, err := d.s.svc.GetUser(ctx, req.GetUserId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &accessv1.GetUserResponse{User: userToProto(u)}, nil
}

func (d *directoryServer) ListUsers(ctx context.Context, req *accessv1.ListUsersRequest) (*accessv1.ListUsersResponse, error) {
	if ext := req.GetExternalId(); ext != "" {
		u, err := d.s.svc.UserByExternalID(ctx, ext)
		switch {
		case errors.Is(err, access.ErrNotFound):
			return &accessv1.ListUsersResponse{}, nil
		case err != nil:
			return nil, toStatus(err)
		}
		return &accessv1.ListUsersResponse{Users: []*accessv1.User{userToProto(u)}}, nil
	}
	us, next, err := d.s.svc.ListUsers(ctx, req.GetPageToken(), pageSize(req.GetPageSize(), 100))
	if err != nil {
		return nil, toStatus(err)
	}
	out := &accessv1.ListUsersResponse{NextPageToken: next}
	for _, u := range us {
		out.Users = append(out.Users, userToProto(u))
	}
	return out, nil
}

func (d *directoryServer) UpdateUser(ctx context.Context, req *accessv1.UpdateUserRequest) (*accessv1.UpdateUserResponse, error) {
	u, err := d.s.svc.UpdateUser(ctx, userFromProto(req.GetUser()), req.GetUpdateMask().GetPaths())
	if err != nil {
		return nil, toStatus(err)
	}
	return &accessv1.UpdateUserResponse{User: userToProto(u)}, nil
}

func (d *directoryServer) DeleteUser(ctx context.Context, req *accessv1.DeleteUserRequest) (*accessv1.DeleteUserResponse, error) {
	if err := d.s.svc.DeleteUser(ctx, req.GetUserId(), req.GetEtag()); err != nil {
		return nil, toStatus(err)
	}
	return &accessv1.DeleteUserResponse{}, nil
}

func (d *directoryServer) CreateGroup(ctx context.Context, req *accessv1.CreateGroupRequest) (*accessv1.CreateGroupResponse, error) {
	g, err := d.s.svc.CreateGroup(ctx, groupFromProto(req.GetGroup()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &accessv1.CreateGroupResponse{Group: groupToProto(g)}, nil
}

func (d *directoryServer) GetGroup(ctx context.Context, req *accessv1.GetGroupRequest) (*accessv1.GetGroupResponse, error) {
	g, err := d.s.svc.GetGroup(ctx, req.GetGroupId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &accessv1.GetGroupResponse{Group: groupToProto(g)}, nil
}

func (d *directoryServer) ListGroups(ctx context.Context, req *accessv1.ListGroupsRequest) (*accessv1.ListGroupsResponse, error) {
	gs, next, err := d.s.svc.ListGroups(ctx, req.GetPageToken(), pageSize(req.GetPageSize(), 100))
	if err != nil {
		return nil, toStatus(err)
	}
	out := &accessv1.ListGroupsResponse{NextPageToken: next}
	for _, g := range gs {
		out.Groups = append(out.Groups, groupToProto(g))
	}
	return out, nil
}

func (d *directoryServer) UpdateGroup(ctx context.Context, req *accessv1.UpdateGroupRequest) (*accessv1.UpdateGroupResponse, error) {
	g, err := d.s.svc.UpdateGroup(ctx, groupFromProto(req.GetGroup()), req.GetUpdateMask().GetPaths())
	if err != nil {
		return nil, toStatus(err)
	}
	return &accessv1.UpdateGroupResponse{Group: groupToProto(g)}, nil
}

func (d *directoryServer) DeleteGroup(ctx context.Context, req *accessv1.DeleteGroupRequest) (*accessv1.DeleteGroupResponse, error) {
	if err := d.s.svc.DeleteGroup(ctx, req.GetGroupId(), req.GetEtag()); err != nil {
		return nil, toStatus(err)
	}
	return &accessv1.DeleteGroupResponse{}, nil
}

func (d *directoryServer) CreateApplication(ctx context.Context, req *accessv1.CreateApplicationRequest) (*accessv1.CreateApplicationResponse, error) {
	a, err := d.s.svc.CreateApplication(ctx, appFromProto(req.GetApplication()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &accessv1.CreateApplicationResponse{Application: appToProto(a)}, nil
}

func (d *directoryServer) GetApplication(ctx context.Context, req *accessv1.GetApplicationRequest) (*accessv1.GetApplicationResponse, error) {
	a, err := d.s.svc.GetApplication(ctx, req.GetApplicationId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &accessv1.GetApplicationResponse{Application: appToProto(a)}, nil
}

func (d *directoryServer) ListApplications(ctx context.Context, req *accessv1.ListApplicationsRequest) (*accessv1.ListApplicationsResponse, error) {
	as, next, err := d.s.svc.ListApplications(ctx, req.GetPageToken(), pageSize(req.GetPageSize(), 100))
	if err != nil {
		return nil, toStatus(err)
	}
	out := &accessv1.ListApplicationsResponse{NextPageToken: next}
	for _, a := range as {
		out.Applications = append(out.Applications, appToProto(a))
	}
	return out, nil
}

func (d *directoryServer) UpdateApplication(ctx context.Context, req *accessv1.UpdateApplicationRequest) (*accessv1.UpdateApplicationResponse, error) {
	a, err := d.s.svc.UpdateApplication(ctx, appFromProto(req.GetApplication()), req.GetUpdateMask().GetPaths())
	if err != nil {
		return nil, toStatus(err)
	}
	return &accessv1.UpdateApplicationResponse{Application: appToProto(a)}, nil
}

func (d *directoryServer) DeleteApplication(ctx context.Context, req *accessv1.DeleteApplicationRequest) (*accessv1.DeleteApplicationResponse, error) {
	if err := d.s.svc.DeleteApplication(ctx, req.GetApplicationId(), req.GetEtag()); err != nil {
		return nil, toStatus(err)
	}
	return &accessv1.DeleteApplicationResponse{}, nil
}

// ImportDirectory applies the streamed chunks in batches of at most importBatch
// items (users, groups, applications and group members): memory per stream stays
// bounded however long the stream is. A group's members must be in the directory or
// in the same or an earlier batch (send users before the groups that name them);
// duplicates are refused within a batch. A failing batch ends the stream; the batches
// before it stay applied, and the error names the chunk and item.
func (d *directoryServer) ImportDirectory(stream accessv1.DirectoryService_ImportDirectoryServer) error {
	start := time.Now()
	limit := d.s.importBatch
	if limit <= 0 {
		limit = DefaultImportBatch
	}
	var total accesscore.ImportStats
	dir := &access.Directory{}
	items := 0
	seen := map[string]string{}
	dup := func(kind, id string, chunk, i int, field string) error {
		k := kind + "\x00" + id
		if where, ok := seen[k]; ok {
			return access.Invalid(fmt.Sprintf("chunk[%d].%s[%d]", chunk, field, i), "duplicate %s %q (first at %s)", kind, id, where)
		}
		seen[k] = fmt.Sprintf("chunk[%d].%s[%d]", chunk, field, i)
		return nil
	}
	apply := func() error {
		if items == 0 {
			return nil
		}
		st, err := d.s.svc.ImportDirectory(stream.Context(), dir)
		if err != nil {
			return toStatus(err)
		}
		total.Users += st.Users
		total.Groups += st.Groups
		total.Applications += st.Applications
		dir, items = &access.Directory{}, 0
		clear(seen)
		return nil
	}
	for chunk := 0; ; chunk++ {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		for i, u := range req.GetUsers() {
			if err := dup("user", u.GetUserId(), chunk, i, "users"); err != nil {
				return toStatus(err)
			}
			if ext := u.GetExternalId(); ext != "" {
				field := fmt.Sprintf("chunk[%d].users[%d].external_id", chunk, i)
				if where, ok := seen["external_id\x00"+ext]; ok {
					return toStatus(access.Invalid(field, "duplicate external id %q (first at %s)", ext, where))
				}
				seen["external_id\x00"+ext] = field
			}
			dir.Users = append(dir.Users, userFromProto(u))
		}
		for i, g := range req.GetGroups() {
			if err := dup("group", g.GetGroupId(), chunk, i, "groups"); err != nil {
				return toStatus(err)
			}
			dir.Groups = append(dir.Groups, groupFromProto(g))
			items += len(g.GetMemberUserIds()) + len(g.GetMemberGroupIds())
		}
		for i, a := range req.GetApplications() {
			if err := dup("application", a.GetApplicationId(), chunk, i, "applications"); err != nil {
				return toStatus(err)
			}
			dir.Applications = append(dir.Applications, appFromProto(a))
		}
		items += len(req.GetUsers()) + len(req.GetGroups()) + len(req.GetApplications())
		if items >= limit {
			if err := apply(); err != nil {
				return err
			}
		}
	}
	if err := apply(); err != nil {
		return err
	}
	return stream.SendAndClose(&accessv1.ImportDirectoryResponse{Users: total.Users, Groups: total.Groups, Applications: total.Applications,
		Duration: durationpb.New(time.Since(start))})
}

type policyServer struct {
	accessv1.UnsafeConditionalAccessPolicyServiceServer
	s *Server
}

func (p *policyServer) CreatePolicy(ctx context.Context, req *accessv1.CreatePolicyRequest) (*accessv1.CreatePolicyResponse, error) {
	defer p.s.policies.Notify()
	out, err := p.s.svc.CreatePolicy(ctx, PolicyFromProto(req.GetPolicy()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &accessv1.CreatePolicyResponse{Policy: policyToProto(out)}, nil
}

func (p *policyServer) GetPolicy(ctx context.Context, req *accessv1.GetPolicyRequest) (*accessv1.GetPolicyResponse, error) {
	out, err := p.s.svc.GetPolicy(ctx, req.GetPolicyId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &accessv1.GetPolicyResponse{Policy: policyToProto(out)}, nil
}

func (p *policyServer) ListPolicies(ctx context.Context, req *accessv1.ListPoliciesRequest) (*accessv1.ListPoliciesResponse, error) {
	ps, next, err := p.s.svc.ListPolicies(ctx, access.PolicyState(req.GetState()), req.GetPageToken(), pageSize(req.GetPageSize(), 100))
	if err != nil {
		return nil, toStatus(err)
	}
	out := &accessv1.ListPoliciesResponse{NextPageToken: next}
	for _, x := range ps {
		out.Policies = append(out.Policies, policyToProto(x))
	}
	return out, nil
}

func (p *policyServer) UpdatePolicy(ctx context.Context, req *accessv1.UpdatePolicyRequest) (*accessv1.UpdatePolicyResponse, error) {
	defer p.s.policies.Notify()
	out, err := p.s.svc.UpdatePolicy(ctx, PolicyFromProto(req.GetPolicy()), req.GetUpdateMask().GetPaths())
	if err != nil {
		return nil, toStatus(err)
	}
	return &accessv1.UpdatePolicyResponse{Policy: policyToProto(out)}, nil
}

func (p *policyServer) DeletePolicy(ctx context.Context, req *accessv1.DeletePolicyRequest) (*accessv1.DeletePolicyResponse, error) {
	defer p.s.policies.Notify()
	if err := p.s.svc.DeletePolicy(ctx, req.GetPolicyId(), req.GetEtag()); err != nil {
		return nil, toStatus(err)
	}
	return &accessv1.DeletePolicyResponse{}, nil
}
