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
	"github.com/condaccess/condaccess/services/compliance/compliancestore"
)

// deviceCAFiles returns the device CA certificate and key files: the flags, or a CA
// generated once into <data-dir>/device-ca (in every mode; serve says so). The key is
// needed only where the compliance service runs (it signs device certificates); the
// other services need the certificate alone.
//
// With --database-url the compliance replicas on that database share one CA, kept
// in the compliance schema (sharedDeviceCA); its files in the data dir are a copy.
func deviceCAFiles(ctx context.Context, o serveOptions, withCompliance bool, logger *slog.Logger) (certFile, keyFile string, err error) {
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
	if o.databaseURL != "" && withCompliance {
		return sharedDeviceCA(ctx, o.databaseURL, certFile, keyFile, logger)
	}
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

// sharedDeviceCA returns files holding the device CA that every compliance replica
// on the database signs with: the one stored in the compliance schema, or, when none
// is stored yet, the one in certFile/keyFile (an embedded install's, so that its
// devices stay enrolled) or a new one, stored for the others. The stored CA is then
// written over certFile/keyFile (key mode 0600).
func sharedDeviceCA(ctx context.Context, url, certFile, keyFile string, logger *slog.Logger) (string, string, error) {
	var local []byte
	certPEM, keyPEM, err := compliancestore.SharedDeviceCA(ctx, url, func() ([]byte, []byte, error) {
		if _, err := devca.Load(certFile, keyFile); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				return nil, nil, fmt.Errorf("device CA in %s: %w", filepath.Dir(certFile), err)
			}
			if _, err := devca.Generate(certFile, keyFile, "condaccess device CA"); err != nil {
				return nil, nil, err
			}
			logger.Warn("generated the device CA of the compliance replicas on this database (no --device-ca-cert/--device-ca-key given); "+
				"its key is kept in the database's compliance schema", "device_ca_cert", certFile)
		}
		c, err := os.ReadFile(certFile)
		if err != nil {
			return nil, nil, err
		}
		k, err := os.ReadFile(keyFile)
		local = c
		return c, k, err
	})
	if err != nil {
		return "", "", fmt.Errorf("device CA: %w", err)
	}
	if old, err := os.ReadFile(certFile); err == nil && local == nil && string(old) != string(certPEM) {
		logger.Warn("the data dir's device CA differs from the one the compliance replicas on this database share; using the database's",
			"device_ca_cert", certFile)
	}
	if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
		return "", "", fmt.Errorf("device CA: %w", err)
	}
	if err := devca.WriteFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("device CA: %w", err)
	}
	if err := devca.WriteFileAtomic(certFile, certPEM, 0o644); err != nil {
		return "", "", fmt.Errorf("device CA: %w", err)
	}
	if _, err := devca.Load(certFile, keyFile); err != nil {
		return "", "", fmt.Errorf("device CA stored in the database: %w", err)
	}
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
