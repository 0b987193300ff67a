// Command condaccess-agent is the condaccess endpoint agent: it watches folders for the EICAR test file and blocklisted files, reports alerts to the risk service and performs remediation actions.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/agent"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/peers"
	"github.com/condaccess/condaccess/internal/telemetry"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

type options struct {
	server, riskAddr, remediationAddr string
	complianceAddr, stateDir          string
	deviceID, hostname                string
	watch                             multiFlag
	quarantineDir, blocklist          string
	insecure                          bool
	ca, cert, key, serverName         string
	rescan                            time.Duration
	logLevel                          string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "condaccess-agent:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "enroll" {
		return runEnroll(ctx, args[1:], stderr)
	}
	fs := flag.NewFlagSet("condaccess-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.server, "server", "127.0.0.1:7400", "gRPC address of the condaccess suite: "+peers.Syntax)
	fs.StringVar(&o.riskAddr, "risk-addr", "", "gRPC address of the risk service (overrides --server), same syntax")
	fs.StringVar(&o.remediationAddr, "remediation-addr", "", "gRPC address of the remediation service (overrides --server), same syntax")
	fs.StringVar(&o.complianceAddr, "compliance-addr", "", "gRPC address of the compliance service, for certificate renewal (overrides --server), same syntax")
	fs.StringVar(&o.stateDir, "state-dir", "", "folder written by `condaccess-agent enroll`: the device identity (device.pem, device-key.pem, ca.pem), renewed at two thirds of its lifetime")
	fs.StringVar(&o.deviceID, "device-id", "", "this device's id (required without --state-dir; with it, the id in the device certificate)")
	fs.StringVar(&o.hostname, "hostname", "", "host name reported to the service (default: the OS host name)")
	fs.Var(&o.watch, "watch", "folder to watch, recursively (repeatable; at least one)")
	fs.StringVar(&o.quarantineDir, "quarantine-dir", "", "quarantine folder; also holds the agent's state file (required)")
	fs.StringVar(&o.blocklist, "blocklist", "", "file of SHA-256 hex digests to detect, one a line")
	fs.BoolVar(&o.insecure, "insecure", false, "plaintext without client certificate (default true when every address is loopback and no --ca is given)")
	fs.StringVar(&o.ca, "ca", "", "PEM CA bundle the server certificate must chain to (mutual TLS)")
	fs.StringVar(&o.cert, "cert", "", "this agent's PEM client certificate (role sensor)")
	fs.StringVar(&o.key, "key", "", "PEM private key of --cert")
	// The names the condaccess CLI uses, so that one set of TLS flags works for both.
	fs.StringVar(&o.ca, "tls-ca", "", "same as --ca")
	fs.StringVar(&o.cert, "tls-cert", "", "same as --cert")
	fs.StringVar(&o.key, "tls-key", "", "same as --key")
	fs.StringVar(&o.serverName, "server-name", "", "name to check in the server certificate (default: the address's host)")
	fs.DurationVar(&o.rescan, "rescan-interval", 30*time.Second, "period of the full rescan of the watched folders")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	insecureSet := false
	fs.Visit(func(f *flag.Flag) { insecureSet = insecureSet || f.Name == "insecure" })
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	logger := slog.New(telemetry.NewLogHandler(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl})))
	if o.stateDir != "" {
		if o.cert != "" || o.key != "" {
			return errors.New("--state-dir holds the device certificate: do not give --cert/--key with it")
		}
		cert, err := readDeviceCert(o.stateDir)
		if err != nil {
			return err
		}
		id, ok := auth.DeviceIDFromCert(cert)
		if !ok {
			return fmt.Errorf("%s is not a device certificate (no %s<id> URI)", filepath.Join(o.stateDir, deviceCertFile), auth.DeviceURIPrefix)
		}
		if o.deviceID != "" && o.deviceID != id {
			return fmt.Errorf("--device-id %s differs from the enrolled device %s", o.deviceID, id)
		}
		o.deviceID = id
		o.cert, o.key = filepath.Join(o.stateDir, deviceCertFile), filepath.Join(o.stateDir, deviceKeyFile)
		if err := checkKeyPermissions(o.key); err != nil {
			return err
		}
		if o.ca == "" {
			o.ca = filepath.Join(o.stateDir, caFile)
		}
	}
	if o.deviceID == "" || o.quarantineDir == "" || len(o.watch) == 0 {
		return errors.New("--device-id (or --state-dir), --quarantine-dir and at least one --watch are required")
	}
	if o.riskAddr == "" {
		o.riskAddr = o.server
	}
	if o.remediationAddr == "" {
		o.remediationAddr = o.server
	}
	if o.complianceAddr == "" {
		o.complianceAddr = o.server
	}
	// Each address is one host:port, a comma-separated list of replicas or a
	// dns:/// target; the agent balances over the replicas whose health is SERVING.
	loopback := map[string]bool{}
	for _, f := range []struct{ name, value string }{{"risk-addr", o.riskAddr}, {"remediation-addr", o.remediationAddr}, {"compliance-addr", o.complianceAddr}} {
		t, err := peers.Parse(f.value)
		if err != nil {
			return fmt.Errorf("--%s (or --server): %w", f.name, err)
		}
		loopback[f.value] = t.IsLoopback()
	}
	if !insecureSet {
		o.insecure = o.ca == "" && loopback[o.riskAddr] && loopback[o.remediationAddr]
	}
	if o.insecure {
		if !loopback[o.riskAddr] || !loopback[o.remediationAddr] {
			return errors.New("--insecure is allowed only with loopback addresses; configure --ca, --cert and --key")
		}
		logger.Warn("INSECURE DEVELOPMENT MODE: connecting without TLS (loopback only)")
	}
	var blocklist map[string]bool
	if o.blocklist != "" {
		var err error
		if blocklist, err = agent.LoadBlocklist(o.blocklist); err != nil {
			return err
		}
	}
	clientCfg := auth.ClientConfig{Insecure: o.insecure, CAFile: o.ca, CertFile: o.cert, KeyFile: o.key, ServerName: o.serverName}
	watch := newRevocationWatch()
	conns := map[string]*swapConn{}
	connFor := func(addr string) (*swapConn, error) {
		if c, ok := conns[addr]; ok {
			return c, nil
		}
		c := &swapConn{dial: dialer(clientCfg, watch, addr)}
		if err := c.redial(); err != nil {
			return nil, fmt.Errorf("%s: %w", addr, err)
		}
		conns[addr] = c
		return c, nil
	}
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	riskConn, err := connFor(o.riskAddr)
	if err != nil {
		return fmt.Errorf("risk service: %w", err)
	}
	remConn, err := connFor(o.remediationAddr)
	if err != nil {
		return fmt.Errorf("remediation service: %w", err)
	}
	a, err := agent.New(agent.Config{
		DeviceID: o.deviceID, Hostname: o.hostname, WatchDirs: o.watch, QuarantineDir: o.quarantineDir,
		Blocklist: blocklist, RescanInterval: o.rescan,
		Risk: riskv1.NewRiskServiceClient(riskConn), Remediation: remediationv1.NewAgentServiceClient(remConn),
		Logger: logger,
	})
	if err != nil {
		return err
	}
	logger.Info("condaccess-agent started", "device_id", o.deviceID, "watch", o.watch.String(), "quarantine_dir", o.quarantineDir,
		"risk_addr", o.riskAddr, "remediation_addr", o.remediationAddr, "blocklist_entries", len(blocklist), "state_dir", o.stateDir)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-watch.revoked:
			cancel(errRevoked)
		case <-ctx.Done():
		}
	}()
	var renewDone chan error
	if o.stateDir != "" {
		compConn, err := connFor(o.complianceAddr)
		if err != nil {
			return fmt.Errorf("compliance service: %w", err)
		}
		r := &renewer{dir: o.stateDir, client: compliancev1.NewDeviceIdentityServiceClient(compConn), log: logger,
			now: time.Now, retry: 2 * time.Second}
		for _, c := range conns {
			r.conns = append(r.conns, c)
		}
		renewDone = make(chan error, 1)
		go func() {
			err := r.run(ctx)
			if err != nil {
				cancel(err)
			}
			renewDone <- err
		}()
	}
	err = a.Run(ctx)
	if renewDone != nil {
		<-renewDone
	}
	if cause := context.Cause(ctx); errors.Is(cause, errRevoked) || cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}
