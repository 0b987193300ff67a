package peers_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"maps"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/peers"
	"github.com/condaccess/condaccess/internal/server"
	"github.com/condaccess/condaccess/services/risk"
	"github.com/condaccess/condaccess/services/risk/riskgrpc"
	"github.com/condaccess/condaccess/services/risk/riskstore"
)

// testPKI issues certificates with exactly the names asked for (authtest's always
// name localhost and the loopback IPs).
type testPKI struct {
	dir    string
	caFile string
	ca     *x509.Certificate
	key    *ecdsa.PrivateKey
	serial int64
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	var err error
	if p.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "peers test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &p.key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	if p.ca, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	p.caFile = p.write(t, "ca.pem", "CERTIFICATE", der)
	p.serial = 1
	return p
}

func (p *testPKI) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	f := filepath.Join(p.dir, name)
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// issue writes a certificate for the DNS names and IPs given (and the URI SANs) and
// returns its certificate and key files.
func (p *testPKI) issue(t *testing.T, name string, dns []string, ips []net.IP, uris ...string) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var us []*url.URL
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		us = append(us, pu)
	}
	p.serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(p.serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    dns, IPAddresses: ips, URIs: us}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return p.write(t, name+".pem", "CERTIFICATE", der), p.write(t, name+"-key.pem", "PRIVATE KEY", keyDER)
}

// TestListVerifiesEachReplicaForItsOwnName: with mutual TLS each replica's
// certificate is verified for the name or IP its list entry gives, not for one name
// shared by the list. Replica "by-name" has a certificate for localhost only and is
// listed as localhost; replica "by-ip" has one for 127.0.0.1 only and is listed by
// IP; both serve. The impostor, signed by the same CA but for another name, is listed
// by IP: its handshake fails and it never gets a call.
func TestListVerifiesEachReplicaForItsOwnName(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pki := newTestPKI(t)
	st, err := riskstore.Open(ctx, riskstore.Options{Path: filepath.Join(t.TempDir(), "risk.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	handlers := riskgrpc.New(riskgrpc.Config{Service: risk.New(risk.Config{Store: st, Encode: riskgrpc.EncodeEvent})})
	loopback := []net.IP{net.IPv4(127, 0, 0, 1)}
	svc := "spiffe://condaccess/service/risk"
	replicas := []struct {
		name  string
		dns   []string
		ips   []net.IP
		entry func(port string) string
	}{
		{name: "by-name", dns: []string{"localhost"}, entry: func(port string) string { return "localhost:" + port }},
		{name: "by-ip", ips: loopback, entry: func(port string) string { return "127.0.0.1:" + port }},
		{name: "impostor", dns: []string{"risk.example"}, entry: func(port string) string { return "127.0.0.1:" + port }},
	}
	var list []string
	ports := map[string]string{}
	for _, rep := range replicas {
		cert, key := pki.issue(t, rep.name, rep.dns, rep.ips, svc)
		srv, err := server.New(server.Config{Name: rep.name, Auth: auth.Config{CertFile: cert, KeyFile: key, ClientCAFile: pki.caFile}, GracefulStopTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		riskgrpc.Register(srv.Registrar(), handlers)
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = srv.Serve(lis) }()
		t.Cleanup(func() { srv.Stop(context.Background()) })
		_, port, _ := net.SplitHostPort(lis.Addr().String())
		ports[port] = rep.name
		list = append(list, rep.entry(port))
	}
	clientCert, clientKey := pki.issue(t, "reader", nil, nil, auth.RoleURI(commonv1.Role_ROLE_READER))
	opts, err := server.DialOptions(auth.ClientConfig{CAFile: pki.caFile, CertFile: clientCert, KeyFile: clientKey})
	if err != nil {
		t.Fatal(err)
	}
	tgt, err := peers.Parse(list[0] + "," + list[1] + "," + list[2])
	if err != nil {
		t.Fatal(err)
	}
	conn, err := peers.NewClient(tgt, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := riskv1.NewRiskServiceClient(conn)

	served := map[string]int{}
	for served["by-name"] == 0 || served["by-ip"] == 0 || served["by-name"]+served["by-ip"] < 60 {
		if ctx.Err() != nil {
			t.Fatalf("calls served %v: want both replicas whose certificate names their entry", served)
		}
		var p peer.Peer
		if _, err := c.ListDeviceRisks(ctx, &riskv1.ListDeviceRisksRequest{}, grpc.Peer(&p)); err != nil {
			t.Fatalf("ListDeviceRisks: %v (served so far %v)", err, served)
		}
		_, port, _ := net.SplitHostPort(p.Addr.String())
		served[ports[port]]++
	}
	if served["impostor"] != 0 {
		t.Fatalf("the impostor replica served %d calls; its certificate does not name 127.0.0.1", served["impostor"])
	}
	if got := slices.Sorted(maps.Keys(served)); !slices.Equal(got, []string{"by-ip", "by-name"}) {
		t.Fatalf("served by %v", got)
	}
}
