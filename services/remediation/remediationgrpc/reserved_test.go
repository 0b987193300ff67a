package remediationgrpc_test

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/test/bufconn"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	"github.com/condaccess/condaccess/internal/auth/authtest"
	"github.com/condaccess/condaccess/internal/server"
	"github.com/condaccess/condaccess/services/remediation"
	"github.com/condaccess/condaccess/services/remediation/remediationgrpc"
	"github.com/condaccess/condaccess/services/remediation/remediationstore"
)

// TestReservedSubjectsCannotPassForTheAutomation: an admin certificate whose
// CommonName is the automation's or the system's name starts investigations and
// submits actions under its own, distinct name: its manual work never reads as
// automatic (started_by / requested_by "automation") or as the system's.
func TestReservedSubjectsCannotPassForTheAutomation(t *testing.T) {
	ca := authtest.NewCA(t)
	st, err := remediationstore.Open(context.Background(), remediationstore.Options{Path: filepath.Join(t.TempDir(), "r.db"), Encode: remediationgrpc.EncodeEvent})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc := remediation.New(remediation.Config{Store: st})
	srv, err := server.New(server.Config{Name: "reserved", Auth: ca.ServerConfig(t), GracefulStopTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	remediationgrpc.Register(srv.Registrar(), remediationgrpc.New(remediationgrpc.Config{Service: svc, Store: st}))
	lis := bufconn.Listen(1 << 20)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(context.Background()) })

	for i, cn := range []string{remediation.Automation, remediation.System, "Automation", "alice"} {
		t.Run(cn, func(t *testing.T) {
			cc := ca.ClientConfig(t, cn, commonv1.Role_ROLE_SECOPS_ADMIN)
			cc.ServerName = "localhost"
			opts, err := server.DialOptions(cc)
			if err != nil {
				t.Fatal(err)
			}
			conn, err := grpc.NewClient("passthrough:///bufconn", append(opts, grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))...)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c := remediationv1.NewRemediationServiceClient(conn)
			device := "dev-" + string(rune('a'+i))
			inv, err := c.StartInvestigation(ctx, &remediationv1.StartInvestigationRequest{DeviceId: device, Reason: "by hand"})
			if err != nil {
				t.Fatal(err)
			}
			act, err := c.SubmitAction(ctx, &remediationv1.SubmitActionRequest{DeviceId: device, Type: remediationv1.ActionType_ACTION_TYPE_RUN_SCAN})
			if err != nil {
				t.Fatal(err)
			}
			for field, got := range map[string]string{"started_by": inv.GetInvestigation().GetStartedBy(), "requested_by": act.GetAction().GetRequestedBy()} {
				if got == remediation.Automation || got == remediation.System || got == "" {
					t.Errorf("%s %q: a person's work recorded as the automation's or the system's", field, got)
				}
				if cn == "alice" && got != "alice" {
					t.Errorf("%s %q, want alice", field, got)
				}
			}
		})
	}
}
