package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver
	"google.golang.org/grpc"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/ssf"
	"github.com/condaccess/condaccess/internal/suite"
)

func init() {
	register("ssf", "Shared Signals admin: ssf receivers add NAME, ssf rotate-key (act on --data-dir, or --database-url)", runSSF)
}

// ssfService adapts the Shared Signals service to suite.Service (it has no gRPC API).
type ssfService struct{ *ssf.Service }

func (ssfService) Register(grpc.ServiceRegistrar) {}

// ssfEnabled reads --ssf: auto and on run the Shared Signals service (on needs
// --http-addr); with --database-url its store is PostgreSQL schema "ssf", shared by
// every replica, and only the holder of the "ssf" lease follows the feeds and pushes.
func ssfEnabled(o serveOptions) (bool, error) {
	switch o.ssfMode {
	case "", "auto":
		return true, nil
	case "on":
		if o.httpAddr == "" {
			return false, fmt.Errorf("%w: --ssf=on needs --http-addr (the Shared Signals endpoints are HTTP)", errUsage)
		}
		return true, nil
	case "off":
		return false, nil
	}
	return false, fmt.Errorf("%w: --ssf must be auto, on or off, not %q", errUsage, o.ssfMode)
}

// startSSF builds the Shared Signals transmitter (and receiver) on the HTTP mux, fed by
// the event streams of the services at env.Peers.
func startSSF(ctx context.Context, o serveOptions, env suite.Env, logger *slog.Logger, httpAddr string) (suite.Service, error) {
	svc, err := newSSF(ctx, o, env, logger, httpAddr)
	if err != nil {
		return nil, err
	}
	return ssfService{Service: svc}, nil
}

// newSSF builds the Shared Signals service on the HTTP mux.
func newSSF(ctx context.Context, o serveOptions, env suite.Env, logger *slog.Logger, httpAddr string) (*ssf.Service, error) {
	var feeds ssf.Feeds
	var sink ssf.AlertSink
	if a := env.Peers.Compliance; a != "" {
		conn, err := env.Dial(a)
		if err != nil {
			return nil, err
		}
		feeds.Compliance = compliancev1.NewComplianceServiceClient(conn)
	}
	if a := env.Peers.Access; a != "" {
		conn, err := env.Dial(a)
		if err != nil {
			return nil, err
		}
		feeds.Access = accessv1.NewAccessServiceClient(conn)
	}
	if a := env.Peers.Risk; a != "" {
		conn, err := env.Dial(a)
		if err != nil {
			return nil, err
		}
		feeds.Risk = riskv1.NewRiskServiceClient(conn)
		sink = ssf.GRPCAlertSink{Client: feeds.Risk}
	}
	if o.ssf.Issuer == "" && o.tlsCert != "" {
		o.ssf.Issuer = "https://" + httpAddr // the HTTP address serves TLS when --tls-cert is set
	}
	svc, err := ssf.New(ctx, o.ssf, ssf.Env{
		DataDir: filepath.Join(o.dataDir, "ssf"), HTTPAddr: httpAddr, Insecure: o.tlsCert == "" && o.tlsKey == "" && o.tlsClientCA == "", Logger: logger.With("service", "ssf"),
		Mux: env.HTTPMux, Feeds: feeds, Sink: sink, DatabaseURL: o.databaseURL, LeaseDuration: o.leaseDuration,
	})
	if err != nil {
		return nil, fmt.Errorf("ssf: %w", err)
	}
	return svc, nil
}

var receiverName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,255}$`)

// runSSF is `condaccess ssf receivers add NAME`: it stores a receiver with the hash of a
// fresh bearer token in the Shared Signals store of --data-dir (or, with
// --database-url, of PostgreSQL schema "ssf") and prints the token alone. This works
// whether serve is running or stopped; the server looks tokens up on every request.
//
// `condaccess ssf rotate-key` makes a new signing key; the old one stays published at
// jwks_uri until the next rotation, and a running server signs with the new one from
// its next SET on (on PostgreSQL, every replica within seconds).
func runSSF(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) >= 1 && args[0] == "rotate-key" {
		fs := flag.NewFlagSet("ssf rotate-key", flag.ContinueOnError)
		fs.SetOutput(stderr)
		dataDir := fs.String("data-dir", "./data", "data directory of serve")
		dbURL := fs.String("database-url", "", "PostgreSQL URL of serve's --database-url (the keys are then in the database)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		var kid string
		var err error
		if *dbURL != "" {
			st, err := ssf.OpenPGStore(ctx, *dbURL, slog.New(slog.NewTextHandler(stderr, nil)))
			if err != nil {
				return err
			}
			defer st.Close()
			kid, err = ssf.RotatePGKey(ctx, st)
		} else {
			kid, err = ssf.RotateKey(filepath.Join(*dataDir, "ssf"))
		}
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, kid)
		return err
	}
	if len(args) < 2 || args[0] != "receivers" || args[1] != "add" {
		return fmt.Errorf("%w: condaccess ssf receivers add [--data-dir DIR | --database-url URL] NAME | condaccess ssf rotate-key [--data-dir DIR | --database-url URL]", errUsage)
	}
	fs := flag.NewFlagSet("ssf receivers add", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "./data", "data directory of serve")
	dbURL := fs.String("database-url", "", "PostgreSQL URL of serve's --database-url (the receivers are then in the database)")
	if err := fs.Parse(args[2:]); err != nil {
		return err
	}
	if fs.NArg() != 1 || !receiverName.MatchString(fs.Arg(0)) {
		return fmt.Errorf("%w: want one receiver NAME (letters, digits, ._:/@-; it becomes the streams' aud)", errUsage)
	}
	var st *ssf.Store
	var err error
	if *dbURL != "" {
		st, err = ssf.OpenPGStore(ctx, *dbURL, slog.New(slog.NewTextHandler(stderr, nil)))
	} else {
		if err := os.MkdirAll(filepath.Join(*dataDir, "ssf"), 0o700); err != nil {
			return err
		}
		st, err = ssf.OpenStore(ctx, ssf.StorePath(filepath.Join(*dataDir, "ssf")), slog.New(slog.NewTextHandler(stderr, nil)))
	}
	if err != nil {
		return err
	}
	defer st.Close()
	tok := ssf.NewToken()
	if err := st.AddReceiver(ctx, fs.Arg(0), tok); err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
