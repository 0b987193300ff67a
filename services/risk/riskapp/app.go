// Package riskapp plugs the risk service into the condaccess binary.
package riskapp

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"google.golang.org/grpc"

	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/lease"
	"github.com/condaccess/condaccess/internal/suite"
	"github.com/condaccess/condaccess/services/risk"
	"github.com/condaccess/condaccess/services/risk/riskgrpc"
	"github.com/condaccess/condaccess/services/risk/riskstore"
)

// Flag defaults.
const (
	DefaultRetention        = 1_000_000
	DefaultProgressInterval = time.Second
)

// Factory builds the risk service from its flags.
type Factory struct {
	retention        int64
	progressInterval time.Duration
	watchBuffer      int
	synchronous      string
	devAsDevice      bool
	eventCacheBytes  int64
	set              bool
}

// Name implements suite.Factory.
func (*Factory) Name() string { return "risk" }

// RegisterFlags implements suite.Factory.
func (f *Factory) RegisterFlags(fs *flag.FlagSet) {
	f.set = true
	fs.Int64Var(&f.retention, "risk-retention", DefaultRetention, "risk events kept for WatchRiskEvents replay (0 keeps all); older start revisions get OUT_OF_RANGE")
	fs.DurationVar(&f.progressInterval, "risk-progress-interval", DefaultProgressInterval, "idle interval between progress messages on WatchRiskEvents streams")
	fs.IntVar(&f.watchBuffer, "risk-watch-buffer", 1024, "events a risk watcher may fall behind the live stream before it is cut off with RESOURCE_EXHAUSTED")
	fs.BoolVar(&f.devAsDevice, "risk-dev-reporter-is-device", false, "development mode only (no client certificates): record alerts as reported by their device itself, so that FULL automation may act on them; by default their reporter is DEVELOPMENT and every action they cause waits for approval")
	fs.Int64Var(&f.eventCacheBytes, "risk-event-cache-bytes", riskgrpc.DefaultEventCacheBytes, "byte cap of the decoded events kept for WatchRiskEvents fan-out (besides its 4,096 entries)")
	fs.StringVar(&f.synchronous, "risk-sqlite-synchronous", "FULL", "SQLite synchronous setting of the risk store: FULL (acknowledged alerts survive power loss) or NORMAL (survive a process crash)")
}

// SupportsPostgres implements suite.PostgresReady.
func (*Factory) SupportsPostgres() {}

// New implements suite.Factory: it opens <DataDir>/risk.db, or the schema risk of
// env.DatabaseURL when set.
func (f *Factory) New(ctx context.Context, env suite.Env) (suite.Service, error) {
	if !f.set {
		f.RegisterFlags(flag.NewFlagSet("risk", flag.ContinueOnError))
	}
	if f.retention < 0 {
		return nil, fmt.Errorf("--risk-retention must not be negative")
	}
	if env.DatabaseURL != "" {
		st, err := riskstore.OpenPG(ctx, riskstore.PGOptions{
			URL:              env.DatabaseURL,
			Retention:        f.retention,
			ProgressInterval: f.progressInterval,
			CompactInterval:  -1, // compaction runs on the lease's leader only (pgService.Run)
			Logger:           env.Logger,
		})
		if err != nil {
			return nil, err
		}
		svc := risk.New(risk.Config{Store: st, Encode: riskgrpc.EncodeEvent, Logger: env.Logger})
		return &pgService{
			store:        st,
			srv:          riskgrpc.New(riskgrpc.Config{Service: svc, DevelopmentReporterIsDevice: f.devAsDevice, EventCacheBytes: f.eventCacheBytes}),
			lease:        st.Lease(lease.PGOptions{Name: CompactionLease, Duration: env.LeaseDuration, Logger: env.Logger}),
			compactEvery: compactInterval,
			log:          env.Logger,
		}, nil
	}
	st, err := riskstore.Open(ctx, riskstore.Options{
		Path:             filepath.Join(env.DataDir, "risk.db"),
		Retention:        f.retention,
		ProgressInterval: f.progressInterval,
		SubscriberBuffer: f.watchBuffer,
		Synchronous:      f.synchronous,
		Logger:           env.Logger,
	})
	if err != nil {
		return nil, err
	}
	svc := risk.New(risk.Config{Store: st, Encode: riskgrpc.EncodeEvent, Logger: env.Logger})
	return &service{store: st, srv: riskgrpc.New(riskgrpc.Config{Service: svc, DevelopmentReporterIsDevice: f.devAsDevice, EventCacheBytes: f.eventCacheBytes})}, nil
}

type service struct {
	store *riskstore.Store
	srv   *riskgrpc.Server
}

func (s *service) Register(r grpc.ServiceRegistrar) { riskgrpc.Register(r, s.srv) }

// Run has no background work: watch streams end when the server stops, because
// internal/server drains every stream.
func (s *service) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

func (s *service) Close() error { return s.store.Close() }

// Audit implements suite.Audited.
func (s *service) Audit() *audit.Log { return s.store.Audit() }

// CompactionLease is the lease whose holder compacts the risk event log on PostgreSQL.
const CompactionLease = "risk-compaction"

// compactInterval is how often the leader compacts (eventlog's default).
const compactInterval = time.Minute

// pgService is the risk service on the PostgreSQL store.
type pgService struct {
	store        *riskstore.PGStore
	srv          *riskgrpc.Server
	lease        *lease.PG
	compactEvery time.Duration
	log          *slog.Logger
}

func (s *pgService) Register(r grpc.ServiceRegistrar) { riskgrpc.Register(r, s.srv) }

// Run compacts the event log every compactEvery while this replica holds the
// compaction lease (one replica at a time does; another takes over within
// --lease-duration of its loss).
func (s *pgService) Run(ctx context.Context) error {
	_ = s.lease.Run(ctx, func(ctx context.Context, _ int64) error {
		tk := time.NewTicker(s.compactEvery)
		defer tk.Stop()
		for {
			if err := s.store.Compact(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("risk: compaction failed", "err", err)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-tk.C:
			}
		}
	})
	return nil
}

func (s *pgService) Close() error { return s.store.Close() }

// Audit implements suite.Audited.
func (s *pgService) Audit() *audit.Log { return s.store.Audit() }
