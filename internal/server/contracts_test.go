package server_test

import (
	"context"
	"net"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/server"
)

// TestContractValidation proves, through the production interceptor chain over bufconn,
// that the buf.validate rules of the real contracts reject bad input with
// INVALID_ARGUMENT and a BadRequest field violation naming the field, before any
// handler runs (the registered handlers are the Unimplemented ones: reaching them
// would answer UNIMPLEMENTED).
func TestContractValidation(t *testing.T) {
	srv, err := server.New(server.Config{Name: "test", Auth: auth.Config{Insecure: true}})
	if err != nil {
		t.Fatal(err)
	}
	riskv1.RegisterRiskServiceServer(srv.Registrar(), riskv1.UnimplementedRiskServiceServer{})
	compliancev1.RegisterCompliancePolicyServiceServer(srv.Registrar(), compliancev1.UnimplementedCompliancePolicyServiceServer{})
	accessv1.RegisterConditionalAccessPolicyServiceServer(srv.Registrar(), accessv1.UnimplementedConditionalAccessPolicyServiceServer{})
	lis := bufconn.Listen(1 << 20)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(context.Background()) })
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx := context.Background()

	tests := []struct {
		name       string
		call       func() error
		wantCode   codes.Code
		wantFields []string
	}{
		{
			name: "empty device_id",
			call: func() error {
				_, err := riskv1.NewRiskServiceClient(conn).GetDeviceRisk(ctx, &riskv1.GetDeviceRiskRequest{DeviceId: ""})
				return err
			},
			wantCode:   codes.InvalidArgument,
			wantFields: []string{"device_id"},
		},
		{
			name: "alert without severity and title",
			call: func() error {
				_, err := riskv1.NewRiskServiceClient(conn).ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{AlertId: "a-1", DeviceId: "dev-1"}})
				return err
			},
			wantCode:   codes.InvalidArgument,
			wantFields: []string{"alert.severity", "alert.title"},
		},
		{
			name: "malformed minimum OS version",
			call: func() error {
				_, err := compliancev1.NewCompliancePolicyServiceClient(conn).CreateCompliancePolicy(ctx, &compliancev1.CreateCompliancePolicyRequest{
					Policy: &compliancev1.CompliancePolicy{PolicyId: "p", DisplayName: "P", MinOsVersion: "ten", Assignment: &compliancev1.PolicyAssignment{AllDevices: true}},
				})
				return err
			},
			wantCode:   codes.InvalidArgument,
			wantFields: []string{"policy.min_os_version"},
		},
		{
			name: "policy with block and a requirement",
			call: func() error {
				_, err := accessv1.NewConditionalAccessPolicyServiceClient(conn).CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: &accessv1.ConditionalAccessPolicy{
					PolicyId: "p", DisplayName: "P", State: accessv1.PolicyState_POLICY_STATE_ENABLED,
					Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{All: true},
					GrantControls: &accessv1.GrantControls{Block: true, Require: []accessv1.GrantControl{accessv1.GrantControl_GRANT_CONTROL_MFA}},
				}})
				return err
			},
			wantCode:   codes.InvalidArgument,
			wantFields: []string{"policy"},
		},
		{
			name: "valid request reaches the handler",
			call: func() error {
				_, err := riskv1.NewRiskServiceClient(conn).GetDeviceRisk(ctx, &riskv1.GetDeviceRiskRequest{DeviceId: "dev-1"})
				return err
			},
			wantCode: codes.Unimplemented,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if got := status.Code(err); got != tt.wantCode {
				t.Fatalf("code = %v, want %v (err %v)", got, tt.wantCode, err)
			}
			var gotFields []string
			for _, v := range apierr.Violations(err) {
				gotFields = append(gotFields, v.GetField())
			}
			if diff := cmp.Diff(tt.wantFields, gotFields); diff != "" {
				t.Errorf("field violations (-want +got):\n%s", diff)
			}
		})
	}
}
