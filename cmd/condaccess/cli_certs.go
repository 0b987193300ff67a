package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health/grpc_health_v1"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/devca"
)

func init() {
	register("dev-certs", "write a development CA and mutual-TLS certificates for each role (compose, Kubernetes, tests)", runDevCerts)
	register("health", "check a server's gRPC health (exit 0 when SERVING): for container probes and scripts", runHealth)
}

// devCert is one certificate dev-certs writes: <name>.pem and <name>-key.pem.
type devCert struct {
	name     string
	roles    []commonv1.Role
	services []string // spiffe://condaccess/service/<name> URI SANs
	server   bool
}

// devCerts: service.pem for an all-in-one serve (every service identity), one
// certificate per service for the split deployment, and the role certificates. The
// sensor certificate is a static, non-device sensor (a SIEM connector): devices
// enroll for their own certificates from the device CA.
var devCerts = []devCert{
	{name: "service", services: auth.ServiceNames, server: true},
	{name: "risk", services: []string{"risk"}, server: true},
	{name: "compliance", services: []string{"compliance"}, server: true},
	{name: "access", services: []string{"access"}, server: true},
	{name: "remediation", services: []string{"remediation"}, server: true},
	{name: "sensor", roles: []commonv1.Role{commonv1.Role_ROLE_SENSOR}},
	{name: "admin", roles: []commonv1.Role{commonv1.Role_ROLE_SECOPS_ADMIN, commonv1.Role_ROLE_POLICY_ADMIN, commonv1.Role_ROLE_READER}},
	{name: "reader", roles: []commonv1.Role{commonv1.Role_ROLE_READER}},
	{name: "enforcement-point", roles: []commonv1.Role{commonv1.Role_ROLE_ENFORCEMENT_POINT}},
}

func runDevCerts(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev-certs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "certs", "folder to write ca.pem and <role>.pem / <role>-key.pem into")
	hosts := fs.String("hosts", "", "extra comma-separated DNS names or IPs for the service certificate")
	validity := fs.Duration("validity", 365*24*time.Hour, "certificate lifetime")
	force := fs.Bool("force", false, "overwrite existing files")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if !*force {
		if _, err := os.Stat(filepath.Join(*out, "ca.pem")); err == nil {
			fmt.Fprintf(stdout, "%s already holds ca.pem; keeping it (use --force to replace)\n", *out)
			return nil
		}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	// The names peers dial: compose service names, Kubernetes Service names. A
	// service's own certificate names only that service (namesOf), so that it cannot
	// pass for another service to a client that dials it by name; the all-in-one
	// certificate names all four.
	var extra []string
	var ips []net.IP
	ips = append(ips, net.ParseIP("127.0.0.1"), net.ParseIP("::1"))
	for _, h := range strings.Split(*hosts, ",") {
		if h = strings.TrimSpace(h); h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			extra = append(extra, h)
		}
	}
	namesOf := func(services []string) []string {
		names := []string{"localhost"}
		if len(services) > 1 {
			names = append(names, "condaccess")
		}
		for _, svc := range services {
			names = append(names, svc, "condaccess-"+svc, svc+".condaccess", svc+".condaccess.svc", svc+".condaccess.svc.cluster.local")
			// The headless Service peers resolve every replica through (dns:///).
			names = append(names, svc+"-peers", svc+"-peers.condaccess", svc+"-peers.condaccess.svc", svc+"-peers.condaccess.svc.cluster.local")
		}
		return append(names, extra...)
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "condaccess development CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(*validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(*out, "ca.pem"), "CERTIFICATE", caDER, 0o644); err != nil {
		return err
	}
	for _, dc := range devCerts {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial(),
			Subject:      pkix.Name{CommonName: "condaccess-" + dc.name},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(*validity),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		for _, r := range dc.roles {
			u, err := url.Parse(auth.RoleURI(r))
			if err != nil {
				return err
			}
			tmpl.URIs = append(tmpl.URIs, u)
		}
		for _, svc := range dc.services {
			u, err := url.Parse(auth.ServiceURI(svc))
			if err != nil {
				return err
			}
			tmpl.URIs = append(tmpl.URIs, u)
		}
		if dc.server {
			tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
			tmpl.DNSNames = namesOf(dc.services)
			tmpl.IPAddresses = ips
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		if err := errors.Join(
			writePEM(filepath.Join(*out, dc.name+".pem"), "CERTIFICATE", der, 0o644),
			writePEM(filepath.Join(*out, dc.name+"-key.pem"), "PRIVATE KEY", keyDER, 0o600),
		); err != nil {
			return err
		}
	}
	// The device CA signs the devices' own certificates (serve --device-ca-cert/-key).
	if _, err := devca.Generate(filepath.Join(*out, "device-ca.pem"), filepath.Join(*out, "device-ca-key.pem"), "condaccess development device CA"); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote a development CA, certificates for %s, and a device CA (device-ca.pem) into %s (for development only: use your own PKI in production)\n", certNames(), *out)
	return nil
}

func certNames() string {
	var n []string
	for _, c := range devCerts {
		n = append(n, c.name)
	}
	return strings.Join(n, ", ")
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		panic(err)
	}
	return n
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

func runHealth(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := newCLI(stdout, stderr)
	defer c.close()
	c.register(fs)
	service := fs.String("service", "", "health service name (empty: the whole server)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := applyEnvPrefixed(fs, clientFlagNames); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	c.directHealth = true
	conn, err := c.conn("")
	if err != nil {
		return err
	}
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	return healthCheck(ctx, conn, *service, stdout)
}

func healthCheck(ctx context.Context, conn *grpc.ClientConn, service string, stdout io.Writer) error {
	resp, err := grpc_health_v1.NewHealthClient(conn).Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: service})
	if err != nil {
		return describe(err)
	}
	fmt.Fprintln(stdout, resp.GetStatus())
	if resp.GetStatus() != grpc_health_v1.HealthCheckResponse_SERVING {
		return fmt.Errorf("not serving: %s", resp.GetStatus())
	}
	return nil
}
