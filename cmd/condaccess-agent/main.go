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
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"

	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/agent"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/server"
	"github.com/condaccess/condaccess/internal/telemetry"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

type options struct {
	server, riskAddr, remediationAddr string
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
	fs := flag.NewFlagSet("condaccess-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.server, "server", "127.0.0.1:7400", "gRPC address of the condaccess suite")
	fs.StringVar(&o.riskAddr, "risk-addr", "", "gRPC address of the risk service (overrides --server)")
	fs.StringVar(&o.remediationAddr, "remediation-addr", "", "gRPC address of the remediation service (overrides --server)")
	fs.StringVar(&o.deviceID, "device-id", "", "this device's id (required)")
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
	if o.deviceID == "" || o.quarantineDir == "" || len(o.watch) == 0 {
		return errors.New("--device-id, --quarantine-dir and at least one --watch are required")
	}
	if o.riskAddr == "" {
		o.riskAddr = o.server
	}
	if o.remediationAddr == "" {
		o.remediationAddr = o.server
	}
	if !insecureSet {
		o.insecure = o.ca == "" && auth.IsLoopback(o.riskAddr) && auth.IsLoopback(o.remediationAddr)
	}
	if o.insecure {
		if !auth.IsLoopback(o.riskAddr) || !auth.IsLoopback(o.remediationAddr) {
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
	dial := func(addr string) (*grpc.ClientConn, error) {
		opts, err := server.DialOptions(auth.ClientConfig{Insecure: o.insecure, CAFile: o.ca, CertFile: o.cert, KeyFile: o.key, ServerName: o.serverName})
		if err != nil {
			return nil, err
		}
		return grpc.NewClient(addr, opts...)
	}
	riskConn, err := dial(o.riskAddr)
	if err != nil {
		return fmt.Errorf("risk service %s: %w", o.riskAddr, err)
	}
	defer riskConn.Close()
	remConn := riskConn
	if o.remediationAddr != o.riskAddr {
		if remConn, err = dial(o.remediationAddr); err != nil {
			return fmt.Errorf("remediation service %s: %w", o.remediationAddr, err)
		}
		defer remConn.Close()
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
		"risk_addr", o.riskAddr, "remediation_addr", o.remediationAddr, "blocklist_entries", len(blocklist))
	return a.Run(ctx)
}
