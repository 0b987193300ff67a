package riskgrpc_test

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/auth/authtest"
	"github.com/condaccess/condaccess/services/risk/riskgrpc"
	"github.com/condaccess/condaccess/services/risk/risktest"
)

// TestReporterFromIdentity: the stored reporter comes from how the caller was
// authenticated, never from the request's reporter field.
func TestReporterFromIdentity(t *testing.T) {
	ca := authtest.NewCA(t)
	srvCfg := ca.ServerConfig(t)
	h := risktest.StartWith(t, risktest.Options{Auth: &srvCfg, ClientAuth: ca.ClientConfig(t, "svc", commonv1.Role_ROLE_SERVICE)})
	sensor, _ := h.Dial(t, ca.ClientConfig(t, "siem-connector", commonv1.Role_ROLE_SENSOR))
	admin, _ := h.Dial(t, ca.ClientConfig(t, "ada", commonv1.Role_ROLE_SECOPS_ADMIN))
	dev := risktest.StartWith(t, risktest.Options{})
	devAsDevice := risktest.StartWith(t, risktest.Options{DevelopmentReporterIsDevice: true})
	forged := &riskv1.AlertReporter{Kind: riskv1.ReporterKind_REPORTER_KIND_DEVICE, Id: "dev-1"}
	tests := []struct {
		name   string
		client riskv1.RiskServiceClient
		forge  bool
		batch  bool
		want   *riskv1.AlertReporter
	}{
		{"static sensor certificate", sensor, false, false, &riskv1.AlertReporter{Kind: riskv1.ReporterKind_REPORTER_KIND_SENSOR, Id: "siem-connector"}},
		{"sensor forging a DEVICE reporter", sensor, true, false, &riskv1.AlertReporter{Kind: riskv1.ReporterKind_REPORTER_KIND_SENSOR, Id: "siem-connector"}},
		{"sensor batch forging a DEVICE reporter", sensor, true, true, &riskv1.AlertReporter{Kind: riskv1.ReporterKind_REPORTER_KIND_SENSOR, Id: "siem-connector"}},
		{"admin certificate", admin, false, false, &riskv1.AlertReporter{Kind: riskv1.ReporterKind_REPORTER_KIND_ADMIN, Id: "ada"}},
		{"development mode", dev.Client, true, false, &riskv1.AlertReporter{Kind: riskv1.ReporterKind_REPORTER_KIND_DEVELOPMENT, Id: auth.DevSubject}},
		{"development mode configured as the device", devAsDevice.Client, false, false, &riskv1.AlertReporter{Kind: riskv1.ReporterKind_REPORTER_KIND_DEVICE, Id: "dev-1"}},
	}
	// A service identity is not a reporter at all: no service's allowed_services
	// names ReportAlert.
	_, err := h.Client.ReportAlert(ctxT(t), &riskv1.ReportAlertRequest{Alert: newAlert("rep-svc", "dev-1", high)})
	wantCode(t, err, codes.PermissionDenied, "ROLE_NOT_ALLOWED")
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAlert("rep-"+string(rune('a'+i)), "dev-1", high)
			if tt.forge {
				a.Reporter = forged
			}
			ctx := ctxT(t)
			if tt.batch {
				if _, err := tt.client.ReportAlerts(ctx, &riskv1.ReportAlertsRequest{Alerts: []*riskv1.Alert{a}}); err != nil {
					t.Fatal(err)
				}
			} else if _, err := tt.client.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: a}); err != nil {
				t.Fatal(err)
			}
			reader := h.Client
			switch tt.client {
			case dev.Client:
				reader = dev.Client
			case devAsDevice.Client:
				reader = devAsDevice.Client
			}
			got, err := reader.GetAlert(ctx, &riskv1.GetAlertRequest{AlertId: a.GetAlertId()})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got.GetAlert().GetReporter(), protocmp.Transform()); diff != "" {
				t.Errorf("stored reporter (-want +got):\n%s", diff)
			}
		})
	}
}

// TestReporterSameAlertOtherReporter: a repeat of an alert id from another reporter is
// a conflict, not a silent repeat; the first reporter stays.
func TestReporterSameAlertOtherReporter(t *testing.T) {
	ca := authtest.NewCA(t)
	srvCfg := ca.ServerConfig(t)
	h := risktest.StartWith(t, risktest.Options{Auth: &srvCfg, ClientAuth: ca.ClientConfig(t, "svc", commonv1.Role_ROLE_SERVICE)})
	s1, _ := h.Dial(t, ca.ClientConfig(t, "sensor-1", commonv1.Role_ROLE_SENSOR))
	s2, _ := h.Dial(t, ca.ClientConfig(t, "sensor-2", commonv1.Role_ROLE_SENSOR))
	a := newAlert("same-1", "dev-1", high)
	report(t, s1, a)
	_, err := s1.ReportAlert(ctxT(t), &riskv1.ReportAlertRequest{Alert: a})
	wantCode(t, err, codes.OK, "")
	_, err = s2.ReportAlert(ctxT(t), &riskv1.ReportAlertRequest{Alert: a})
	wantCode(t, err, codes.AlreadyExists, "")
	got, err := h.Client.GetAlert(ctxT(t), &riskv1.GetAlertRequest{AlertId: "same-1"})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetAlert().GetReporter().GetId() != "sensor-1" {
		t.Errorf("reporter = %v, want sensor-1", got.GetAlert().GetReporter())
	}
}

// TestReporterDeviceCertificate: only a device identity (the auth layer's KindDevice,
// which it derives only from a certificate of the device CA) is the device itself; a
// role certificate is its role whatever URIs it carries (auth's TestDeviceIdentity
// shows a role-CA certificate with a device URI is not a device identity), and
// development mode is DEVELOPMENT unless configured to count as the device.
func TestReporterDeviceCertificate(t *testing.T) {
	sensor := []commonv1.Role{commonv1.Role_ROLE_SENSOR}
	tests := []struct {
		name        string
		id          auth.Identity
		devAsDevice bool
		want        riskv1.ReporterKind
		wantID      string
	}{
		{"device identity", auth.Identity{Kind: auth.KindDevice, ID: "dev-7", Subject: "spiffe://condaccess/device/dev-7", Roles: sensor}, false, riskv1.ReporterKind_REPORTER_KIND_DEVICE, "dev-7"},
		{"device identity of another device keeps its own id", auth.Identity{Kind: auth.KindDevice, ID: "dev-8", Subject: "spiffe://condaccess/device/dev-8", Roles: sensor}, false, riskv1.ReporterKind_REPORTER_KIND_DEVICE, "dev-8"},
		{"role certificate with the sensor role", auth.Identity{Kind: auth.KindRoleCertificate, Subject: "spiffe://condaccess/device/dev-7", Roles: sensor}, false, riskv1.ReporterKind_REPORTER_KIND_SENSOR, "spiffe://condaccess/device/dev-7"},
		{"admin certificate", auth.Identity{Kind: auth.KindRoleCertificate, Subject: "admin", Roles: []commonv1.Role{commonv1.Role_ROLE_SECOPS_ADMIN}}, false, riskv1.ReporterKind_REPORTER_KIND_ADMIN, "admin"},
		{"service identity", auth.Identity{Kind: auth.KindService, ID: "remediation", Subject: "remediation"}, false, riskv1.ReporterKind_REPORTER_KIND_SERVICE, "remediation"},
		{"development mode", auth.Identity{Kind: auth.KindDevelopment, Subject: "dev"}, false, riskv1.ReporterKind_REPORTER_KIND_DEVELOPMENT, "dev"},
		{"development mode counted as the device", auth.Identity{Kind: auth.KindDevelopment, Subject: "dev"}, true, riskv1.ReporterKind_REPORTER_KIND_DEVICE, "dev-7"},
		{"no identity", auth.Identity{}, false, riskv1.ReporterKind_REPORTER_KIND_UNSPECIFIED, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := auth.NewContext(context.Background(), tt.id)
			got := riskgrpc.ReporterOf(riskgrpc.New(riskgrpc.Config{DevelopmentReporterIsDevice: tt.devAsDevice}), ctx, "dev-7")
			if got.GetKind() != tt.want || got.GetId() != tt.wantID {
				t.Errorf("reporter = %v, want %v %q", got, tt.want, tt.wantID)
			}
		})
	}
}
