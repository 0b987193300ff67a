package auth_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"github.com/condaccess/condaccess/internal/devca"
	"math/big"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/auth/authtest"
	"github.com/condaccess/condaccess/internal/server/servertest"
)

func TestRoleNames(t *testing.T) {
	for _, r := range auth.AllRoles() {
		got, ok := auth.ParseRole(auth.RoleName(r))
		if !ok || got != r {
			t.Errorf("ParseRole(RoleName(%v)) = %v, %v", r, got, ok)
		}
	}
	if auth.RoleURI(commonv1.Role_ROLE_SECOPS_ADMIN) != "spiffe://condaccess/role/secops-admin" {
		t.Errorf("RoleURI = %q", auth.RoleURI(commonv1.Role_ROLE_SECOPS_ADMIN))
	}
	for _, bad := range []string{"", "unspecified", "secops_admin", "root", "READER"} {
		if _, ok := auth.ParseRole(bad); ok {
			t.Errorf("ParseRole(%q) accepted", bad)
		}
	}
}

func TestCheckListenAddr(t *testing.T) {
	tlsCfg := auth.Config{CertFile: "c", KeyFile: "k", ClientCAFile: "ca"}
	tests := []struct {
		name    string
		addr    string
		cfg     auth.Config
		wantErr string
	}{
		{"insecure loopback v4", "127.0.0.1:8080", auth.Config{Insecure: true}, ""},
		{"insecure loopback v6", "[::1]:8080", auth.Config{Insecure: true}, ""},
		{"insecure localhost", "localhost:8080", auth.Config{Insecure: true}, ""},
		{"insecure all interfaces", ":8080", auth.Config{Insecure: true}, "only on a loopback address"},
		{"insecure 0.0.0.0", "0.0.0.0:8080", auth.Config{Insecure: true}, "only on a loopback address"},
		{"insecure public ip", "10.0.0.5:8080", auth.Config{Insecure: true}, "only on a loopback address"},
		{"tls anywhere", ":8080", tlsCfg, ""},
		{"nothing configured", "127.0.0.1:8080", auth.Config{}, "TLS is not configured"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := auth.CheckListenAddr(tt.addr, tt.cfg)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("err = %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
			}
		})
	}
}

func parseCert(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// session puts a console session with roles in ctx, as the HTTP face does.
func session(ctx context.Context, roles ...commonv1.Role) context.Context {
	return auth.NewContext(ctx, auth.Identity{Kind: auth.KindConsoleSession, Subject: "oidc:alice", ID: "alice", Roles: roles})
}

func TestAuthorize(t *testing.T) {
	ca := authtest.NewCA(t)
	servertest.File()
	peerCtx := func(cn string, roles ...commonv1.Role) context.Context {
		cert, _ := ca.Issue(t, cn, roles)
		c := parseCert(t, cert)
		return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{
			State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c}}},
		}})
	}
	uriCtx := func(cn string, uris ...string) context.Context {
		cert, _ := ca.IssueURIs(t, cn, uris)
		c := parseCert(t, cert)
		return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{
			State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c}}},
		}})
	}
	mtls := auth.Config{ExtraMethodRoles: map[string][]commonv1.Role{
		"/envoy.service.auth.v3.Authorization/Check": {commonv1.Role_ROLE_ENFORCEMENT_POINT},
		servertest.MethodInternal:                    {commonv1.Role_ROLE_SENSOR},
	}}
	tests := []struct {
		name       string
		cfg        auth.Config
		ctx        context.Context
		method     string
		want       codes.Code
		wantReason string
	}{
		{"reader allowed", mtls, peerCtx("r", commonv1.Role_ROLE_READER), servertest.MethodEcho, codes.OK, ""},
		{"sensor denied", mtls, peerCtx("s", commonv1.Role_ROLE_SENSOR), servertest.MethodEcho, codes.PermissionDenied, auth.ReasonRoleNotAllowed},
		{"second of several roles", mtls, peerCtx("p", commonv1.Role_ROLE_READER, commonv1.Role_ROLE_POLICY_ADMIN), servertest.MethodAdmin, codes.OK, ""},
		{"service role is no bypass", mtls, peerCtx("svc", commonv1.Role_ROLE_SERVICE), servertest.MethodAdmin, codes.PermissionDenied, auth.ReasonRoleNotAllowed},
		{"service identity in allowed_services", mtls, uriCtx("risk", auth.ServiceURI("risk")), servertest.MethodInternal, codes.OK, ""},
		{"service identity not in allowed_services", mtls, uriCtx("access", auth.ServiceURI("access")), servertest.MethodInternal, codes.PermissionDenied, auth.ReasonRoleNotAllowed},
		{"service identity outside its contract", mtls, uriCtx("risk", auth.ServiceURI("risk")), servertest.MethodAdmin, codes.PermissionDenied, auth.ReasonRoleNotAllowed},
		{"unknown service name", mtls, uriCtx("x", auth.ServiceURI("rsik")), servertest.MethodInternal, codes.PermissionDenied, auth.ReasonRoleNotAllowed},
		{"device URI from the role CA is no device", mtls, uriCtx("dev-1", auth.DeviceURI("dev-1")), servertest.MethodInternal, codes.PermissionDenied, auth.ReasonRoleNotAllowed},
		{"no option: reader denied", mtls, peerCtx("r", commonv1.Role_ROLE_READER), servertest.MethodInternal, codes.PermissionDenied, auth.ReasonRoleNotAllowed},
		{"no option: extra role", mtls, peerCtx("s", commonv1.Role_ROLE_SENSOR), servertest.MethodInternal, codes.OK, ""},
		{"no roles in cert", mtls, peerCtx("nobody"), servertest.MethodEcho, codes.PermissionDenied, auth.ReasonRoleNotAllowed},
		{"unknown method denied", mtls, peerCtx("r", commonv1.Role_ROLE_READER), "/x.v1.X/Y", codes.PermissionDenied, auth.ReasonRoleNotAllowed},
		{"unknown method extra", mtls, peerCtx("e", commonv1.Role_ROLE_ENFORCEMENT_POINT), "/envoy.service.auth.v3.Authorization/Check", codes.OK, ""},
		{"unknown method extra wrong role", mtls, peerCtx("r", commonv1.Role_ROLE_READER), "/envoy.service.auth.v3.Authorization/Check", codes.PermissionDenied, auth.ReasonRoleNotAllowed},
		{"health open", mtls, context.Background(), "/grpc.health.v1.Health/Check", codes.OK, ""},
		{"reflection open", mtls, peerCtx("nobody"), "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", codes.OK, ""},
		{"no peer", mtls, context.Background(), servertest.MethodEcho, codes.Unauthenticated, auth.ReasonUnauthenticated},
		{"insecure dev", auth.Config{Insecure: true}, context.Background(), servertest.MethodInternal, codes.OK, ""},
		{"console session with the role", mtls, session(context.Background(), commonv1.Role_ROLE_READER), servertest.MethodEcho, codes.OK, ""},
		{"console session without the role", mtls, session(context.Background(), commonv1.Role_ROLE_READER), servertest.MethodAdmin, codes.PermissionDenied, auth.ReasonRoleNotAllowed},
		{"console session with no role", mtls, session(context.Background()), servertest.MethodEcho, codes.PermissionDenied, auth.ReasonRoleNotAllowed},
		{"another kind of identity in the context is not believed", mtls,
			auth.NewContext(context.Background(), auth.Identity{Kind: auth.KindRoleCertificate, Subject: "x", Roles: []commonv1.Role{commonv1.Role_ROLE_READER}}),
			servertest.MethodEcho, codes.Unauthenticated, auth.ReasonUnauthenticated},
		{"a certificate wins over a console session", mtls, session(peerCtx("r", commonv1.Role_ROLE_READER), commonv1.Role_ROLE_POLICY_ADMIN, commonv1.Role_ROLE_SECOPS_ADMIN),
			servertest.MethodAdmin, codes.PermissionDenied, auth.ReasonRoleNotAllowed},
		{"end user's blocked status open", mtls, context.Background(), "/condaccess.access.v1.AccessService/GetBlockedStatus", codes.OK, ""},
		{"end user's blocked status watch open", mtls, context.Background(), "/condaccess.access.v1.AccessService/WatchBlockedStatus", codes.OK, ""},
		{"the rest of AccessService is not", mtls, context.Background(), "/condaccess.access.v1.AccessService/ListSignIns", codes.Unauthenticated, auth.ReasonUnauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := auth.NewAuthorizer(tt.cfg).Authorize(tt.ctx, tt.method)
			if got := status.Code(err); got != tt.want {
				t.Fatalf("code = %v, want %v (%v)", got, tt.want, err)
			}
			if got := apierr.Reason(err); got != tt.wantReason {
				t.Errorf("reason = %q, want %q", got, tt.wantReason)
			}
		})
	}

	// The denial names the allowed roles.
	_, err := auth.NewAuthorizer(mtls).Authorize(peerCtx("s", commonv1.Role_ROLE_SENSOR), servertest.MethodAdmin)
	if got, want := apierr.Metadata(err)["allowed_roles"], "ROLE_SECOPS_ADMIN,ROLE_POLICY_ADMIN"; got != want {
		t.Errorf("allowed_roles = %q, want %q", got, want)
	}

	// The identity reaches the handler.
	ctx, err := auth.NewAuthorizer(mtls).Authorize(peerCtx("agent-7", commonv1.Role_ROLE_SENSOR, commonv1.Role_ROLE_READER), servertest.MethodEcho)
	if err != nil {
		t.Fatal(err)
	}
	id, ok := auth.FromContext(ctx)
	want := auth.Identity{Subject: "agent-7", Roles: []commonv1.Role{commonv1.Role_ROLE_SENSOR, commonv1.Role_ROLE_READER}, Kind: auth.KindRoleCertificate}
	if diff := cmp.Diff(want, id); !ok || diff != "" {
		t.Errorf("identity (-want +got):\n%s", diff)
	}
	ctx, _ = auth.NewAuthorizer(auth.Config{Insecure: true}).Authorize(context.Background(), servertest.MethodEcho)
	if id, _ := auth.FromContext(ctx); id.Subject != auth.DevSubject || !slices.Equal(id.Roles, auth.AllRoles()) {
		t.Errorf("dev identity = %+v", id)
	}
}

// TestMutualTLS runs a real TLS server on loopback and calls it with certificates
// carrying different roles.
// startTLSServer serves servertest and health with mutual TLS and the auth
// interceptors of cfg on a loopback port, until the test ends; it returns the address.
func startTLSServer(t *testing.T, cfg auth.Config) string {
	t.Helper()
	creds, err := auth.ServerTLS(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(creds),
		grpc.ChainUnaryInterceptor(auth.UnaryServerInterceptor(cfg)),
		grpc.ChainStreamInterceptor(auth.StreamServerInterceptor(cfg)))
	servertest.Register(srv)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// dialTLS returns a new client connection (its own handshake) to addr with cc's
// credentials, closed when the test ends.
func dialTLS(t *testing.T, addr string, cc auth.ClientConfig) *grpc.ClientConn {
	t.Helper()
	opt, err := auth.DialOption(cc)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func TestMutualTLS(t *testing.T) {
	ca := authtest.NewCA(t)
	cfg := ca.ServerConfig(t)
	addr := startTLSServer(t, cfg)
	dial := func(t *testing.T, cc auth.ClientConfig) *grpc.ClientConn { return dialTLS(t, addr, cc) }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	reader := dial(t, ca.ClientConfig(t, "reader-1", commonv1.Role_ROLE_READER))
	resp, err := servertest.Call(ctx, reader, servertest.MethodEcho, servertest.NewRequest("d1", ""))
	if err != nil {
		t.Fatalf("reader Echo: %v", err)
	}
	if servertest.DeviceID(resp) != "d1" {
		t.Errorf("echo = %q", servertest.DeviceID(resp))
	}
	_, err = servertest.Call(ctx, reader, servertest.MethodAdmin, servertest.NewRequest("d1", ""))
	if status.Code(err) != codes.PermissionDenied || apierr.Reason(err) != auth.ReasonRoleNotAllowed {
		t.Errorf("reader Admin: %v", err)
	}
	stream, err := reader.NewStream(ctx, servertest.StreamDesc, servertest.MethodStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg(servertest.NewRequest("d2", "")); err != nil {
		t.Fatal(err)
	}
	got := servertest.NewResponse()
	if err := stream.RecvMsg(got); err != nil || servertest.DeviceID(got) != "d2" {
		t.Errorf("reader Stream: %v %v", err, got)
	}
	_ = stream.CloseSend()

	sensor := dial(t, ca.ClientConfig(t, "sensor-1", commonv1.Role_ROLE_SENSOR))
	stream, err = sensor.NewStream(ctx, servertest.StreamDesc, servertest.MethodStream)
	if err == nil {
		err = stream.RecvMsg(servertest.NewResponse())
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("sensor Stream: %v", err)
	}
	if _, err := healthpb.NewHealthClient(sensor).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("sensor health: %v", err)
	}

	svc := dial(t, ca.ClientConfig(t, "risk", commonv1.Role_ROLE_SERVICE)) // legacy role/service: every service
	if _, err := servertest.Call(ctx, svc, servertest.MethodInternal, servertest.NewRequest("d1", "")); err != nil {
		t.Errorf("service Internal: %v", err)
	}

	// A certificate from another CA fails the handshake.
	other := authtest.NewCA(t)
	cc := other.ClientConfig(t, "intruder", commonv1.Role_ROLE_SERVICE)
	cc.CAFile = ca.CertFile
	_, err = servertest.Call(ctx, dial(t, cc), servertest.MethodEcho, servertest.NewRequest("d1", ""))
	if status.Code(err) != codes.Unavailable {
		t.Errorf("foreign client cert: %v, want Unavailable", err)
	}
}

func TestServerTLSErrors(t *testing.T) {
	if _, err := auth.ServerTLS(auth.Config{}); err == nil {
		t.Error("ServerTLS without files succeeded")
	}
	if _, err := auth.ServerTLS(auth.Config{CertFile: "/nonexistent", KeyFile: "/nonexistent", ClientCAFile: "/nonexistent"}); err == nil {
		t.Error("ServerTLS with missing files succeeded")
	}
	if _, err := auth.DialOption(auth.ClientConfig{}); err == nil {
		t.Error("DialOption without files succeeded")
	}
	if _, err := auth.DialOption(auth.ClientConfig{Insecure: true}); err != nil {
		t.Errorf("insecure DialOption: %v", err)
	}
}

// TestDeviceIdentity: a device identity comes only from the device CA, with one
// device URI, unrevoked and unexpired; it has the sensor role for itself only.
func TestDeviceIdentity(t *testing.T) {
	roleCA := authtest.NewCA(t)
	dca := authtest.NewDeviceCA(t)
	rev := auth.NewRevocations()
	cfg := auth.Config{DeviceCAFile: dca.CertFile, Revocations: rev}
	servertest.File()
	chainCtx := func(leaf *x509.Certificate, root *x509.Certificate) context.Context {
		return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{
			State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf, root}}},
		}})
	}
	issue := func(id string, now time.Time, ttl time.Duration) *x509.Certificate {
		_, csrPEM, err := devca.NewCSR()
		if err != nil {
			t.Fatal(err)
		}
		pub, err := devca.ParseCSR(csrPEM)
		if err != nil {
			t.Fatal(err)
		}
		iss, err := dca.CA.Issue(pub, id, now, ttl)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(iss.CertPEM)
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	devRoot := dca.CA.Certificate()
	roleRoot := parseCert(t, roleCA.CertFile)
	good := issue("dev-1", time.Now(), time.Hour)
	expired := issue("dev-1", time.Now().Add(-2*time.Hour), time.Hour)
	revoked := issue("dev-9", time.Now().Add(-time.Minute), time.Hour)
	rev.Revoke("dev-9", time.Now())
	roleWithDeviceURI, _ := roleCA.IssueURIs(t, "dev-1", []string{auth.DeviceURI("dev-1"), auth.RoleURI(commonv1.Role_ROLE_SENSOR)})

	tests := []struct {
		name   string
		ctx    context.Context
		method string
		code   codes.Code
		reason string
		kind   auth.Kind
	}{
		{"device sensor call", chainCtx(good, devRoot), servertest.MethodInternal, codes.PermissionDenied, auth.ReasonRoleNotAllowed, auth.KindDevice},
		{"device has no reader role", chainCtx(good, devRoot), servertest.MethodEcho, codes.PermissionDenied, auth.ReasonRoleNotAllowed, auth.KindDevice},
		{"expired device certificate", chainCtx(expired, devRoot), servertest.MethodEcho, codes.Unauthenticated, auth.ReasonCertificateExpired, auth.KindUnknown},
		{"revoked device certificate", chainCtx(revoked, devRoot), servertest.MethodEcho, codes.Unauthenticated, auth.ReasonCertificateRevoked, auth.KindUnknown},
		{"revoked device, open method", chainCtx(revoked, devRoot), "/grpc.health.v1.Health/Check", codes.OK, "", auth.KindUnknown},
		{"role CA certificate with a device URI", chainCtx(parseCert(t, roleWithDeviceURI), roleRoot), servertest.MethodEcho, codes.PermissionDenied, auth.ReasonRoleNotAllowed, auth.KindRoleCertificate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, err := auth.NewAuthorizer(cfg).Authorize(tt.ctx, tt.method)
			if status.Code(err) != tt.code || apierr.Reason(err) != tt.reason {
				t.Fatalf("Authorize = %v (reason %q), want %v %q", err, apierr.Reason(err), tt.code, tt.reason)
			}
			id, _ := auth.FromContext(ctx)
			if id.Kind != tt.kind {
				t.Errorf("kind %v, want %v", id.Kind, tt.kind)
			}
			if tt.kind == auth.KindDevice && (id.ID != "dev-1" || !id.HasRole(commonv1.Role_ROLE_SENSOR) || len(id.Roles) != 1) {
				t.Errorf("device identity %+v, want dev-1 with the sensor role only", id)
			}
		})
	}
	// A device's open stream ends when its identity is revoked.
	cutRev := auth.NewRevocations()
	cutAuthz := auth.NewAuthorizer(auth.Config{DeviceCAFile: dca.CertFile, Revocations: cutRev})
	sctx, err := cutAuthz.Authorize(chainCtx(good, devRoot), servertest.MethodInternal)
	if status.Code(err) != codes.PermissionDenied { // the identity is set even when the role is refused
		t.Fatalf("Authorize = %v", err)
	}
	if id, _ := auth.FromContext(sctx); id.Kind != auth.KindDevice {
		t.Fatalf("no device identity in %v", id)
	}
	streamDone := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		streamDone <- cutAuthz.DeviceStreamInterceptor()(nil, &fakeStream{ctx: sctx}, &grpc.StreamServerInfo{FullMethod: "/x"},
			func(_ any, ss grpc.ServerStream) error {
				close(started)
				<-ss.Context().Done()
				return ss.Context().Err()
			})
	}()
	<-started
	cutRev.Revoke("dev-1", time.Now())
	select {
	case err := <-streamDone:
		if status.Code(err) != codes.Unauthenticated || apierr.Reason(err) != auth.ReasonCertificateRevoked {
			t.Errorf("stream after revocation = %v, want UNAUTHENTICATED CERTIFICATE_REVOKED", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("the device's stream was not cut at the revocation")
	}

	// A set whose feed is not current refuses every device (fail closed).
	stale := auth.NewRevocations()
	stale.SetCurrent(false)
	_, err = auth.NewAuthorizer(auth.Config{DeviceCAFile: dca.CertFile, Revocations: stale}).Authorize(chainCtx(good, devRoot), servertest.MethodEcho)
	if status.Code(err) != codes.Unauthenticated || apierr.Reason(err) != auth.ReasonRevocationStatusUnknown {
		t.Errorf("device with revocations not current = %v, want UNAUTHENTICATED REVOCATION_STATUS_UNKNOWN", err)
	}
	stale.SetCurrent(true)
	if _, err := auth.NewAuthorizer(auth.Config{DeviceCAFile: dca.CertFile, Revocations: stale}).Authorize(chainCtx(good, devRoot), "/grpc.health.v1.Health/Check"); err != nil {
		t.Errorf("device once current: %v", err)
	}

	// A device acts only for itself.
	ctx := auth.NewContext(context.Background(), auth.Identity{Kind: auth.KindDevice, ID: "dev-1", Roles: []commonv1.Role{commonv1.Role_ROLE_SENSOR}})
	if err := auth.CheckDevice(ctx, "dev-1"); err != nil {
		t.Errorf("CheckDevice own: %v", err)
	}
	if err := auth.CheckDevice(ctx, "dev-2"); status.Code(err) != codes.PermissionDenied || apierr.Reason(err) != auth.ReasonDeviceMismatch {
		t.Errorf("CheckDevice other = %v, want PERMISSION_DENIED DEVICE_MISMATCH", err)
	}
	role := auth.NewContext(context.Background(), auth.Identity{Kind: auth.KindRoleCertificate, Subject: "dev-2", Roles: []commonv1.Role{commonv1.Role_ROLE_SENSOR}})
	if err := auth.RequireDevice(role, "dev-2"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("RequireDevice by a role certificate named dev-2 = %v, want PERMISSION_DENIED", err)
	}

	// DeviceVerifier: the same rules for a forwarded chain.
	pool := x509.NewCertPool()
	pool.AddCert(devRoot)
	v := auth.DeviceVerifier{Roots: pool, Revocations: rev}
	for _, tt := range []struct {
		name string
		cert *x509.Certificate
		want error
	}{
		{"good", good, nil},
		{"expired", expired, auth.ErrCertificateExpired},
		{"revoked", revoked, auth.ErrCertificateRevoked},
		{"role CA certificate", parseCert(t, roleWithDeviceURI), auth.ErrNotDeviceCertificate},
	} {
		id, err := v.Verify([]*x509.Certificate{tt.cert}, time.Now())
		if !errors.Is(err, tt.want) || tt.want == nil && id != "dev-1" {
			t.Errorf("%s: Verify = %q, %v; want %v", tt.name, id, err, tt.want)
		}
	}
	// A forwarded certificate is refused, good or not, while the revocation feed is
	// not current: the edge fails closed as the gRPC listener does.
	unknown := auth.NewRevocations()
	unknown.SetCurrent(false)
	if id, err := (&auth.DeviceVerifier{Roots: pool, Revocations: unknown}).Verify([]*x509.Certificate{good}, time.Now()); !errors.Is(err, auth.ErrRevocationStatusUnknown) {
		t.Errorf("feed not current: Verify = %q, %v; want ErrRevocationStatusUnknown", id, err)
	}
}

// TestRevocations: a revocation refuses every certificate issued up to it and ends
// the device's watches; a later enrollment is accepted, the old certificates stay
// refused.
func TestRevocations(t *testing.T) {
	r := auth.NewRevocations()
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	ch, stop := r.Watch("d")
	defer stop()
	r.Revoke("d", t0)
	select {
	case <-ch:
	default:
		t.Error("the watch did not end at the revocation")
	}
	for _, tt := range []struct {
		issued time.Time
		want   bool
	}{{t0.Add(-time.Hour), true}, {t0, true}, {t0.Add(time.Second), false}} {
		if got := r.Revoked("d", tt.issued); got != tt.want {
			t.Errorf("Revoked(issued %v) = %v, want %v", tt.issued, got, tt.want)
		}
	}
	if !r.IsRevoked("d") || r.IsRevoked("other") {
		t.Error("IsRevoked wrong before the new enrollment")
	}
	r.Reissued("d")
	if r.IsRevoked("d") || !r.Revoked("d", t0.Add(-time.Minute)) {
		t.Error("after a new enrollment: the device is not blocked, its old certificates stay refused")
	}
}

// fakeStream is a grpc.ServerStream with a context only.
type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *fakeStream) Context() context.Context { return s.ctx }

// TestCertSubjectIsNeverAReservedActor: a role certificate whose CommonName is the
// name the suite records for the automation, the system or development mode (or a
// device's URI) does not get that subject, so that nothing it does can pass for
// their work in investigations, actions, approvals or the audit log.
func TestCertSubjectIsNeverAReservedActor(t *testing.T) {
	admin, _ := url.Parse(auth.RoleURI(commonv1.Role_ROLE_SECOPS_ADMIN))
	devURI, _ := url.Parse(auth.DeviceURI("dev-2"))
	svcURI, _ := url.Parse(auth.ServiceURI("risk"))
	tests := []struct {
		name string
		cn   string
		uris []*url.URL
		want string
	}{
		{"ordinary name", "alice", []*url.URL{admin}, "alice"},
		{"automation", "automation", []*url.URL{admin}, "cn:automation"},
		{"automation, other case and spaces", " Automation ", []*url.URL{admin}, "cn: Automation "},
		{"system", "system", []*url.URL{admin}, "cn:system"},
		{"dev", "dev", []*url.URL{admin}, "cn:dev"},
		{"unknown", "unknown", []*url.URL{admin}, "cn:unknown"},
		{"the authz socket's enforcement point", "unix", []*url.URL{admin}, "cn:unix"},
		{"a device's subject as CN", auth.DeviceURI("dev-2"), []*url.URL{admin}, "cn:" + auth.DeviceURI("dev-2")},
		{"no CN: role URI", "", []*url.URL{admin}, admin.String()},
		{"no CN: device URI first is skipped", "", []*url.URL{devURI, svcURI}, svcURI.String()},
		{"no CN, only a device URI", "", []*url.URL{devURI}, "serial:2a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: tt.cn}, URIs: tt.uris}
			id := auth.IdentityFromCert(cert)
			if id.Subject != tt.want {
				t.Fatalf("subject %q, want %q", id.Subject, tt.want)
			}
			if slices.Contains(auth.ReservedSubjects, id.Subject) || id.Subject == auth.DeviceURI("dev-2") {
				t.Fatalf("subject %q is a reserved actor or a device", id.Subject)
			}
		})
	}
}
