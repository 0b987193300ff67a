// Package remediationapp plugs the remediation service into the condaccess binary.
package remediationapp

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/consumer"
	"github.com/condaccess/condaccess/internal/lease"
	"github.com/condaccess/condaccess/internal/suite"
	"github.com/condaccess/condaccess/services/remediation"
	"github.com/condaccess/condaccess/services/remediation/remediationgrpc"
	"github.com/condaccess/condaccess/services/remediation/remediationstore"
)

// Factory builds the remediation service.
type Factory struct {
	minSeverity       string
	approvalExpiry    time.Duration
	actionTimeout     time.Duration
	heartbeatInterval time.Duration
	helloTimeout      time.Duration
	retention         int64
	progressInterval  time.Duration
}

// Name implements suite.Factory.
func (*Factory) Name() string { return "remediation" }

// RegisterFlags implements suite.Factory.
func (f *Factory) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&f.minSeverity, "remediation-min-severity", "HIGH", "alert severity (LOW, MEDIUM, HIGH) at which an automated investigation opens; evidence of alerts at or above it is MALICIOUS, below it SUSPICIOUS")
	fs.DurationVar(&f.approvalExpiry, "remediation-approval-expiry", remediation.DefaultApprovalExpiry, "how long an action waits for approval before it counts as rejected")
	fs.DurationVar(&f.actionTimeout, "remediation-action-timeout", remediation.DefaultActionTimeout, "how long a sent action waits for the agent's result before it is TIMED_OUT")
	fs.DurationVar(&f.heartbeatInterval, "remediation-heartbeat-interval", remediation.DefaultHeartbeatInterval, "agent heartbeat interval; an agent is stale after three missed heartbeats")
	fs.DurationVar(&f.helloTimeout, "remediation-hello-timeout", remediationgrpc.DefaultHelloTimeout, "how long AgentService.Connect waits for the agent's hello before ending the stream (DEADLINE_EXCEEDED)")
	fs.Int64Var(&f.retention, "remediation-retention", 100000, "investigation events kept for WatchInvestigationEvents replay (0 keeps all)")
	fs.DurationVar(&f.progressInterval, "remediation-progress-interval", time.Second, "idle interval between progress messages on WatchInvestigationEvents")
}

// ParseSeverity parses LOW, MEDIUM, HIGH (or SEVERITY_HIGH...).
func ParseSeverity(s string) (remediation.Severity, error) {
	v, ok := commonv1.Severity_value["SEVERITY_"+strings.TrimPrefix(strings.ToUpper(s), "SEVERITY_")]
	if !ok || v <= int32(commonv1.Severity_SEVERITY_INFORMATIONAL) {
		return 0, fmt.Errorf("severity %q: want LOW, MEDIUM or HIGH", s)
	}
	return remediation.Severity(v), nil
}

// SupportsPostgres implements suite.PostgresReady.
func (*Factory) SupportsPostgres() {}

// New implements suite.Factory: it opens <DataDir>/remediation.db, or the schema
// remediation of env.DatabaseURL when set.
func (f *Factory) New(ctx context.Context, env suite.Env) (suite.Service, error) {
	minSev, err := ParseSeverity(f.minSeverity)
	if err != nil {
		return nil, fmt.Errorf("--remediation-min-severity: %w", err)
	}
	if env.Peers.Risk == "" {
		return nil, errors.New("remediation needs the risk service: set --risk-addr")
	}
	var st remediation.Store
	var pg *remediationstore.PGStore
	var sq *remediationstore.Store
	if env.DatabaseURL != "" {
		pg, err = remediationstore.OpenPG(ctx, remediationstore.PGOptions{
			URL: env.DatabaseURL, Encode: remediationgrpc.EncodeEvent,
			Retention: f.retention, ProgressInterval: f.progressInterval,
			CompactInterval: -1, // compaction runs on the lease's holder only (runLeader)
			Logger:          env.Logger,
		})
		st = pg
	} else {
		sq, err = remediationstore.Open(ctx, remediationstore.Options{
			Path: filepath.Join(env.DataDir, "remediation.db"), Encode: remediationgrpc.EncodeEvent,
			Retention: f.retention, ProgressInterval: f.progressInterval, Logger: env.Logger,
		})
		st = sq
	}
	if err != nil {
		return nil, err
	}
	s := &service{store: st, log: env.Logger}
	if pg != nil {
		s.audit = pg.Audit()
	} else {
		s.audit = sq.Audit()
	}
	riskConn, err := env.Dial(env.Peers.Risk)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("dial risk: %w", err)
	}
	s.conns = append(s.conns, riskConn)
	risk := riskv1.NewRiskServiceClient(riskConn)
	var devices remediation.DeviceDirectory
	if env.Peers.Compliance != "" {
		cc, err := env.Dial(env.Peers.Compliance)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("dial compliance: %w", err)
		}
		s.conns = append(s.conns, cc)
		devices = NewDeviceDirectory(compliancev1.NewDeviceServiceClient(cc))
	}
	s.svc = remediation.New(remediation.Config{
		Store: st, Risk: NewRiskClient(risk), Devices: devices, Tracing: OtelTracing{},
		MinSeverity: minSev, ApprovalExpiry: f.approvalExpiry, ActionTimeout: f.actionTimeout,
		HeartbeatInterval: f.heartbeatInterval, Replicated: pg != nil, Logger: env.Logger,
	})
	s.grpc = remediationgrpc.New(remediationgrpc.Config{Service: s.svc, Store: st, Logger: env.Logger, HelloTimeout: f.helloTimeout})
	s.newConsumer = func() *consumer.Consumer[*riskv1.RiskEvent] {
		return NewConsumer(s.svc, st, risk, minSev, env.Logger, func(c *consumer.Config[*riskv1.RiskEvent]) {
			if env.Health != nil {
				c.Health, c.HealthName = env.Health, remediationv1.RemediationService_ServiceDesc.ServiceName
			}
		})
	}
	if pg == nil {
		return s, nil
	}
	s.pg = pg
	s.lease = pg.Lease(lease.PGOptions{Name: LeaderLease, Duration: env.LeaseDuration, Logger: env.Logger})
	return s, nil
}

// LeaderLease is the lease whose holder runs the remediation service's once-only
// work on PostgreSQL: the risk event consumer, approval expiry and result timeouts,
// alert resolution retries, event log compaction.
const LeaderLease = "remediation-leader"

type service struct {
	store       remediation.Store
	svc         *remediation.Service
	grpc        *remediationgrpc.Server
	newConsumer func() *consumer.Consumer[*riskv1.RiskEvent]
	conns       []*grpc.ClientConn
	once        sync.Once
	log         *slog.Logger
	audit       *audit.Log // the store's, on SQLite or PostgreSQL

	// On PostgreSQL only.
	pg    *remediationstore.PGStore
	lease *lease.PG
}

func (s *service) Register(r grpc.ServiceRegistrar) { remediationgrpc.Register(r, s.grpc) }

// Run does the background work until ctx ends. On SQLite (one process) it runs the
// risk event consumer and the service's timers and retries. On PostgreSQL every
// replica watches the store's event log for the changes other replicas commit
// (actions for the agents connected here, deadlines, resolutions), and the
// replica holding the lease runs the once-only work, fenced by the lease's token.
func (s *service) Run(ctx context.Context) error {
	if s.pg == nil {
		s.runLeader(ctx)
		return nil
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.watchChanges(ctx) }()
	_ = s.lease.Run(ctx, func(ctx context.Context, token int64) error {
		s.runLeader(remediationstore.WithFence(ctx, s.lease, token))
		return nil
	})
	wg.Wait()
	return nil
}

// runLeader runs the consumer, the timers and the retries until ctx ends (on
// PostgreSQL: until the leadership ends; ctx then fences every Update they make).
func (s *service) runLeader(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = s.svc.Run(ctx) }()
	go func() { defer wg.Done(); _ = s.newConsumer().Run(ctx) }()
	if s.pg != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.compact(ctx) }()
	}
	wg.Wait()
}

// compactInterval is how often the leader compacts the event log (eventlog's default).
const compactInterval = time.Minute

func (s *service) compact(ctx context.Context) {
	tk := time.NewTicker(compactInterval)
	defer tk.Stop()
	for {
		if err := s.pg.Compact(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("remediation: compaction failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
	}
}

// watchChanges follows the store's event log from its head and hands every change
// to Service.Observe, so that an action another replica queued reaches the agent
// connected here. When the watch fails it waits, then reads the head, redelivers
// the pending actions of the agents connected here (changes may have been missed)
// and watches again from that head.
func (s *service) watchChanges(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for {
		head, err := s.pg.Head(ctx)
		if err == nil {
			if err = s.svc.Redeliver(ctx); err == nil {
				err = s.pg.Watch(ctx, head, func(rev int64, payload []byte) error {
					backoff = 100 * time.Millisecond
					c, err := remediationgrpc.DecodeChange(payload)
					if err != nil {
						s.log.Error("remediation: undecodable event in the log, skipped", "revision", rev, "err", err)
						return nil
					}
					return s.svc.Observe(ctx, c)
				}, func(int64) error { return nil })
			}
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("remediation: watching the event log for other replicas' changes failed, retrying", "err", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (s *service) Close() error {
	var err error
	s.once.Do(func() {
		for _, c := range s.conns {
			_ = c.Close()
		}
		err = s.store.Close()
	})
	return err
}

// --- risk -------------------------------------------------------------------------

type riskClient struct{ c riskv1.RiskServiceClient }

// NewRiskClient adapts the risk service's client to remediation.RiskClient.
func NewRiskClient(c riskv1.RiskServiceClient) remediation.RiskClient { return riskClient{c} }

func (r riskClient) GetAlert(ctx context.Context, id string) (*remediation.Alert, error) {
	resp, err := r.c.GetAlert(ctx, &riskv1.GetAlertRequest{AlertId: id})
	if status.Code(err) == codes.NotFound {
		return nil, fmt.Errorf("%w: alert %s", remediation.ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	return remediationgrpc.AlertFromProto(resp.GetAlert()), nil
}

func (r riskClient) ResolveAlert(ctx context.Context, alertID, investigationID string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := r.c.ResolveAlert(ctx, &riskv1.ResolveAlertRequest{
		AlertId:         alertID,
		Classification:  riskv1.AlertClassification_ALERT_CLASSIFICATION_TRUE_POSITIVE,
		Comment:         "remediated by automated investigation " + investigationID,
		InvestigationId: investigationID,
	})
	switch status.Code(err) {
	case codes.OK, codes.FailedPrecondition: // FAILED_PRECONDITION: already resolved
		return nil
	case codes.NotFound:
		return fmt.Errorf("%w: alert %s", remediation.ErrNotFound, alertID)
	}
	return err
}

// --- compliance -------------------------------------------------------------------

type deviceDirectory struct {
	c compliancev1.DeviceServiceClient
}

// NewDeviceDirectory adapts the compliance service's DeviceService client.
func NewDeviceDirectory(c compliancev1.DeviceServiceClient) remediation.DeviceDirectory {
	return deviceDirectory{c}
}

func (d deviceDirectory) DeviceGroups(ctx context.Context, deviceID string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := d.c.GetDevice(ctx, &compliancev1.GetDeviceRequest{DeviceId: deviceID})
	if status.Code(err) == codes.NotFound {
		return nil, fmt.Errorf("%w: device %s", remediation.ErrNotFound, deviceID)
	}
	if err != nil {
		return nil, err
	}
	return resp.GetDevice().GetGroups(), nil
}

// --- risk event consumer -----------------------------------------------------------

type riskSource struct{ c riskv1.RiskServiceClient }

type riskStream struct {
	s grpc.ServerStreamingClient[riskv1.WatchRiskEventsResponse]
}

func (r riskSource) Watch(ctx context.Context, start int64) (consumer.Stream[*riskv1.RiskEvent], error) {
	s, err := r.c.WatchRiskEvents(ctx, &riskv1.WatchRiskEventsRequest{StartRevision: start})
	if err != nil {
		return nil, err
	}
	return riskStream{s}, nil
}

func (r riskStream) Recv() (*riskv1.RiskEvent, int64, bool, error) {
	m, err := r.s.Recv()
	if err != nil {
		return nil, 0, false, err
	}
	if p := m.GetProgress(); p != nil {
		return nil, p.GetRevision(), true, nil
	}
	ev := m.GetEvent()
	return ev, ev.GetRevision(), false, nil
}

// NewConsumer follows the risk service's events: REPORTED alerts open or join
// investigations (idempotently: an alert already linked is skipped); the cursor is
// stored in the same transaction as what an event changes. Resync takes the risk
// revision first, then lists the active alerts at or above minSev, so every event
// after that revision is applied again on top (harmlessly).
// opts adjust the consumer's configuration (e.g. its health reporting).
func NewConsumer(svc *remediation.Service, st remediation.Store, risk riskv1.RiskServiceClient, minSev remediation.Severity, logger *slog.Logger, opts ...func(*consumer.Config[*riskv1.RiskEvent])) *consumer.Consumer[*riskv1.RiskEvent] {
	cfg := consumer.Config[*riskv1.RiskEvent]{
		Name:   "remediation<-risk",
		Source: riskSource{risk},
		Cursor: st.Cursor,
		Resync: func(ctx context.Context) (int64, error) {
			lr, err := risk.ListDeviceRisks(ctx, &riskv1.ListDeviceRisksRequest{PageSize: 1})
			if err != nil {
				return 0, fmt.Errorf("list device risks: %w", err)
			}
			rev := lr.GetRevision()
			for _, stt := range []riskv1.AlertStatus{riskv1.AlertStatus_ALERT_STATUS_NEW, riskv1.AlertStatus_ALERT_STATUS_IN_PROGRESS} {
				tok := ""
				for {
					resp, err := risk.ListAlerts(ctx, &riskv1.ListAlertsRequest{PageSize: 1000, PageToken: tok, Status: stt, MinSeverity: commonv1.Severity(minSev)})
					if err != nil {
						return 0, fmt.Errorf("list alerts: %w", err)
					}
					for _, a := range resp.GetAlerts() {
						if err := svc.OnAlert(ctx, remediationgrpc.AlertFromProto(a), remediation.TraceContext{}, 0); err != nil {
							return 0, err
						}
					}
					if tok = resp.GetNextPageToken(); tok == "" {
						break
					}
				}
			}
			return rev, svc.StoreCursor(ctx, rev)
		},
		Apply: func(ctx context.Context, ev *riskv1.RiskEvent, rev int64) error {
			if ac := ev.GetAlertChanged(); ac != nil && ac.GetType() == riskv1.AlertChangeType_ALERT_CHANGE_TYPE_REPORTED {
				return svc.OnAlert(ctx, remediationgrpc.AlertFromProto(ac.GetAlert()), remediationgrpc.TraceFromProto(ev.GetTraceContext()), rev)
			}
			return svc.StoreCursor(ctx, rev)
		},
		Logger: logger,
	}
	for _, o := range opts {
		o(&cfg)
	}
	return consumer.New(cfg)
}

// Audit implements suite.Audited.
func (s *service) Audit() *audit.Log { return s.audit }
