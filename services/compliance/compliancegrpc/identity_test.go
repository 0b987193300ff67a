package compliancegrpc_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/devca"
	"github.com/condaccess/condaccess/internal/server"
	"github.com/condaccess/condaccess/services/compliance"
	"github.com/condaccess/condaccess/services/compliance/compliancegrpc"
	"github.com/condaccess/condaccess/services/compliance/compliancestore"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type identityEnv struct {
	svc     *compliance.Service
	st      *compliancestore.Store
	ca      *devca.CA
	clock   *clock
	ids     compliancev1.DeviceIdentityServiceClient
	devices compliancev1.DeviceServiceClient
}

// startIdentity runs the compliance gRPC servers (production interceptor chain,
// development mode) with a device CA, and enrolls dev-1.
func startIdentity(tb testing.TB) *identityEnv {
	tb.Helper()
	ctx := context.Background()
	dir := tb.TempDir()
	st, err := compliancestore.Open(ctx, compliancestore.Options{Path: filepath.Join(dir, "c.db"), Synchronous: "NORMAL"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	ca, err := devca.Generate(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem"), "test device CA")
	if err != nil {
		tb.Fatal(err)
	}
	clk := &clock{t: time.Now().UTC()}
	svc := compliance.New(compliance.Config{Store: st, Encode: compliancegrpc.EncodeEvent, Now: clk.Now})
	svc.SetIdentityConfig(compliance.IdentityConfig{CA: ca})
	srv, err := server.New(server.Config{Name: "identity-test", Auth: auth.Config{Insecure: true}, GracefulStopTimeout: time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	compliancegrpc.Register(srv.Registrar(), compliancegrpc.New(svc))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	tb.Cleanup(func() { srv.Stop(context.Background()) })
	opts, err := server.DialOptions(auth.ClientConfig{Insecure: true})
	if err != nil {
		tb.Fatal(err)
	}
	conn, err := grpc.NewClient(lis.Addr().String(), opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	e := &identityEnv{svc: svc, st: st, ca: ca, clock: clk, ids: compliancev1.NewDeviceIdentityServiceClient(conn), devices: compliancev1.NewDeviceServiceClient(conn)}
	for _, id := range []string{"dev-1", "dev-old"} {
		if _, err := e.devices.EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{DeviceId: id, Platform: commonv1.Platform_PLATFORM_LINUX}}); err != nil {
			tb.Fatal(err)
		}
	}
	return e
}

func (e *identityEnv) token(tb testing.TB, device string, ttl time.Duration) string {
	tb.Helper()
	r, err := e.ids.CreateEnrollmentToken(context.Background(), &compliancev1.CreateEnrollmentTokenRequest{DeviceId: device, Ttl: durationpb.New(ttl)})
	if err != nil {
		tb.Fatal(err)
	}
	return r.GetToken()
}

func (e *identityEnv) identities(tb testing.TB) int {
	tb.Helper()
	ids, err := e.st.ListDeviceIdentities(context.Background(), "", 1000)
	if err != nil {
		tb.Fatal(err)
	}
	return len(ids)
}

// csr builds a PEM CSR for key from tmpl.
func csr(tb testing.TB, key any, tmpl *x509.CertificateRequest) string {
	tb.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		tb.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func goodCSR(tb testing.TB) string {
	tb.Helper()
	_, c, err := devca.NewCSR()
	if err != nil {
		tb.Fatal(err)
	}
	return string(c)
}

// TestEnrollDeviceIdentity: the token and CSR rules, the attack rows next to the
// allowed one; a refused call changes nothing stored and does not use the token.
func TestEnrollDeviceIdentity(t *testing.T) {
	e := startIdentity(t)
	ctx := context.Background()
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	deviceURI, _ := url.Parse(auth.DeviceURI("dev-2"))
	roleURI, _ := url.Parse(auth.RoleURI(commonv1.Role_ROLE_SECOPS_ADMIN))

	used := e.token(t, "dev-1", time.Hour)
	if _, err := e.ids.EnrollDeviceIdentity(ctx, &compliancev1.EnrollDeviceIdentityRequest{Token: used, CsrPem: goodCSR(t)}); err != nil {
		t.Fatal(err)
	}
	expired := e.token(t, "dev-1", time.Minute)
	e.clock.Add(2 * time.Minute)
	retired := e.token(t, "dev-old", time.Hour)
	if _, err := e.devices.RetireDevice(ctx, &compliancev1.RetireDeviceRequest{DeviceId: "dev-old"}); err != nil {
		t.Fatal(err)
	}
	valid := e.token(t, "dev-1", 0) // default lifetime

	tests := []struct {
		name, token, csr string
		code             codes.Code
		reason           string
	}{
		{"unknown token", "not-a-token", goodCSR(t), codes.Unauthenticated, compliancegrpc.ReasonEnrollmentTokenInvalid},
		{"used token", used, goodCSR(t), codes.Unauthenticated, compliancegrpc.ReasonEnrollmentTokenInvalid},
		{"expired token", expired, goodCSR(t), codes.Unauthenticated, compliancegrpc.ReasonEnrollmentTokenInvalid},
		{"empty token", "", goodCSR(t), codes.InvalidArgument, ""},
		{"not PEM", valid, "hello", codes.InvalidArgument, ""},
		{"PEM of another type", valid, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2}})), codes.InvalidArgument, ""},
		{"garbage DER", valid, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{0x30, 0x03, 1, 2, 3}})), codes.InvalidArgument, ""},
		{"RSA key", valid, csr(t, rsaKey, &x509.CertificateRequest{}), codes.InvalidArgument, ""},
		{"P-384 key", valid, csr(t, p384, &x509.CertificateRequest{}), codes.InvalidArgument, ""},
		{"asks for a subject", valid, csr(t, p256, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "dev"}}), codes.InvalidArgument, ""},
		{"asks for another device's URI", valid, csr(t, p256, &x509.CertificateRequest{URIs: []*url.URL{deviceURI}}), codes.InvalidArgument, ""},
		{"asks for a role URI", valid, csr(t, p256, &x509.CertificateRequest{URIs: []*url.URL{roleURI}}), codes.InvalidArgument, ""},
		{"asks for a DNS name", valid, csr(t, p256, &x509.CertificateRequest{DNSNames: []string{"risk"}}), codes.InvalidArgument, ""},
		{"token of a device retired since", retired, goodCSR(t), codes.FailedPrecondition, "DEVICE_RETIRED"},
	}
	before := e.identities(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.ids.EnrollDeviceIdentity(ctx, &compliancev1.EnrollDeviceIdentityRequest{Token: tt.token, CsrPem: tt.csr})
			if status.Code(err) != tt.code || tt.reason != "" && apierr.Reason(err) != tt.reason {
				t.Fatalf("EnrollDeviceIdentity = %v (reason %q), want %v %s", err, apierr.Reason(err), tt.code, tt.reason)
			}
			if tt.code == codes.InvalidArgument && len(apierr.Violations(err)) == 0 {
				t.Errorf("no field violation in %v", err)
			}
		})
	}
	if got := e.identities(t); got != before {
		t.Errorf("identities %d after refused calls, want %d", got, before)
	}

	// The token survived the refused CSRs; a good CSR gets a certificate naming
	// only the device.
	r, err := e.ids.EnrollDeviceIdentity(ctx, &compliancev1.EnrollDeviceIdentityRequest{Token: valid, CsrPem: goodCSR(t)})
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode([]byte(r.GetCertificatePem()))
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(e.ca.Certificate())
	v := auth.DeviceVerifier{Roots: pool}
	id, err := v.Verify([]*x509.Certificate{cert}, cert.NotBefore.Add(time.Second))
	if err != nil || id != "dev-1" {
		t.Fatalf("Verify = %q, %v; want dev-1", id, err)
	}
	if len(cert.URIs) != 1 || len(cert.DNSNames) != 0 || cert.Subject.CommonName != "" {
		t.Errorf("certificate names %v %v %q, want only %s", cert.URIs, cert.DNSNames, cert.Subject.CommonName, auth.DeviceURI("dev-1"))
	}
	if life := cert.NotAfter.Sub(cert.NotBefore); life != compliance.DefaultDeviceCertTTL {
		t.Errorf("lifetime %v, want %v", life, compliance.DefaultDeviceCertTTL)
	}
	// The verifier refuses it once expired.
	if _, err := v.Verify([]*x509.Certificate{cert}, cert.NotAfter.Add(time.Second)); !errors.Is(err, auth.ErrCertificateExpired) {
		t.Errorf("Verify after NotAfter = %v, want ErrCertificateExpired", err)
	}
}

// TestCreateEnrollmentToken: admin-only by contract; an unknown or retired device
// gets no token; the lifetime is bounded.
func TestCreateEnrollmentToken(t *testing.T) {
	e := startIdentity(t)
	ctx := context.Background()
	if _, err := e.devices.RetireDevice(ctx, &compliancev1.RetireDeviceRequest{DeviceId: "dev-old"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, device string
		ttl          time.Duration
		code         codes.Code
	}{
		{"enrolled device", "dev-1", 0, codes.OK},
		{"unknown device", "dev-9", 0, codes.NotFound},
		{"retired device", "dev-old", 0, codes.FailedPrecondition},
		{"device id not fit for a certificate", "dev/1", 0, codes.InvalidArgument},
		{"lifetime over 7 days", "dev-1", 8 * 24 * time.Hour, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := e.ids.CreateEnrollmentToken(ctx, &compliancev1.CreateEnrollmentTokenRequest{DeviceId: tt.device, Ttl: durationpb.New(tt.ttl)})
			if status.Code(err) != tt.code {
				t.Fatalf("CreateEnrollmentToken = %v, want %v", err, tt.code)
			}
			if tt.code == codes.OK && r.GetExpireTime().AsTime().Sub(e.clock.Now()) != time.Hour {
				t.Errorf("expires %v, want in 1h", r.GetExpireTime().AsTime())
			}
		})
	}
}

// TestRenewDeviceCertificate: only a device renews, only itself, never once revoked.
func TestRenewDeviceCertificate(t *testing.T) {
	e := startIdentity(t)
	ctx := context.Background()
	if _, err := e.ids.EnrollDeviceIdentity(ctx, &compliancev1.EnrollDeviceIdentityRequest{Token: e.token(t, "dev-1", time.Hour), CsrPem: goodCSR(t)}); err != nil {
		t.Fatal(err)
	}
	srv := compliancegrpc.NewIdentityServer(compliancegrpc.New(e.svc))
	device := func(id string) context.Context {
		return auth.NewContext(ctx, auth.Identity{Kind: auth.KindDevice, ID: id, Roles: []commonv1.Role{commonv1.Role_ROLE_SENSOR}, Issued: e.clock.Now()})
	}
	staticSensor := auth.NewContext(ctx, auth.Identity{Kind: auth.KindRoleCertificate, Subject: "dev-1", Roles: []commonv1.Role{commonv1.Role_ROLE_SENSOR}})
	tests := []struct {
		name   string
		ctx    context.Context
		csr    string
		code   codes.Code
		reason string
	}{
		{"device renews itself", device("dev-1"), goodCSR(t), codes.OK, ""},
		{"static sensor whose subject is the device", staticSensor, goodCSR(t), codes.PermissionDenied, auth.ReasonDeviceMismatch},
		{"device without an identity", device("dev-old"), goodCSR(t), codes.NotFound, ""},
		{"bad CSR", device("dev-1"), csr(t, mustRSA(t), &x509.CertificateRequest{}), codes.InvalidArgument, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := srv.RenewDeviceCertificate(tt.ctx, &compliancev1.RenewDeviceCertificateRequest{CsrPem: tt.csr})
			if status.Code(err) != tt.code || tt.reason != "" && apierr.Reason(err) != tt.reason {
				t.Fatalf("RenewDeviceCertificate = %v (reason %q), want %v %s", err, apierr.Reason(err), tt.code, tt.reason)
			}
			if tt.code == codes.OK && r.GetDeviceId() != "dev-1" {
				t.Errorf("renewed for %q", r.GetDeviceId())
			}
		})
	}
	if _, err := e.ids.RevokeDeviceIdentity(ctx, &compliancev1.RevokeDeviceIdentityRequest{DeviceId: "dev-1", Reason: "lost"}); err != nil {
		t.Fatal(err)
	}
	_, err := srv.RenewDeviceCertificate(device("dev-1"), &compliancev1.RenewDeviceCertificateRequest{CsrPem: goodCSR(t)})
	if status.Code(err) != codes.Unauthenticated || apierr.Reason(err) != auth.ReasonCertificateRevoked {
		t.Errorf("renewal after revocation = %v, want UNAUTHENTICATED CERTIFICATE_REVOKED", err)
	}
	_, err = e.ids.RevokeDeviceIdentity(ctx, &compliancev1.RevokeDeviceIdentityRequest{DeviceId: "dev-1"})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("second revocation = %v, want FAILED_PRECONDITION", err)
	}
	l, err := e.ids.ListDeviceIdentities(ctx, &compliancev1.ListDeviceIdentitiesRequest{})
	if err != nil || len(l.GetIdentities()) != 1 || l.GetIdentities()[0].GetState() != compliancev1.DeviceIdentityState_DEVICE_IDENTITY_STATE_REVOKED {
		t.Errorf("ListDeviceIdentities = %v, %v; want dev-1 revoked", l, err)
	}
}

// TestRenewalAfterReEnrollment: enrolling a device again leaves its earlier
// certificates (a stolen key, say) only their remaining lifetime: one issued before
// the new enrollment no longer renews (UNAUTHENTICATED, CERTIFICATE_SUPERSEDED) and
// nothing is stored; the new enrollment's certificate, and its renewals, renew.
func TestRenewalAfterReEnrollment(t *testing.T) {
	e := startIdentity(t)
	ctx := context.Background()
	srv := compliancegrpc.NewIdentityServer(compliancegrpc.New(e.svc))
	issuedAt := func(at time.Time) context.Context {
		return auth.NewContext(ctx, auth.Identity{Kind: auth.KindDevice, ID: "dev-1", Roles: []commonv1.Role{commonv1.Role_ROLE_SENSOR}, Issued: at})
	}
	if _, err := e.ids.EnrollDeviceIdentity(ctx, &compliancev1.EnrollDeviceIdentityRequest{Token: e.token(t, "dev-1", time.Hour), CsrPem: goodCSR(t)}); err != nil {
		t.Fatal(err)
	}
	first := e.clock.Now().Truncate(time.Second)
	// The first certificate renews (the device's own renewal).
	e.clock.Add(time.Hour)
	if _, err := srv.RenewDeviceCertificate(issuedAt(first), &compliancev1.RenewDeviceCertificateRequest{CsrPem: goodCSR(t)}); err != nil {
		t.Fatalf("renewal before re-enrollment: %v", err)
	}
	// An administrator enrolls the device again (a reinstall, a suspected theft).
	e.clock.Add(time.Hour)
	if _, err := e.ids.EnrollDeviceIdentity(ctx, &compliancev1.EnrollDeviceIdentityRequest{Token: e.token(t, "dev-1", time.Hour), CsrPem: goodCSR(t)}); err != nil {
		t.Fatal(err)
	}
	second := e.clock.Now().Truncate(time.Second)
	before, err := e.st.ListDeviceIdentities(ctx, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Add(time.Minute)
	for _, tt := range []struct {
		name   string
		issued time.Time
		code   codes.Code
	}{
		{"attack: the first enrollment's certificate", first, codes.Unauthenticated},
		{"attack: a renewal of the first enrollment's certificate", first.Add(time.Hour), codes.Unauthenticated},
		{"the new enrollment's certificate", second, codes.OK},
		{"a renewal of the new enrollment's certificate", second.Add(time.Second), codes.OK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := srv.RenewDeviceCertificate(issuedAt(tt.issued), &compliancev1.RenewDeviceCertificateRequest{CsrPem: goodCSR(t)})
			if status.Code(err) != tt.code || tt.code != codes.OK && apierr.Reason(err) != compliancegrpc.ReasonCertificateSuperseded {
				t.Fatalf("RenewDeviceCertificate = %v (reason %q), want %v", err, apierr.Reason(err), tt.code)
			}
			if tt.code != codes.OK {
				after, err := e.st.ListDeviceIdentities(ctx, "", 10)
				if err != nil {
					t.Fatal(err)
				}
				if len(after) != 1 || after[0].Serial != before[0].Serial {
					t.Errorf("a refused renewal changed the identity: %+v -> %+v", before[0], after[0])
				}
			}
		})
	}
}

func mustRSA(tb testing.TB) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// FuzzEnrollDeviceIdentity: any token and CSR give a defined answer (never a panic,
// never INTERNAL), and a refused call stores nothing.
func FuzzEnrollDeviceIdentity(f *testing.F) {
	e := startIdentity(f)
	f.Add("not-a-token", goodCSR(f))
	f.Add("", "-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n-----END CERTIFICATE REQUEST-----\n")
	f.Add(e.token(f, "dev-1", time.Hour), "garbage")
	srv := compliancegrpc.NewIdentityServer(compliancegrpc.New(e.svc))
	f.Fuzz(func(t *testing.T, token, csrPEM string) {
		before := e.identities(t)
		_, err := srv.EnrollDeviceIdentity(context.Background(), &compliancev1.EnrollDeviceIdentityRequest{Token: token, CsrPem: csrPEM})
		switch status.Code(err) {
		case codes.OK:
			return
		case codes.Unauthenticated, codes.InvalidArgument:
		default:
			t.Fatalf("EnrollDeviceIdentity(%q, %q) = %v", token, csrPEM, err)
		}
		if after := e.identities(t); after != before {
			t.Fatalf("a refused enrollment changed the identities: %d -> %d", before, after)
		}
	})
}

// FuzzRenewDeviceCertificate: any CSR from an enrolled device gives OK or
// INVALID_ARGUMENT, never a panic or INTERNAL, and a refused one changes nothing.
func FuzzRenewDeviceCertificate(f *testing.F) {
	e := startIdentity(f)
	ctx := context.Background()
	if _, err := e.ids.EnrollDeviceIdentity(ctx, &compliancev1.EnrollDeviceIdentityRequest{Token: e.token(f, "dev-1", time.Hour), CsrPem: goodCSR(f)}); err != nil {
		f.Fatal(err)
	}
	f.Add(goodCSR(f))
	f.Add("-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n")
	f.Add("")
	srv := compliancegrpc.NewIdentityServer(compliancegrpc.New(e.svc))
	dev := auth.NewContext(ctx, auth.Identity{Kind: auth.KindDevice, ID: "dev-1", Roles: []commonv1.Role{commonv1.Role_ROLE_SENSOR}, Issued: e.clock.Now()})
	f.Fuzz(func(t *testing.T, csrPEM string) {
		ids, err := e.st.ListDeviceIdentities(ctx, "", 10)
		if err != nil {
			t.Fatal(err)
		}
		_, err = srv.RenewDeviceCertificate(dev, &compliancev1.RenewDeviceCertificateRequest{CsrPem: csrPEM})
		switch status.Code(err) {
		case codes.OK:
			return
		case codes.InvalidArgument:
		default:
			t.Fatalf("RenewDeviceCertificate(%q) = %v", csrPEM, err)
		}
		after, err := e.st.ListDeviceIdentities(ctx, "", 10)
		if err != nil {
			t.Fatal(err)
		}
		if after[0].Serial != ids[0].Serial {
			t.Fatalf("a refused renewal changed the certificate")
		}
	})
}

// TestRetireRevokesIdentity: retiring a device revokes its identity in the same
// transaction, with an identity event, and its tokens stop working.
func TestRetireRevokesIdentity(t *testing.T) {
	e := startIdentity(t)
	ctx := context.Background()
	if _, err := e.ids.EnrollDeviceIdentity(ctx, &compliancev1.EnrollDeviceIdentityRequest{Token: e.token(t, "dev-1", time.Hour), CsrPem: goodCSR(t)}); err != nil {
		t.Fatal(err)
	}
	spare := e.token(t, "dev-1", time.Hour)
	rev := e.svc.Revision()
	if _, err := e.devices.RetireDevice(ctx, &compliancev1.RetireDeviceRequest{DeviceId: "dev-1"}); err != nil {
		t.Fatal(err)
	}
	l, err := e.ids.ListDeviceIdentities(ctx, &compliancev1.ListDeviceIdentitiesRequest{})
	if err != nil || len(l.GetIdentities()) != 1 {
		t.Fatalf("ListDeviceIdentities = %v, %v", l, err)
	}
	if id := l.GetIdentities()[0]; id.GetState() != compliancev1.DeviceIdentityState_DEVICE_IDENTITY_STATE_REVOKED || id.GetRevokeReason() != "device retired" {
		t.Errorf("identity after retirement %v, want revoked (device retired)", id)
	}
	found := false
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	_ = e.svc.Watch(wctx, rev, func(ev compliance.StoredEvent) error {
		if ev.Type == compliance.EventIdentityChanged && ev.Key == "dev-1" {
			found = true
			cancel()
		}
		return nil
	}, func(int64) error { cancel(); return nil })
	if !found {
		t.Errorf("no identity event after the retirement")
	}
	_, err = e.ids.EnrollDeviceIdentity(ctx, &compliancev1.EnrollDeviceIdentityRequest{Token: spare, CsrPem: goodCSR(t)})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("enrollment of a retired device = %v, want FAILED_PRECONDITION", err)
	}
}
