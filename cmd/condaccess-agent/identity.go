package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/devca"
	"github.com/condaccess/condaccess/internal/peers"
	"github.com/condaccess/condaccess/internal/server"
)

// Files of the state folder (--state-dir).
const (
	deviceCertFile = "device.pem"
	deviceKeyFile  = "device-key.pem"
	caFile         = "ca.pem"
)

// errSuperseded ends the agent when its certificate may no longer renew: the device
// was enrolled again since it was issued (another key now holds its identity).
var errSuperseded = errors.New("this device was enrolled again since this certificate was issued (CERTIFICATE_SUPERSEDED): " +
	"the agent stops; enroll this device again with a new token to take its identity back")

// errRevoked ends the agent when its identity is revoked.
var errRevoked = errors.New("this device's identity was revoked (CERTIFICATE_REVOKED): the agent stops; " +
	"an administrator must create a new enrollment token and the device enroll again")

// runEnroll implements `condaccess-agent enroll`: it generates the device key here,
// exchanges the token and a CSR for the device certificate, and writes device.pem,
// device-key.pem (0600) and ca.pem into the state folder.
func runEnroll(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("condaccess-agent enroll", flag.ContinueOnError)
	fs.SetOutput(stderr)
	srv := fs.String("server", "127.0.0.1:7400", "gRPC address of the compliance service (or the whole suite)")
	ca := fs.String("ca", "", "PEM CA bundle the server certificate must chain to (required off loopback)")
	token := fs.String("token", "", "enrollment token from `condaccess devices enroll-token DEVICE` (required)")
	stateDir := fs.String("state-dir", "", "folder to write device.pem, device-key.pem and ca.pem into (required)")
	serverName := fs.String("server-name", "", "name to check in the server certificate (default: the address's host)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *token == "" || *stateDir == "" {
		return errors.New("enroll needs --token and --state-dir")
	}
	target, err := peers.Parse(*srv)
	if err != nil {
		return fmt.Errorf("--server: %w", err)
	}
	var creds credentials.TransportCredentials
	var caPEM []byte
	if *ca == "" {
		if !target.IsLoopback() {
			return errors.New("--ca is required to enroll with a server off loopback")
		}
		creds = insecure.NewCredentials()
	} else {
		var err error
		if caPEM, err = os.ReadFile(*ca); err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return fmt.Errorf("no PEM certificate in %s", *ca)
		}
		// No client certificate yet: the token authenticates the call.
		creds = credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: *serverName, MinVersion: tls.VersionTLS13})
	}
	// No client-side health checking: this connection has no certificate, and a
	// health watch held open would count against the server's small budget for
	// callers without one; an unreachable replica is still skipped.
	conn, err := peers.NewClient(target, grpc.WithTransportCredentials(creds), grpc.WithDisableHealthCheck())
	if err != nil {
		return err
	}
	defer conn.Close()
	keyPEM, csrPEM, err := devca.NewCSR()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := compliancev1.NewDeviceIdentityServiceClient(conn).EnrollDeviceIdentity(ctx,
		&compliancev1.EnrollDeviceIdentityRequest{Token: *token, CsrPem: string(csrPEM)})
	if err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	if err := os.MkdirAll(*stateDir, 0o700); err != nil {
		return err
	}
	bundle := []byte(resp.GetCaBundlePem())
	if *ca != "" {
		bundle = caPEM // the CA this enrollment verified the server with
	}
	if err := writeIdentity(*stateDir, keyPEM, []byte(resp.GetCertificatePem()), bundle); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "enrolled device %s; certificate valid until %s; wrote %s\n", resp.GetDeviceId(),
		resp.GetExpireTime().AsTime().Format(time.RFC3339), filepath.Join(*stateDir, deviceCertFile))
	return nil
}

// writeIdentity writes the key (0600) first, then the certificate: a reader that
// sees the new certificate also sees its key (the TLS loader keeps the previous pair
// while they do not match).
func writeIdentity(dir string, keyPEM, certPEM, caPEM []byte) error {
	if err := devca.WriteFileAtomic(filepath.Join(dir, deviceKeyFile), keyPEM, 0o600); err != nil {
		return err
	}
	if err := devca.WriteFileAtomic(filepath.Join(dir, deviceCertFile), certPEM, 0o644); err != nil {
		return err
	}
	if len(caPEM) > 0 {
		return devca.WriteFileAtomic(filepath.Join(dir, caFile), caPEM, 0o644)
	}
	return nil
}

// readDeviceCert returns the device certificate of the state folder.
func readDeviceCert(dir string) (*x509.Certificate, error) {
	b, err := os.ReadFile(filepath.Join(dir, deviceCertFile))
	if err != nil {
		return nil, fmt.Errorf("%w (enroll first: condaccess-agent enroll --token ... --state-dir %s)", err, dir)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("no PEM certificate in %s", filepath.Join(dir, deviceCertFile))
	}
	return x509.ParseCertificate(blk.Bytes)
}

// swapConn is a client connection that renewal replaces: calls go to the current
// connection; a renewed certificate takes effect on a new connection (the server
// checks each call against the certificate of its connection).
type swapConn struct {
	mu   sync.RWMutex
	cur  *grpc.ClientConn
	dial func() (*grpc.ClientConn, error)
}

func (c *swapConn) conn() *grpc.ClientConn {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cur
}

func (c *swapConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return c.conn().Invoke(ctx, method, args, reply, opts...)
}

func (c *swapConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return c.conn().NewStream(ctx, desc, method, opts...)
}

// redial replaces the connection; streams on the old one end (the agent reconnects).
func (c *swapConn) redial() error {
	n, err := c.dial()
	if err != nil {
		return err
	}
	c.mu.Lock()
	old := c.cur
	c.cur = n
	c.mu.Unlock()
	if old != nil {
		return old.Close()
	}
	return nil
}

func (c *swapConn) Close() error { return c.conn().Close() }

// revocationWatch turns a CERTIFICATE_REVOKED answer on any call into the end of the
// agent: the interceptors report it once through revoked.
type revocationWatch struct {
	once    sync.Once
	revoked chan struct{}
}

func newRevocationWatch() *revocationWatch { return &revocationWatch{revoked: make(chan struct{})} }

func (w *revocationWatch) check(err error) error {
	if err != nil && status.Code(err) == codes.Unauthenticated && apierr.Reason(err) == auth.ReasonCertificateRevoked {
		w.once.Do(func() { close(w.revoked) })
	}
	return err
}

func (w *revocationWatch) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return w.check(invoker(ctx, method, req, reply, cc, opts...))
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			s, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil {
				return nil, w.check(err)
			}
			return &watchedStream{ClientStream: s, w: w}, nil
		}),
	}
}

type watchedStream struct {
	grpc.ClientStream
	w *revocationWatch
}

func (s *watchedStream) RecvMsg(m any) error { return s.w.check(s.ClientStream.RecvMsg(m)) }

// renewer renews the device certificate at two thirds of its lifetime, without a
// restart: new key and CSR, RenewDeviceCertificate over the current identity, the
// files replaced, then every connection redialed with the new certificate.
type renewer struct {
	dir     string
	client  compliancev1.DeviceIdentityServiceClient
	conns   []*swapConn
	log     *slog.Logger
	now     func() time.Time
	retry   time.Duration
	renewed func(notAfter time.Time) // tests
}

// run renews until ctx ends; it returns errRevoked when the server says the
// identity is revoked.
func (r *renewer) run(ctx context.Context) error {
	for {
		cert, err := readDeviceCert(r.dir)
		if err != nil {
			return err
		}
		life := cert.NotAfter.Sub(cert.NotBefore)
		at := cert.NotBefore.Add(life * 2 / 3)
		t := time.NewTimer(max(at.Sub(r.now()), 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		for {
			err := r.renew(ctx)
			if err == nil {
				break
			}
			if status.Code(err) == codes.Unauthenticated && apierr.Reason(err) == auth.ReasonCertificateRevoked {
				return errRevoked
			}
			if status.Code(err) == codes.Unauthenticated && apierr.Reason(err) == auth.ReasonCertificateSuperseded {
				return errSuperseded
			}
			if ctx.Err() != nil {
				return nil
			}
			r.log.Warn("certificate renewal failed; retrying", "err", err, "not_after", cert.NotAfter)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(r.retry):
			}
		}
	}
}

func (r *renewer) renew(ctx context.Context) error {
	keyPEM, csrPEM, err := devca.NewCSR()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := r.client.RenewDeviceCertificate(ctx, &compliancev1.RenewDeviceCertificateRequest{CsrPem: string(csrPEM)})
	if err != nil {
		return err
	}
	if err := writeIdentity(r.dir, keyPEM, []byte(resp.GetCertificatePem()), nil); err != nil {
		return err
	}
	for _, c := range r.conns {
		if err := c.redial(); err != nil {
			r.log.Warn("redial after renewal", "err", err)
		}
	}
	r.log.Info("device certificate renewed", "device_id", resp.GetDeviceId(), "not_after", resp.GetExpireTime().AsTime())
	if r.renewed != nil {
		r.renewed(resp.GetExpireTime().AsTime())
	}
	return nil
}

// dialer returns a dial function with the agent's credentials and the revocation
// watch.
func dialer(cfg auth.ClientConfig, w *revocationWatch, addr string) func() (*grpc.ClientConn, error) {
	return func() (*grpc.ClientConn, error) {
		opts, err := server.DialOptions(cfg)
		if err != nil {
			return nil, err
		}
		return peers.Dial(addr, append(opts, w.dialOptions()...)...)
	}
}
