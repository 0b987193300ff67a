package remediationgrpc_test

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	"github.com/condaccess/condaccess/internal/auth/authtest"
	"github.com/condaccess/condaccess/internal/server"
	"github.com/condaccess/condaccess/services/remediation"
	"github.com/condaccess/condaccess/services/remediation/remediationgrpc"
	"github.com/condaccess/condaccess/services/remediation/remediationstore"
)

// TestConnectIdentityUnderMutualTLS: with mutual TLS, an agent may only connect as the
// device its device certificate names; no role certificate connects as a device,
// whatever its subject (the "dev" subject included).
func TestConnectIdentityUnderMutualTLS(t *testing.T) {
	ca := authtest.NewCA(t)
	dca := authtest.NewDeviceCA(t)
	st, err := remediationstore.Open(context.Background(), remediationstore.Options{Path: filepath.Join(t.TempDir(), "r.db"), Encode: remediationgrpc.EncodeEvent})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc := remediation.New(remediation.Config{Store: st})
	authCfg := ca.ServerConfig(t)
	authCfg.DeviceCAFile = dca.CertFile
	srv, err := server.New(server.Config{Name: "mtls", Auth: authCfg, GracefulStopTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	remediationgrpc.Register(srv.Registrar(), remediationgrpc.New(remediationgrpc.Config{Service: svc, Store: st}))
	lis := bufconn.Listen(1 << 20)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(context.Background()) })

	tests := []struct {
		name, cn, hello string
		device          bool // a device certificate for cn instead of a role certificate
		roles           []commonv1.Role
		want            codes.Code
	}{
		{"own device", "dev-1", "dev-1", true, nil, codes.OK},
		{"another device", "dev-1", "dev-2", true, nil, codes.PermissionDenied},
		{"role sensor whose subject is the device", "dev-1", "dev-1", false, []commonv1.Role{commonv1.Role_ROLE_SENSOR}, codes.PermissionDenied},
		{"subject dev", "dev", "dev-2", false, []commonv1.Role{commonv1.Role_ROLE_SENSOR}, codes.PermissionDenied},
		{"service role", "dev", "dev-2", false, []commonv1.Role{commonv1.Role_ROLE_SERVICE}, codes.PermissionDenied},
		{"not a sensor", "dev-1", "dev-1", false, []commonv1.Role{commonv1.Role_ROLE_READER}, codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc := ca.ClientConfig(t, tt.cn, tt.roles...)
			if tt.device {
				cc = dca.ClientConfig(t, ca, tt.cn)
			}
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
			stream, err := remediationv1.NewAgentServiceClient(conn).Connect(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// A stream the server refuses at once may end before the hello is sent:
			// Send then returns io.EOF and Recv carries the status.
			if err := stream.Send(&remediationv1.ConnectRequest{Kind: &remediationv1.ConnectRequest_Hello{Hello: &remediationv1.AgentHello{DeviceId: tt.hello}}}); err != nil && !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			m, err := stream.Recv()
			if got := status.Code(err); got != tt.want {
				t.Fatalf("code %v (%v), want %v", got, err, tt.want)
			}
			if tt.want == codes.OK && m.GetAck() == nil {
				t.Errorf("got %v, want an ack", m)
			}
		})
	}
}
