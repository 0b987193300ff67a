package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/devca"
	"github.com/condaccess/condaccess/internal/revocation"
	"github.com/condaccess/condaccess/internal/suite"
)

// deviceCAFiles returns the device CA certificate and key files: the flags, or a CA
// generated once into <data-dir>/device-ca (in every mode; serve says so). The key is
// needed only where the compliance service runs (it signs device certificates); the
// other services need the certificate alone.
func deviceCAFiles(o serveOptions, withCompliance bool, logger *slog.Logger) (certFile, keyFile string, err error) {
	if o.deviceCAKey != "" && o.deviceCACert == "" {
		return "", "", fmt.Errorf("%w: --device-ca-key needs --device-ca-cert", errUsage)
	}
	if o.deviceCACert != "" {
		if o.deviceCAKey == "" {
			if withCompliance {
				return "", "", fmt.Errorf("%w: the compliance service signs device certificates: --device-ca-key is required with --device-ca-cert", errUsage)
			}
			if _, err := auth.LoadDevicePool(o.deviceCACert); err != nil {
				return "", "", fmt.Errorf("%w: device CA: %v", errUsage, err)
			}
			return o.deviceCACert, "", nil
		}
		if _, err := devca.Load(o.deviceCACert, o.deviceCAKey); err != nil {
			return "", "", fmt.Errorf("%w: device CA: %v", errUsage, err)
		}
		return o.deviceCACert, o.deviceCAKey, nil
	}
	dir := filepath.Join(o.dataDir, "device-ca")
	certFile, keyFile = filepath.Join(dir, "device-ca.pem"), filepath.Join(dir, "device-ca-key.pem")
	if _, err := devca.Load(certFile, keyFile); err == nil {
		logger.Info("using the device CA generated earlier in the data dir", "device_ca_cert", certFile)
		return certFile, keyFile, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", "", fmt.Errorf("device CA in %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("device CA: %w", err)
	}
	if _, err := devca.Generate(certFile, keyFile, "condaccess device CA"); err != nil {
		return "", "", fmt.Errorf("device CA: %w", err)
	}
	logger.Warn("generated a device CA into the data dir (no --device-ca-cert/--device-ca-key given); "+
		"device certificates chain to it; services in other processes need the same CA (--device-ca-cert)",
		"device_ca_cert", certFile, "device_ca_key", keyFile)
	return certFile, keyFile, nil
}

// startRevocationFeed follows the compliance service's identity events into the
// process's revocation set, so that this process refuses revoked devices.
func (s *runningSuite) startRevocationFeed(ctx context.Context, env suite.Env) error {
	if env.Peers.Compliance == "" {
		s.logger.Warn("no compliance service address: device revocations are not followed in this process (set --compliance-addr)")
		return nil
	}
	conn, err := env.Dial(env.Peers.Compliance)
	if err != nil {
		return fmt.Errorf("revocation feed: dial compliance %s: %w", env.Peers.Compliance, err)
	}
	f := &revocation.Feed{
		Compliance: compliancev1.NewComplianceServiceClient(conn),
		Identities: compliancev1.NewDeviceIdentityServiceClient(conn),
		Set:        env.Revocations,
		Logger:     s.logger.With("component", "revocation-feed"),
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = f.Run(ctx) // returns when ctx ends; failures reconnect with backoff inside
	}()
	return nil
}
