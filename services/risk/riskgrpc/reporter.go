package riskgrpc

import (
	"context"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/services/risk"
)

// reporterOf maps the authenticated caller of ReportAlert(s) to the reporter recorded
// on an alert for deviceID. It is the one place that turns an identity into a
// reporter kind; it reads only the typed identity the auth layer established from the
// verified connection, never the request:
//
//   - a device identity (a certificate from the device CA with the URI SAN
//     spiffe://condaccess/device/<id>) is the device <id> itself (DEVICE); a role
//     certificate carrying such a URI is not a device identity;
//   - any other verified certificate is SENSOR (role sensor: a static sensor such as
//     a SIEM connector), ADMIN (secops or policy admin) or SERVICE, in that order;
//   - development mode is DEVELOPMENT, or DEVICE for the alert's device when
//     Config.DevelopmentReporterIsDevice is set.
func (s *Server) reporterOf(ctx context.Context, deviceID string) risk.Reporter {
	id, _ := auth.FromContext(ctx)
	switch id.Kind {
	case auth.KindDevice:
		return risk.Reporter{Kind: risk.ReporterDevice, ID: id.ID}
	case auth.KindDevelopment:
		if s.devAsDevice {
			return risk.Reporter{Kind: risk.ReporterDevice, ID: deviceID}
		}
		return risk.Reporter{Kind: risk.ReporterDevelopment, ID: id.Subject}
	}
	switch {
	case id.HasRole(commonv1.Role_ROLE_SENSOR):
		return risk.Reporter{Kind: risk.ReporterSensor, ID: id.Subject}
	case id.HasRole(commonv1.Role_ROLE_SECOPS_ADMIN), id.HasRole(commonv1.Role_ROLE_POLICY_ADMIN):
		return risk.Reporter{Kind: risk.ReporterAdmin, ID: id.Subject}
	case id.HasRole(commonv1.Role_ROLE_SERVICE), id.Kind == auth.KindService:
		return risk.Reporter{Kind: risk.ReporterService, ID: id.Subject}
	}
	return risk.Reporter{Kind: risk.ReporterUnspecified, ID: id.Subject}
}
