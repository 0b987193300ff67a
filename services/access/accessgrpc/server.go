// Package accessgrpc is the access service's gRPC surface: DirectoryService, ConditionalAccessPolicyService, AccessService, Envoy's ext_authz Check and the HTTP forward-auth endpoint.
package accessgrpc

import (
	"context"
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/changefeed"
	"github.com/condaccess/condaccess/internal/eventlog"
	"github.com/condaccess/condaccess/services/access"
	"github.com/condaccess/condaccess/services/access/accesscore"
)

// CheckMethod is Envoy's ext_authz method; it must be opened to ROLE_ENFORCEMENT_POINT.
const CheckMethod = "/envoy.service.auth.v3.Authorization/Check"

// ExtraMethodRoles is what server.Config.ExtraMethodRoles must include.
var ExtraMethodRoles = map[string][]commonv1.Role{CheckMethod: {commonv1.Role_ROLE_ENFORCEMENT_POINT}}

// Headers names the request headers the enforcement points read.
type Headers struct {
	User, Device, Application string
	// MFA, when non-empty, names a header whose value "true" or "1" says MFA was done.
	MFA string
}

// DefaultHeaders are x-user-id, x-device-id, x-application-id and x-mfa-done.
var DefaultHeaders = Headers{User: "x-user-id", Device: "x-device-id", Application: "x-application-id", MFA: "x-mfa-done"}

// ReasonHeader carries the main reason code on enforcement-point responses.
const ReasonHeader = "x-condaccess-reason"

// Server implements the three access services and the enforcement points.
type Server struct {
	svc     *accesscore.Service
	headers Headers
	// importBatch is how many items ImportDirectory holds before applying them.
	importBatch int
	edge        Edge
	// policies wakes WatchPolicies after this process changes a policy.
	policies changefeed.Notifier
}

// DefaultImportBatch is how many directory items (users, groups, applications and
// group members) ImportDirectory holds in memory before it applies them.
const DefaultImportBatch = 50000

// SetImportBatch sets how many items ImportDirectory holds before applying them
// (default DefaultImportBatch); call it before serving.
func (s *Server) SetImportBatch(n int) { s.importBatch = n }

// New returns the handlers over svc.
func New(svc *accesscore.Service, h Headers) *Server {
	if h.User == "" {
		h.User = DefaultHeaders.User
	}
	if h.Device == "" {
		h.Device = DefaultHeaders.Device
	}
	if h.Application == "" {
		h.Application = DefaultHeaders.Application
	}
	return &Server{svc: svc, headers: h, edge: Edge{CertHeader: DefaultCertHeader}}
}

// Register registers every gRPC service, including Envoy's Authorization.
func Register(r grpc.ServiceRegistrar, s *Server) {
	accessv1.RegisterDirectoryServiceServer(r, &directoryServer{s: s})
	accessv1.RegisterConditionalAccessPolicyServiceServer(r, &policyServer{s: s})
	accessv1.RegisterAccessServiceServer(r, &accessServer{s: s})
	authv3.RegisterAuthorizationServer(r, &checkServer{s: s})
}

// Error reasons.
const (
	ReasonNotFound        = "NOT_FOUND"
	ReasonAlreadyExists   = "ALREADY_EXISTS"
	ReasonEtagMismatch    = "ETAG_MISMATCH"
	ReasonLockout         = "EMERGENCY_ACCESS_LOCKOUT"
	ReasonMembershipCycle = "GROUP_MEMBERSHIP_CYCLE"
	ReasonPrecondition    = "FAILED_PRECONDITION"
)

// toStatus maps domain errors to status errors; context errors pass through.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var inv *access.InvalidError
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return apierr.FromContext(err)
	case errors.As(err, &inv):
		vs := make([]*errdetails.BadRequest_FieldViolation, 0, len(inv.Violations))
		for _, v := range inv.Violations {
			vs = append(vs, apierr.FieldViolation(v.Field, v.Description))
		}
		return apierr.InvalidArgument("", vs...)
	case errors.Is(err, access.ErrInvalid):
		return apierr.New(codes.InvalidArgument, apierr.ReasonInvalidArgument, err.Error())
	case errors.Is(err, access.ErrNotFound):
		return apierr.New(codes.NotFound, ReasonNotFound, err.Error())
	case errors.Is(err, access.ErrAlreadyExists):
		return apierr.New(codes.AlreadyExists, ReasonAlreadyExists, err.Error())
	case errors.Is(err, access.ErrEtagMismatch):
		return apierr.New(codes.Aborted, ReasonEtagMismatch, err.Error())
	case errors.Is(err, access.ErrLockout):
		return apierr.New(codes.FailedPrecondition, ReasonLockout, err.Error())
	case errors.Is(err, access.ErrMembershipCycle):
		return apierr.New(codes.FailedPrecondition, ReasonMembershipCycle, err.Error())
	case errors.Is(err, access.ErrFailedPrecondition):
		return apierr.New(codes.FailedPrecondition, ReasonPrecondition, err.Error())
	}
	if s := eventlog.ToStatus(err); s != err {
		return s
	}
	return status.Error(codes.Internal, err.Error())
}

// pageSize applies AIP-158 defaults.
func pageSize(n int32, def int) int {
	if n <= 0 {
		return def
	}
	return int(n)
}
