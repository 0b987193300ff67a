package accessgrpc_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/server"
	"github.com/condaccess/condaccess/services/access/accesscore"
	"github.com/condaccess/condaccess/services/access/accessgrpc"
	"github.com/condaccess/condaccess/services/access/accessstore"
	"github.com/condaccess/condaccess/services/access/edgeid"
	"github.com/condaccess/condaccess/services/access/edgeid/edgeidtest"
)

// BenchmarkAuthzVerified measures GET /authz on loopback, in the same run, with the
// identities verified (bearer token + forwarded device certificate, both cached by
// hash after the first request) and with the same identities asserted in trusted
// headers. The difference is the verified-identity overhead per request.
//
//	go test -run '^$' -bench AuthzVerified -benchtime 2000x ./services/access/accessgrpc/
func BenchmarkAuthzVerified(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	st, err := accessstore.Open(ctx, accessstore.Options{Path: filepath.Join(b.TempDir(), "access.db"), Synchronous: "NORMAL"})
	if err != nil {
		b.Fatal(err)
	}
	svc, err := accesscore.New(ctx, accesscore.Config{Store: st, EncodeSignIn: accessgrpc.EncodeSignIn})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := server.New(server.Config{Name: "bench", Auth: auth.Config{Insecure: true}, ExtraMethodRoles: accessgrpc.ExtraMethodRoles})
	if err != nil {
		b.Fatal(err)
	}
	h := accessgrpc.New(svc, accessgrpc.DefaultHeaders)
	is := edgeidtest.NewIssuer(b)
	ca := edgeidtest.NewDeviceCA(b, b.TempDir(), "device-ca")
	dv, err := edgeid.NewX509DeviceVerifier(ca.CertFile, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	tv, err := edgeid.NewTokenVerifier(edgeid.TokenConfig{Issuers: []string{is.URL}, Audience: "condaccess"})
	if err != nil {
		b.Fatal(err)
	}
	h.SetEdge(accessgrpc.Edge{Tokens: tv, Devices: edgeid.NewDeviceCerts(dv), TrustHeaders: true})
	accessgrpc.Register(srv.Registrar(), h)
	fc := newFakeCompliance()
	compliancev1.RegisterComplianceServiceServer(srv.Registrar(), fc)
	conn, stop := tcpServe(b, srv)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); svc.RunFeed(ctx, compliancev1.NewComplianceServiceClient(conn), nil) }()
	go func() { defer wg.Done(); svc.Run(ctx) }()
	hs := httptest.NewServer(auth.WithIdentity(auth.Identity{Subject: "nginx", Roles: []commonv1.Role{commonv1.Role_ROLE_ENFORCEMENT_POINT}}, h.AuthzHandler()))
	b.Cleanup(func() {
		hs.Close()
		cancel()
		wg.Wait()
		stop()
		st.Close()
	})
	seedB(b, &harness{dir: accessv1.NewDirectoryServiceClient(conn), pol: accessv1.NewConditionalAccessPolicyServiceClient(conn)})
	fc.enroll("dev-1", "u-1")
	rev := fc.set("dev-1", commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT, commonv1.RiskLevel_RISK_LEVEL_NONE, nil, nil)
	deadline := time.Now().Add(10 * time.Second)
	for svc.FeedStatus().Revision < rev {
		if time.Now().After(deadline) {
			b.Fatal("compliance feed never caught up")
		}
		time.Sleep(5 * time.Millisecond)
	}
	dev := ca.Issue(b, "dev-1", time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	token := is.Token(map[string]any{"sub": "u-1", "aud": "condaccess", "amr": []string{"mfa"}})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	newReq := func(hdr map[string]string) *http.Request {
		req, _ := http.NewRequest(http.MethodGet, hs.URL+"/authz", nil)
		req.Header.Set("x-application-id", "payroll")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		return req
	}
	do := func(b *testing.B, req *http.Request) {
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("GET /authz = %d %s", resp.StatusCode, resp.Header.Get(accessgrpc.ReasonHeader))
		}
	}
	verified := newReq(map[string]string{"Authorization": "Bearer " + token, accessgrpc.DefaultCertHeader: dev.Escaped})
	headers := newReq(map[string]string{"x-user-id": "u-1", "x-device-id": "dev-1", "x-mfa-done": "true"})
	run := func(b *testing.B, req *http.Request) {
		do(b, req) // warm: connection, caches
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			do(b, req)
		}
	}
	b.Run("headers", func(b *testing.B) { run(b, headers) })
	b.Run("verified", func(b *testing.B) { run(b, verified) })
	// Alternating request by request, so that both see the same machine load: the
	// per-variant means and their difference are reported as metrics.
	b.Run("alternating", func(b *testing.B) {
		do(b, headers)
		do(b, verified)
		var th, tv time.Duration
		b.ResetTimer()
		for range b.N {
			t0 := time.Now()
			do(b, headers)
			t1 := time.Now()
			do(b, verified)
			th, tv = th+t1.Sub(t0), tv+time.Since(t1)
		}
		b.ReportMetric(float64(th.Nanoseconds())/float64(b.N), "headers-ns/req")
		b.ReportMetric(float64(tv.Nanoseconds())/float64(b.N), "verified-ns/req")
		b.ReportMetric(float64((tv-th).Nanoseconds())/float64(b.N), "overhead-ns/req")
	})
}

// tcpServe serves srv on 127.0.0.1 and dials it.
func tcpServe(b *testing.B, srv *server.Server) (*grpc.ClientConn, func()) {
	b.Helper()
	lis, err := netListen()
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	return conn, func() { conn.Close(); srv.Stop(context.Background()) }
}

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
