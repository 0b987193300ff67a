package complianceapp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/consumer"
	"github.com/condaccess/condaccess/internal/lease"
	"github.com/condaccess/condaccess/internal/suite"
	"github.com/condaccess/condaccess/services/compliance"
	"github.com/condaccess/condaccess/services/compliance/compliancegrpc"
	"github.com/condaccess/condaccess/services/compliance/compliancestore"
)

// ConsumerLease is the lease whose holder runs the compliance service's once-only
// background work on PostgreSQL: the risk consumer, the re-evaluation sweeps, the
// deadline timer and the event log's compaction.
const ConsumerLease = "compliance-consumer"

// riskFeed names the risk feed's row in feed_contact.
const riskFeed = "risk"

// observeInterval is how often every replica reads what the others stored (sweep
// state, earliest deadline, the leader's risk feed contact).
const observeInterval = 200 * time.Millisecond

// compactInterval is how often the leader compacts the event log.
const compactInterval = time.Minute

// SupportsPostgres implements suite.PostgresReady.
func (*Factory) SupportsPostgres() {}

// PGService is the compliance service on PostgreSQL: one of any number of replicas
// on one database. Every replica serves reads, writes and watches; the replica
// holding ConsumerLease runs the background work, each of its transactions fenced by
// the lease's token.
type PGService struct {
	store *compliancestore.PGStore
	svc   *compliance.Service
	grpc  *compliancegrpc.Server
	// Consumer follows the risk event stream (on the leader only).
	Consumer *consumer.Consumer[*riskv1.RiskEvent]
	// Lease elects the leader.
	Lease   *lease.PG
	metrics metric.Registration
	log     *slog.Logger
	health  consumer.HealthSetter
	// contact is the leader's last risk feed contact as stored (read by every replica).
	contact contactGate
}

// contactGate holds the leader's risk feed contacts as read from the database, and
// releases one only once this replica's event log has seen every compliance event
// committed before it: risk_as_of on this replica's streams never runs ahead of the
// events they deliver (another replica's events reach this one's log by NOTIFY or
// polling, a little later).
type contactGate struct {
	mu       sync.Mutex
	released time.Time      // the contact risk_as_of may use
	pending  []contactAfter // newer contacts, ascending, waiting for the log
}

// contactAfter is a contact and the log head read with it.
type contactAfter struct {
	t    time.Time
	head int64
}

// maxPendingContacts bounds the contacts waiting for the log (at one read per
// observeInterval: several seconds of lag).
const maxPendingContacts = 64

// observe records a contact t read with the log's head (FeedContact).
func (g *contactGate) observe(t time.Time, head int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if n := len(g.pending); !t.After(g.released) || n > 0 && !t.After(g.pending[n-1].t) {
		return
	}
	if len(g.pending) == maxPendingContacts {
		g.pending = append(g.pending[:0], g.pending[1:]...)
	}
	g.pending = append(g.pending, contactAfter{t, head})
}

// asOf returns the newest contact whose events this replica's log (at rev) has seen.
func (g *contactGate) asOf(rev int64) time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	i := 0
	for i < len(g.pending) && g.pending[i].head <= rev {
		g.released = g.pending[i].t
		i++
	}
	g.pending = append(g.pending[:0], g.pending[i:]...)
	return g.released
}

func (f *Factory) newPG(ctx context.Context, env suite.Env, progress time.Duration) (*PGService, error) {
	logger := env.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	st, err := compliancestore.OpenPG(ctx, compliancestore.PGOptions{
		URL:              env.DatabaseURL,
		Retention:        f.retention,
		ProgressInterval: progress,
		CompactInterval:  -1, // the leader compacts (PGService.lead)
		Logger:           logger,
	})
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	conn, err := env.Dial(env.Peers.Risk)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("dial risk %s: %w", env.Peers.Risk, err)
	}
	svc := compliance.New(compliance.Config{Store: st, Encode: compliancegrpc.EncodeEvent, Logger: logger})
	if err := f.setIdentity(svc, env); err != nil {
		st.Close()
		return nil, err
	}
	s := &PGService{
		store:    st,
		svc:      svc,
		grpc:     compliancegrpc.New(svc),
		Consumer: NewRiskConsumer(svc, riskv1.NewRiskServiceClient(conn), env, f.ApplyFault),
		Lease:    st.Lease(lease.PGOptions{Name: ConsumerLease, Duration: env.LeaseDuration, Logger: logger}),
		log:      logger,
		health:   healthOf(env),
	}
	// risk_as_of: this replica's own contact while it leads, else the leader's as stored.
	s.grpc.SetRiskAsOf(s.riskAsOf)
	if s.metrics, err = registerMetrics(s.Consumer, st.Revision); err != nil {
		st.Close()
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return s, nil
}

func (s *PGService) riskAsOf() time.Time {
	own := s.Consumer.Status().LastContact
	if stored := s.contact.asOf(s.store.Revision()); stored.After(own) {
		return stored
	}
	return own
}

// Register implements suite.Service.
func (s *PGService) Register(r grpc.ServiceRegistrar) { compliancegrpc.Register(r, s.grpc) }

// Domain returns the compliance domain service.
func (s *PGService) Domain() *compliance.Service { return s.svc }

// Store returns the PostgreSQL store.
func (s *PGService) Store() *compliancestore.PGStore { return s.store }

// Run implements suite.Service: every replica observes what the others store; the
// lease's holder also runs the background work until it loses the lease.
func (s *PGService) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.observe(ctx)
	}()
	name := compliancev1.ComplianceService_ServiceDesc.ServiceName
	_ = s.Lease.Run(ctx, func(lctx context.Context, token int64) error {
		if s.health != nil && s.Consumer.Status().Stuck {
			// Leading again with the consumer stuck where it stopped: say so until it
			// applies that event (the consumer announces only a new stuck event).
			s.health.SetServingStatus(name, healthpb.HealthCheckResponse_NOT_SERVING)
		}
		err := s.lead(lctx, token)
		if ctx.Err() == nil && s.health != nil && s.Consumer.Status().Stuck {
			// Leadership lost while the consumer was stuck: this replica no longer
			// consumes, and what it serves is the database's, as fresh as the new
			// leader's consumer keeps it (whose health speaks for the feed).
			s.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
		}
		return err
	})
	wg.Wait()
	return nil
}

// observe calls Observe and reads the stored risk feed contact every observeInterval.
func (s *PGService) observe(ctx context.Context) {
	tk := time.NewTicker(observeInterval)
	defer tk.Stop()
	for {
		err := s.svc.Observe(ctx)
		if err == nil {
			var t time.Time
			var head int64
			if t, head, err = s.store.FeedContact(ctx, riskFeed); err == nil && !t.IsZero() {
				s.contact.observe(t, head)
			}
		}
		if err != nil && ctx.Err() == nil {
			s.log.Warn("compliance: reading the shared state failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
	}
}

// lead runs the background work with every store write fenced by token: the risk
// consumer, the sweeps and deadline timer, compaction, and the risk feed's contact
// time for the other replicas. It returns when ctx ends (leadership lost or shutdown).
func (s *PGService) lead(ctx context.Context, token int64) error {
	ctx = compliancestore.WithFence(ctx, s.Lease, token)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Add(3)
	go func() {
		defer wg.Done()
		errs[0] = s.svc.Run(ctx)
	}()
	go func() {
		defer wg.Done()
		if err := s.Consumer.Run(ctx); ctx.Err() == nil {
			errs[1] = err
		}
	}()
	go func() {
		defer wg.Done()
		s.leaderChores(ctx)
	}()
	wg.Wait()
	return errors.Join(errs...)
}

// leaderChores stores the risk feed's contact time every observeInterval and
// compacts the event log every compactInterval.
func (s *PGService) leaderChores(ctx context.Context) {
	tk := time.NewTicker(observeInterval)
	defer tk.Stop()
	lastCompact := time.Now()
	var stored time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		if c := s.Consumer.Status().LastContact; c.After(stored) {
			if err := s.store.PutFeedContact(ctx, riskFeed, c); err != nil && ctx.Err() == nil {
				s.log.Warn("compliance: storing the risk feed contact failed", "err", err)
			} else {
				stored = c
			}
		}
		if time.Since(lastCompact) >= compactInterval {
			lastCompact = time.Now()
			if err := s.store.Compact(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("compliance: compaction failed", "err", err)
			}
		}
	}
}

// Close implements suite.Service.
func (s *PGService) Close() error {
	return errors.Join(s.metrics.Unregister(), s.store.Close())
}

// Audit implements suite.Audited.
func (s *PGService) Audit() *audit.Log { return s.store.Audit() }
