package riskgrpc_test

import (
	"testing"

	"google.golang.org/grpc/codes"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/auth/authtest"
	"github.com/condaccess/condaccess/services/risk/risktest"
)

// TestResolveAlertInvestigationClaim: investigation_id says an automated
// investigation resolved the alert. A person (an admin certificate) cannot claim it
// (INVALID_ARGUMENT, the alert stays active); the remediation service can; an admin
// resolves without it.
func TestResolveAlertInvestigationClaim(t *testing.T) {
	ca := authtest.NewCA(t)
	srvCfg := ca.ServerConfig(t)
	h := risktest.StartWith(t, risktest.Options{Auth: &srvCfg, ClientAuth: ca.ClientConfig(t, "ada", commonv1.Role_ROLE_SECOPS_ADMIN, commonv1.Role_ROLE_READER)})
	sensor, _ := h.Dial(t, ca.ClientConfig(t, "siem", commonv1.Role_ROLE_SENSOR))
	cert, key := ca.IssueURIs(t, "condaccess-remediation", []string{auth.ServiceURI("remediation")}, "localhost")
	remediation, _ := h.Dial(t, authtestClient(ca, cert, key))
	riskSvcCert, riskSvcKey := ca.IssueURIs(t, "condaccess-access", []string{auth.ServiceURI("access")}, "localhost")
	access, _ := h.Dial(t, authtestClient(ca, riskSvcCert, riskSvcKey))
	tests := []struct {
		name   string
		client riskv1.RiskServiceClient
		invID  string
		code   codes.Code
	}{
		{"attack: an admin claims an automated investigation", h.Client, "inv-forged", codes.InvalidArgument},
		{"another service is not allowed to resolve at all", access, "inv-1", codes.PermissionDenied},
		{"the remediation service names its investigation", remediation, "inv-1", codes.OK},
		{"an admin resolves by hand", h.Client, "", codes.OK},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := "claim-" + string(rune('a'+i))
			if _, err := sensor.ReportAlert(ctxT(t), &riskv1.ReportAlertRequest{Alert: newAlert(id, "dev-1", high)}); err != nil {
				t.Fatal(err)
			}
			_, err := tt.client.ResolveAlert(ctxT(t), &riskv1.ResolveAlertRequest{AlertId: id,
				Classification: riskv1.AlertClassification_ALERT_CLASSIFICATION_TRUE_POSITIVE, InvestigationId: tt.invID})
			wantCode(t, err, tt.code, "")
			got, err := h.Client.GetAlert(ctxT(t), &riskv1.GetAlertRequest{AlertId: id})
			if err != nil {
				t.Fatal(err)
			}
			resolved := got.GetAlert().GetStatus() == riskv1.AlertStatus_ALERT_STATUS_RESOLVED
			if resolved != (tt.code == codes.OK) || got.GetAlert().GetInvestigationId() != map[bool]string{true: tt.invID}[tt.code == codes.OK] {
				t.Errorf("alert after the call: status %v, investigation %q", got.GetAlert().GetStatus(), got.GetAlert().GetInvestigationId())
			}
		})
	}
}

func authtestClient(ca *authtest.CA, cert, key string) auth.ClientConfig {
	return auth.ClientConfig{CAFile: ca.CertFile, CertFile: cert, KeyFile: key}
}
