package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver
	"google.golang.org/grpc"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/ssf"
	"github.com/condaccess/condaccess/internal/suite"
)

func init() {
	register("ssf", "Shared Signals admin: ssf receivers add NAME, ssf rotate-key (act on --data-dir)", runSSF)
}

// ssfService adapts the Shared Signals service to suite.Service (it has no gRPC API).
type ssfService struct {
	*ssf.Service
	lock *ssfLock // with --database-url: this process's claim to run SSF alone
}

func (ssfService) Register(grpc.ServiceRegistrar) {}

// Run runs the service; with a lock, it fails (and serve with it) when the lock's
// session ends, since another replica may then start the transmitter.
func (s ssfService) Run(ctx context.Context) error {
	if s.lock == nil {
		return s.Service.Run(ctx)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	watched := make(chan struct{})
	go func() { defer close(watched); cancel(s.lock.watch(ctx, ssfLockCheck)) }()
	err := s.Service.Run(ctx)
	cancel(nil)
	<-watched // no check runs on the lock's connection once Run returns (Close releases it)
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// Close closes the store and releases the lock.
func (s ssfService) Close() error {
	err := s.Service.Close()
	if s.lock != nil {
		err = errors.Join(err, s.lock.release())
	}
	return err
}

// ssfEnabled reads --ssf: auto runs the Shared Signals service with the embedded
// stores and not with --database-url, where its SQLite store in --data-dir would be one
// per replica (streams unknown to the others, every SET pushed once per replica).
func ssfEnabled(o serveOptions) (bool, error) {
	switch o.ssfMode {
	case "", "auto":
		return o.databaseURL == "", nil
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

// ssfLockCheck is how often a running Shared Signals service checks its lock's session.
var ssfLockCheck = 5 * time.Second

// errSSFElsewhere: another process on the database holds the Shared Signals lock.
var errSSFElsewhere = errors.New("another process on this database runs the Shared Signals service (--ssf=on); run it on one replica only")

// ssfLock is a PostgreSQL session advisory lock that only one process on a database
// holds: the process that runs the Shared Signals service there. The lock lives as
// long as its connection: it is released when the process exits or is killed (the
// server ends the session), so a restarted or replacement process can take it.
type ssfLock struct {
	db   *sql.DB
	conn *sql.Conn
}

// lockSSF takes the lock, or fails with errSSFElsewhere at once (it never waits).
func lockSSF(ctx context.Context, url string) (_ *ssfLock, err error) {
	db, err := sql.Open("pgx", url)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			db.Close()
		}
	}()
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	var ok bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock(hashtext('condaccess.ssf'))`).Scan(&ok); err != nil {
		conn.Close()
		return nil, err
	}
	if !ok {
		conn.Close()
		return nil, errSSFElsewhere
	}
	return &ssfLock{db: db, conn: conn}, nil
}

// watch checks every interval that the lock's session is alive (the same pinned
// connection answers); it returns an error when it is not, nil when ctx ends.
func (l *ssfLock) watch(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		// Not cancelled with ctx: a query cancelled midway closes the connection, and
		// with it the session that release still needs.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), interval)
		// The pinned connection never reconnects: if it answers, it is the session
		// that holds the lock (nothing unlocks it but release).
		var one int
		err := l.conn.QueryRowContext(pctx, `SELECT 1`).Scan(&one)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("the Shared Signals lock's database session failed (another replica may take it over): %w", err)
		}
	}
}

// release unlocks (at once: ending the session alone frees the lock only once the
// server has noticed) and ends the lock's session.
func (l *ssfLock) release() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var unlocked bool
	err := l.conn.QueryRowContext(ctx, `SELECT pg_advisory_unlock(hashtext('condaccess.ssf'))`).Scan(&unlocked)
	if err == nil && !unlocked {
		err = errors.New("ssf: the Shared Signals lock was not held at release")
	}
	return errors.Join(err, l.conn.Close(), l.db.Close())
}

// startSSF builds the Shared Signals transmitter (and receiver) on the HTTP mux, fed by
// the event streams of the services at env.Peers.
//
// lock, with --database-url, is this process's claim (lockSSF) to run it alone; the
// service releases it on Close (the caller, when this fails).
func startSSF(ctx context.Context, o serveOptions, env suite.Env, logger *slog.Logger, httpAddr string, lock *ssfLock) (suite.Service, error) {
	svc, err := newSSF(ctx, o, env, logger, httpAddr)
	if err != nil {
		return nil, err
	}
	if lock != nil {
		logger.Info("this replica runs the Shared Signals service (--ssf=on; its store stays in --data-dir)", "data_dir", filepath.Join(o.dataDir, "ssf"))
	}
	return ssfService{Service: svc, lock: lock}, nil
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
		Mux: env.HTTPMux, Feeds: feeds, Sink: sink,
	})
	if err != nil {
		return nil, fmt.Errorf("ssf: %w", err)
	}
	return svc, nil
}

var receiverName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,255}$`)

// runSSF is `condaccess ssf receivers add NAME`: it stores a receiver with the hash of a
// fresh bearer token in the Shared Signals store of --data-dir and prints the token alone.
// The store is SQLite (WAL), so this works whether serve is running or stopped; the
// server looks tokens up on every request.
//
// `condaccess ssf rotate-key` makes a new signing key; the old one stays published at
// jwks_uri until the next rotation, and a running server signs with the new one from
// its next SET on.
func runSSF(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) >= 1 && args[0] == "rotate-key" {
		fs := flag.NewFlagSet("ssf rotate-key", flag.ContinueOnError)
		fs.SetOutput(stderr)
		dataDir := fs.String("data-dir", "./data", "data directory of serve")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		kid, err := ssf.RotateKey(filepath.Join(*dataDir, "ssf"))
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, kid)
		return err
	}
	if len(args) < 2 || args[0] != "receivers" || args[1] != "add" {
		return fmt.Errorf("%w: condaccess ssf receivers add [--data-dir DIR] NAME | condaccess ssf rotate-key [--data-dir DIR]", errUsage)
	}
	fs := flag.NewFlagSet("ssf receivers add", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "./data", "data directory of serve")
	if err := fs.Parse(args[2:]); err != nil {
		return err
	}
	if fs.NArg() != 1 || !receiverName.MatchString(fs.Arg(0)) {
		return fmt.Errorf("%w: want one receiver NAME (letters, digits, ._:/@-; it becomes the streams' aud)", errUsage)
	}
	if err := os.MkdirAll(filepath.Join(*dataDir, "ssf"), 0o700); err != nil {
		return err
	}
	st, err := ssf.OpenStore(ctx, ssf.StorePath(filepath.Join(*dataDir, "ssf")), slog.New(slog.NewTextHandler(stderr, nil)))
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
