package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/devca"
	"github.com/condaccess/condaccess/internal/server"
)

// demoEnroll plays `condaccess devices enroll-token` and `condaccess-agent enroll`:
// the admin creates a token; the device generates its key, enrolls without a client
// certificate, and stores its identity in stateDir. It returns a connection with the
// device's certificate.
func demoEnroll(ctx context.Context, out io.Writer, addr, certs string, admin compliancev1.DeviceIdentityServiceClient, stateDir string) (*grpc.ClientConn, error) {
	tok, err := admin.CreateEnrollmentToken(ctx, &compliancev1.CreateEnrollmentTokenRequest{DeviceId: demoDevice})
	if err != nil {
		return nil, fmt.Errorf("create enrollment token: %w", describe(err))
	}
	fmt.Fprintf(out, "  enrollment token for %s: single use, valid until %s\n", demoDevice, tok.GetExpireTime().AsTime().Format(time.TimeOnly))

	caPEM, err := os.ReadFile(filepath.Join(certs, "ca.pem"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	noCert, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13})))
	if err != nil {
		return nil, err
	}
	defer noCert.Close()
	keyPEM, csrPEM, err := devca.NewCSR()
	if err != nil {
		return nil, err
	}
	resp, err := compliancev1.NewDeviceIdentityServiceClient(noCert).EnrollDeviceIdentity(ctx,
		&compliancev1.EnrollDeviceIdentityRequest{Token: tok.GetToken(), CsrPem: string(csrPEM)})
	if err != nil {
		return nil, fmt.Errorf("enroll the agent: %w", describe(err))
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, err
	}
	certFile, keyFile := filepath.Join(stateDir, "device.pem"), filepath.Join(stateDir, "device-key.pem")
	if err := devca.WriteFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := devca.WriteFileAtomic(certFile, []byte(resp.GetCertificatePem()), 0o644); err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "  agent enrolled: key generated on the device, certificate %s until %s\n",
		auth.DeviceURI(resp.GetDeviceId()), resp.GetExpireTime().AsTime().Format(time.DateTime))
	opts, err := server.DialOptions(auth.ClientConfig{CAFile: filepath.Join(certs, "ca.pem"), CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		return nil, err
	}
	return grpc.NewClient(addr, opts...)
}
