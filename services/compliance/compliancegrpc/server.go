// Package compliancegrpc serves the compliance service's gRPC contracts: DeviceService, CompliancePolicyService and ComplianceService.
package compliancegrpc

import (
	"context"
	"errors"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/changefeed"
	"github.com/condaccess/condaccess/internal/eventlog"
	"github.com/condaccess/condaccess/services/compliance"
)

// Page size defaults and maxima (documented in the proto).
const (
	defaultDevicePage     = 100
	defaultPolicyPage     = 100
	defaultCompliancePage = 1000
	defaultExclusionPage  = 100
)

// Server implements the three compliance services over a compliance.Service.
type Server struct {
	svc *compliance.Service
	// policies wakes WatchCompliancePolicies after this process changes a policy.
	policies changefeed.Notifier
	// riskAsOf reports how fresh the view of risk is (see SetRiskAsOf).
	riskAsOf func() time.Time
}

// SetRiskAsOf sets the function WatchComplianceEvents and ListDeviceCompliance call to
// fill risk_as_of on every message: the time through which every risk event has been
// applied (the risk consumer's last contact). Call it before serving; unset,
// risk_as_of stays empty.
func (s *Server) SetRiskAsOf(f func() time.Time) { s.riskAsOf = f }

// riskAsOfProto is risk_as_of for a message sent now (nil when unknown).
func (s *Server) riskAsOfProto() *timestamppb.Timestamp {
	if s.riskAsOf == nil {
		return nil
	}
	t := s.riskAsOf()
	if t.IsZero() {
		// Never heard from risk: as old as it gets.
		return timestamppb.New(time.Unix(0, 0))
	}
	return timestamppb.New(t)
}

// New returns a Server.
func New(svc *compliance.Service) *Server { return &Server{svc: svc} }

// Register registers the three services on r.
func Register(r grpc.ServiceRegistrar, s *Server) {
	compliancev1.RegisterDeviceServiceServer(r, &deviceServer{Server: s})
	compliancev1.RegisterCompliancePolicyServiceServer(r, &policyServer{Server: s})
	compliancev1.RegisterComplianceServiceServer(r, &complianceServer{Server: s})
	compliancev1.RegisterDeviceIdentityServiceServer(r, &identityServer{Server: s})
}

// toStatus maps domain errors to status errors; context errors pass through as
// CANCELED / DEADLINE_EXCEEDED.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var inv *compliance.InvalidError
	switch {
	case errors.As(err, &inv):
		vs := make([]*errdetails.BadRequest_FieldViolation, len(inv.Violations))
		for i, v := range inv.Violations {
			vs[i] = apierr.FieldViolation(v.Field, v.Description)
		}
		return apierr.InvalidArgument("", vs...)
	case errors.Is(err, compliance.ErrDeviceNotFound):
		return apierr.New(codes.NotFound, "DEVICE_NOT_FOUND", err.Error())
	case errors.Is(err, compliance.ErrPolicyNotFound):
		return apierr.New(codes.NotFound, "POLICY_NOT_FOUND", err.Error())
	case errors.Is(err, compliance.ErrExclusionNotFound):
		return apierr.New(codes.NotFound, "EXCLUSION_NOT_FOUND", err.Error())
	case errors.Is(err, compliance.ErrDeviceExists):
		return apierr.New(codes.AlreadyExists, "DEVICE_ALREADY_EXISTS", err.Error())
	case errors.Is(err, compliance.ErrPolicyExists):
		return apierr.New(codes.AlreadyExists, "POLICY_ALREADY_EXISTS", err.Error())
	case errors.Is(err, compliance.ErrEtagMismatch):
		return apierr.New(codes.Aborted, "ETAG_MISMATCH", err.Error())
	case errors.Is(err, compliance.ErrDeviceRetired):
		return apierr.New(codes.FailedPrecondition, "DEVICE_RETIRED", err.Error())
	case errors.Is(err, compliance.ErrPermissionDenied):
		return apierr.New(codes.PermissionDenied, "FIELD_NOT_ALLOWED_FOR_ROLE", err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return apierr.FromContext(err)
	}
	if s := eventlog.ToStatus(err); s != err {
		return s
	}
	return status.Error(codes.Internal, err.Error())
}

func pageSize(n int32, def int) int {
	if n <= 0 {
		return def
	}
	return int(n)
}

func badToken() error {
	return apierr.InvalidArgument("", apierr.FieldViolation("page_token", "not a page token returned by this method"))
}

func caller(ctx context.Context) auth.Identity {
	id, _ := auth.FromContext(ctx)
	return id
}

// sensorOnly reports whether the caller acts as a sensor only (a device identity, or
// a sensor certificate without the policy-admin role). The service role does not
// widen it: no service's allowed_services names UpdateDevice, so a service role on a
// sensor certificate would otherwise make it an admin of every device.
func sensorOnly(id auth.Identity) bool {
	return id.Kind == auth.KindDevice || id.HasRole(commonv1.Role_ROLE_SENSOR) && !id.HasRole(commonv1.Role_ROLE_POLICY_ADMIN)
}

// checkOwnDevice lets a sensor-only caller touch only its own device: a device
// identity its own id; a static (non-device) sensor certificate no device at all.
func checkOwnDevice(ctx context.Context, deviceID string) error {
	if !sensorOnly(caller(ctx)) {
		return nil
	}
	return auth.RequireDevice(ctx, deviceID)
}

// ---- DeviceService ----

type deviceServer struct {
	compliancev1.UnsafeDeviceServiceServer
	*Server
}

var _ compliancev1.DeviceServiceServer = (*deviceServer)(nil)

func (s *deviceServer) EnrollDevice(ctx context.Context, req *compliancev1.EnrollDeviceRequest) (*compliancev1.EnrollDeviceResponse, error) {
	d, err := s.svc.EnrollDevice(ctx, deviceFromProto(req.GetDevice()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &compliancev1.EnrollDeviceResponse{Device: DeviceToProto(d)}, nil
}

func (s *deviceServer) GetDevice(ctx context.Context, req *compliancev1.GetDeviceRequest) (*compliancev1.GetDeviceResponse, error) {
	d, err := s.svc.GetDevice(ctx, req.GetDeviceId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &compliancev1.GetDeviceResponse{Device: DeviceToProto(d)}, nil
}

func (s *deviceServer) ListDevices(ctx context.Context, req *compliancev1.ListDevicesRequest) (*compliancev1.ListDevicesResponse, error) {
	tok, err := decodeToken(req.GetPageToken())
	if err != nil {
		return nil, badToken()
	}
	n := pageSize(req.GetPageSize(), defaultDevicePage)
	ds, err := s.svc.ListDevices(ctx, compliance.DeviceFilter{
		After: tok.After, Limit: n + 1, Platform: compliance.Platform(req.GetPlatform()),
		Group: req.GetGroup(), OwnerUserID: req.GetOwnerUserId(), IncludeRetired: req.GetIncludeRetired(),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &compliancev1.ListDevicesResponse{}
	if len(ds) > n {
		ds = ds[:n]
		resp.NextPageToken = encodeToken(pageToken{After: ds[n-1].ID})
	}
	for _, d := range ds {
		resp.Devices = append(resp.Devices, DeviceToProto(d))
	}
	return resp, nil
}

func (s *deviceServer) UpdateDevice(ctx context.Context, req *compliancev1.UpdateDeviceRequest) (*compliancev1.UpdateDeviceResponse, error) {
	id := caller(ctx)
	if err := checkOwnDevice(ctx, req.GetDevice().GetDeviceId()); err != nil {
		return nil, err
	}
	d, err := s.svc.UpdateDevice(ctx, compliance.DeviceUpdate{
		Device:     deviceFromProto(req.GetDevice()),
		Paths:      req.GetUpdateMask().GetPaths(),
		Etag:       req.GetDevice().GetEtag(),
		SensorOnly: sensorOnly(id),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &compliancev1.UpdateDeviceResponse{Device: DeviceToProto(d)}, nil
}

func (s *deviceServer) RetireDevice(ctx context.Context, req *compliancev1.RetireDeviceRequest) (*compliancev1.RetireDeviceResponse, error) {
	d, err := s.svc.RetireDevice(ctx, req.GetDeviceId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &compliancev1.RetireDeviceResponse{Device: DeviceToProto(d)}, nil
}

// ---- CompliancePolicyService ----

type policyServer struct {
	compliancev1.UnsafeCompliancePolicyServiceServer
	*Server
}

var _ compliancev1.CompliancePolicyServiceServer = (*policyServer)(nil)

func (s *policyServer) CreateCompliancePolicy(ctx context.Context, req *compliancev1.CreateCompliancePolicyRequest) (*compliancev1.CreateCompliancePolicyResponse, error) {
	defer s.policies.Notify()
	p, err := s.svc.CreatePolicy(ctx, policyFromProto(req.GetPolicy()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &compliancev1.CreateCompliancePolicyResponse{Policy: PolicyToProto(p)}, nil
}

func (s *policyServer) GetCompliancePolicy(ctx context.Context, req *compliancev1.GetCompliancePolicyRequest) (*compliancev1.GetCompliancePolicyResponse, error) {
	p, err := s.svc.GetPolicy(ctx, req.GetPolicyId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &compliancev1.GetCompliancePolicyResponse{Policy: PolicyToProto(p)}, nil
}

func (s *policyServer) ListCompliancePolicies(ctx context.Context, req *compliancev1.ListCompliancePoliciesRequest) (*compliancev1.ListCompliancePoliciesResponse, error) {
	tok, err := decodeToken(req.GetPageToken())
	if err != nil {
		return nil, badToken()
	}
	n := pageSize(req.GetPageSize(), defaultPolicyPage)
	ps, err := s.svc.ListPolicies(ctx, tok.After, n+1)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &compliancev1.ListCompliancePoliciesResponse{}
	if len(ps) > n {
		ps = ps[:n]
		resp.NextPageToken = encodeToken(pageToken{After: ps[n-1].ID})
	}
	for _, p := range ps {
		resp.Policies = append(resp.Policies, PolicyToProto(p))
	}
	return resp, nil
}

func (s *policyServer) UpdateCompliancePolicy(ctx context.Context, req *compliancev1.UpdateCompliancePolicyRequest) (*compliancev1.UpdateCompliancePolicyResponse, error) {
	defer s.policies.Notify()
	p, err := s.svc.UpdatePolicy(ctx, policyFromProto(req.GetPolicy()), req.GetUpdateMask().GetPaths(), req.GetPolicy().GetEtag())
	if err != nil {
		return nil, toStatus(err)
	}
	return &compliancev1.UpdateCompliancePolicyResponse{Policy: PolicyToProto(p)}, nil
}

func (s *policyServer) DeleteCompliancePolicy(ctx context.Context, req *compliancev1.DeleteCompliancePolicyRequest) (*compliancev1.DeleteCompliancePolicyResponse, error) {
	defer s.policies.Notify()
	if err := s.svc.DeletePolicy(ctx, req.GetPolicyId(), req.GetEtag()); err != nil {
		return nil, toStatus(err)
	}
	return &compliancev1.DeleteCompliancePolicyResponse{}, nil
}

// ---- ComplianceService ----

type complianceServer struct {
	compliancev1.UnsafeComplianceServiceServer
	*Server
}

var _ compliancev1.ComplianceServiceServer = (*complianceServer)(nil)

func (s *complianceServer) GetDeviceCompliance(ctx context.Context, req *compliancev1.GetDeviceComplianceRequest) (*compliancev1.GetDeviceComplianceResponse, error) {
	c, err := s.svc.GetDeviceCompliance(ctx, req.GetDeviceId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &compliancev1.GetDeviceComplianceResponse{DeviceCompliance: ComplianceToProto(c)}, nil
}

func (s *complianceServer) ListDeviceCompliance(ctx context.Context, req *compliancev1.ListDeviceComplianceRequest) (*compliancev1.ListDeviceComplianceResponse, error) {
	tok, err := decodeToken(req.GetPageToken())
	if err != nil {
		return nil, badToken()
	}
	n := pageSize(req.GetPageSize(), defaultCompliancePage)
	// Read before the page: every risk event applied by then is in what the page reads.
	riskAsOf := s.riskAsOfProto()
	cs, rev, err := s.svc.ListDeviceCompliance(ctx, compliance.ComplianceFilter{
		After: tok.After, Limit: n + 1, State: compliance.State(req.GetState()),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	// Every page reports the first page's revision: watching from it replays anything
	// that changed while the pages were read (events carry the full state).
	if req.GetPageToken() != "" {
		rev = tok.Revision
	}
	resp := &compliancev1.ListDeviceComplianceResponse{Revision: rev, RiskAsOf: riskAsOf}
	if len(cs) > n {
		cs = cs[:n]
		resp.NextPageToken = encodeToken(pageToken{After: cs[n-1].DeviceID, Revision: rev})
	}
	for _, c := range cs {
		resp.DeviceCompliances = append(resp.DeviceCompliances, ComplianceToProto(c))
	}
	return resp, nil
}

func (s *complianceServer) ExcludeDevice(ctx context.Context, req *compliancev1.ExcludeDeviceRequest) (*compliancev1.ExcludeDeviceResponse, error) {
	x, c, err := s.svc.ExcludeDevice(ctx, req.GetDeviceId(), req.GetReason(), fromTS(req.GetExpireTime()), caller(ctx).Subject)
	if err != nil {
		return nil, toStatus(err)
	}
	return &compliancev1.ExcludeDeviceResponse{Exclusion: ExclusionToProto(x), DeviceCompliance: ComplianceToProto(c)}, nil
}

func (s *complianceServer) RemoveExclusion(ctx context.Context, req *compliancev1.RemoveExclusionRequest) (*compliancev1.RemoveExclusionResponse, error) {
	x, c, err := s.svc.RemoveExclusion(ctx, req.GetDeviceId(), req.GetComment(), caller(ctx).Subject)
	if err != nil {
		return nil, toStatus(err)
	}
	return &compliancev1.RemoveExclusionResponse{Exclusion: ExclusionToProto(x), DeviceCompliance: ComplianceToProto(c)}, nil
}

func (s *complianceServer) ListExclusions(ctx context.Context, req *compliancev1.ListExclusionsRequest) (*compliancev1.ListExclusionsResponse, error) {
	tok, err := decodeToken(req.GetPageToken())
	if err != nil {
		return nil, badToken()
	}
	n := pageSize(req.GetPageSize(), defaultExclusionPage)
	f := compliance.ExclusionFilter{Limit: n + 1, DeviceID: req.GetDeviceId(), ActiveOnly: req.GetActiveOnly(), AfterID: tok.After}
	if tok.TimeNS != 0 {
		f.AfterTime = time.Unix(0, tok.TimeNS)
	}
	xs, err := s.svc.ListExclusions(ctx, f)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &compliancev1.ListExclusionsResponse{}
	if len(xs) > n {
		xs = xs[:n]
		last := xs[n-1]
		resp.NextPageToken = encodeToken(pageToken{After: last.ID, TimeNS: last.CreateTime.UnixNano()})
	}
	for _, x := range xs {
		resp.Exclusions = append(resp.Exclusions, ExclusionToProto(x))
	}
	return resp, nil
}

func (s *complianceServer) GetComplianceSettings(ctx context.Context, _ *compliancev1.GetComplianceSettingsRequest) (*compliancev1.GetComplianceSettingsResponse, error) {
	st, err := s.svc.GetSettings(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &compliancev1.GetComplianceSettingsResponse{Settings: SettingsToProto(st)}, nil
}

func (s *complianceServer) UpdateComplianceSettings(ctx context.Context, req *compliancev1.UpdateComplianceSettingsRequest) (*compliancev1.UpdateComplianceSettingsResponse, error) {
	st, err := s.svc.UpdateSettings(ctx, compliance.Settings{
		DevicesWithoutPolicyCompliant: req.GetSettings().GetDevicesWithoutPolicyCompliant(),
	}, req.GetUpdateMask().GetPaths(), req.GetSettings().GetEtag())
	if err != nil {
		return nil, toStatus(err)
	}
	return &compliancev1.UpdateComplianceSettingsResponse{Settings: SettingsToProto(st)}, nil
}

func (s *complianceServer) WatchComplianceEvents(req *compliancev1.WatchComplianceEventsRequest, stream grpc.ServerStreamingServer[compliancev1.WatchComplianceEventsResponse]) error {
	err := s.svc.Watch(stream.Context(), req.GetStartRevision(), func(e compliance.StoredEvent) error {
		ev, err := DecodeEvent(e)
		if err != nil {
			return status.Errorf(codes.Internal, "decode event %d: %v", e.Revision, err)
		}
		if d := req.GetDeviceId(); d != "" && ev.GetDeviceComplianceChanged().GetDeviceCompliance().GetDeviceId() != d &&
			ev.GetDeviceChanged().GetDevice().GetDeviceId() != d && ev.GetDeviceIdentityChanged().GetIdentity().GetDeviceId() != d {
			return nil // another device's: the next progress message carries the revision
		}
		return stream.Send(&compliancev1.WatchComplianceEventsResponse{Kind: &compliancev1.WatchComplianceEventsResponse_Event{Event: ev}, RiskAsOf: s.riskAsOfProto()})
	}, func(rev int64) error {
		return stream.Send(&compliancev1.WatchComplianceEventsResponse{Kind: &compliancev1.WatchComplianceEventsResponse_Progress{
			Progress: &commonv1.WatchProgress{Revision: rev, Time: timestamppb.Now()},
		}, RiskAsOf: s.riskAsOfProto()})
	})
	return toStatus(err)
}
