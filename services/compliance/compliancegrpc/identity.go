package compliancegrpc

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/services/compliance"
)

// Error reasons of DeviceIdentityService.
const (
	ReasonEnrollmentTokenInvalid = "ENROLLMENT_TOKEN_INVALID"
	ReasonIdentityNotFound       = "DEVICE_IDENTITY_NOT_FOUND"
	ReasonIdentityRevoked        = "DEVICE_IDENTITY_REVOKED"
	ReasonNoDeviceCA             = "DEVICE_CA_NOT_CONFIGURED"
	// ReasonCertificateSuperseded: a renewal with a certificate issued before the
	// device's latest enrollment.
	ReasonCertificateSuperseded = auth.ReasonCertificateSuperseded
)

const defaultIdentityPage = 100

type identityServer struct {
	compliancev1.UnsafeDeviceIdentityServiceServer
	*Server
}

var _ compliancev1.DeviceIdentityServiceServer = (*identityServer)(nil)

func identityStatus(err error) error {
	switch {
	case errors.Is(err, compliance.ErrEnrollmentTokenInvalid):
		return apierr.New(codes.Unauthenticated, ReasonEnrollmentTokenInvalid, "the enrollment token is unknown, used or expired")
	case errors.Is(err, compliance.ErrIdentityNotFound):
		return apierr.New(codes.NotFound, ReasonIdentityNotFound, err.Error())
	case errors.Is(err, compliance.ErrIdentityRevoked):
		return apierr.New(codes.FailedPrecondition, ReasonIdentityRevoked, err.Error())
	case errors.Is(err, compliance.ErrNoDeviceCA):
		return apierr.New(codes.FailedPrecondition, ReasonNoDeviceCA, err.Error())
	}
	return toStatus(err)
}

func (s *identityServer) CreateEnrollmentToken(ctx context.Context, req *compliancev1.CreateEnrollmentTokenRequest) (*compliancev1.CreateEnrollmentTokenResponse, error) {
	tok, exp, err := s.svc.CreateEnrollmentToken(ctx, req.GetDeviceId(), req.GetTtl().AsDuration())
	if err != nil {
		return nil, identityStatus(err)
	}
	return &compliancev1.CreateEnrollmentTokenResponse{Token: tok, ExpireTime: timestamppb.New(exp)}, nil
}

func (s *identityServer) EnrollDeviceIdentity(ctx context.Context, req *compliancev1.EnrollDeviceIdentityRequest) (*compliancev1.EnrollDeviceIdentityResponse, error) {
	out, err := s.svc.EnrollDeviceIdentity(ctx, req.GetToken(), []byte(req.GetCsrPem()))
	if err != nil {
		return nil, identityStatus(err)
	}
	return &compliancev1.EnrollDeviceIdentityResponse{
		CertificatePem: string(out.CertPEM), CaBundlePem: string(out.CABundlePEM),
		ExpireTime: timestamppb.New(out.ExpireTime), DeviceId: out.DeviceID,
	}, nil
}

func (s *identityServer) RenewDeviceCertificate(ctx context.Context, req *compliancev1.RenewDeviceCertificateRequest) (*compliancev1.RenewDeviceCertificateResponse, error) {
	// Only a device renews, and only itself: the device comes from its certificate.
	id, _ := auth.FromContext(ctx)
	if id.Kind != auth.KindDevice {
		return nil, apierr.New(codes.PermissionDenied, auth.ReasonDeviceMismatch, "only a device certificate may renew (itself)")
	}
	out, err := s.svc.RenewDeviceCertificate(ctx, id.ID, id.Issued, []byte(req.GetCsrPem()))
	if errors.Is(err, compliance.ErrIdentityRevoked) {
		return nil, apierr.New(codes.Unauthenticated, auth.ReasonCertificateRevoked, err.Error())
	}
	if errors.Is(err, compliance.ErrCertificateSuperseded) {
		return nil, apierr.New(codes.Unauthenticated, ReasonCertificateSuperseded, err.Error())
	}
	if err != nil {
		return nil, identityStatus(err)
	}
	return &compliancev1.RenewDeviceCertificateResponse{
		CertificatePem: string(out.CertPEM), CaBundlePem: string(out.CABundlePEM),
		ExpireTime: timestamppb.New(out.ExpireTime), DeviceId: out.DeviceID,
	}, nil
}

func (s *identityServer) RevokeDeviceIdentity(ctx context.Context, req *compliancev1.RevokeDeviceIdentityRequest) (*compliancev1.RevokeDeviceIdentityResponse, error) {
	id, err := s.svc.RevokeDeviceIdentity(ctx, req.GetDeviceId(), req.GetReason())
	if err != nil {
		return nil, identityStatus(err)
	}
	return &compliancev1.RevokeDeviceIdentityResponse{Identity: IdentityToProto(id)}, nil
}

func (s *identityServer) ListDeviceIdentities(ctx context.Context, req *compliancev1.ListDeviceIdentitiesRequest) (*compliancev1.ListDeviceIdentitiesResponse, error) {
	tok, err := decodeToken(req.GetPageToken())
	if err != nil {
		return nil, badToken()
	}
	n := pageSize(req.GetPageSize(), defaultIdentityPage)
	ids, err := s.svc.ListDeviceIdentities(ctx, tok.After, n+1)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &compliancev1.ListDeviceIdentitiesResponse{}
	if len(ids) > n {
		ids = ids[:n]
		resp.NextPageToken = encodeToken(pageToken{After: ids[n-1].DeviceID})
	}
	for _, id := range ids {
		resp.Identities = append(resp.Identities, IdentityToProto(id))
	}
	return resp, nil
}

// NewIdentityServer returns the DeviceIdentityService handlers of s, for tests and
// fuzzing that call them directly with an identity in the context.
func NewIdentityServer(s *Server) compliancev1.DeviceIdentityServiceServer {
	return &identityServer{Server: s}
}
