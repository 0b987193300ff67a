package riskgrpc

import (
	"context"
	"crypto/x509"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/services/risk"
)

// DeviceURIPrefix prefixes the URI SAN of a device identity certificate:
// spiffe://condaccess/device/<device_id>.
const DeviceURIPrefix = "spiffe://condaccess/device/"

// reporterOf maps the authenticated caller of ReportAlert(s) to the reporter recorded
// on an alert for deviceID. It is the one place that turns an identity into a
// reporter kind; it never reads the request, only the verified connection:
//
//   - a verified client certificate with a spiffe://condaccess/device/<id> URI SAN is
//     the device <id> itself (DEVICE);
//   - any other verified certificate is SENSOR (role sensor: a static sensor such as
//     a SIEM connector), ADMIN (secops or policy admin) or SERVICE, in that order;
//   - no verified certificate is development mode: DEVELOPMENT, or DEVICE for the
//     alert's device when Config.DevelopmentReporterIsDevice is set.
func (s *Server) reporterOf(ctx context.Context, deviceID string) risk.Reporter {
	id, _ := auth.FromContext(ctx)
	cert := verifiedPeerCert(ctx)
	if cert == nil {
		if s.devAsDevice {
			return risk.Reporter{Kind: risk.ReporterDevice, ID: deviceID}
		}
		return risk.Reporter{Kind: risk.ReporterDevelopment, ID: id.Subject}
	}
	for _, u := range cert.URIs {
		if dev, ok := strings.CutPrefix(u.String(), DeviceURIPrefix); ok && dev != "" {
			return risk.Reporter{Kind: risk.ReporterDevice, ID: dev}
		}
	}
	switch {
	case id.HasRole(commonv1.Role_ROLE_SENSOR):
		return risk.Reporter{Kind: risk.ReporterSensor, ID: id.Subject}
	case id.HasRole(commonv1.Role_ROLE_SECOPS_ADMIN), id.HasRole(commonv1.Role_ROLE_POLICY_ADMIN):
		return risk.Reporter{Kind: risk.ReporterAdmin, ID: id.Subject}
	case id.HasRole(commonv1.Role_ROLE_SERVICE):
		return risk.Reporter{Kind: risk.ReporterService, ID: id.Subject}
	}
	return risk.Reporter{Kind: risk.ReporterUnspecified, ID: id.Subject}
}

// verifiedPeerCert returns the caller's client certificate when the TLS handshake
// verified it, nil otherwise.
func verifiedPeerCert(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return info.State.VerifiedChains[0][0]
}
