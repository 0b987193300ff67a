// Package complianceapp plugs the compliance service into the condaccess binary: its store, its gRPC servers, the risk event consumer and the background work.
package complianceapp

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/consumer"
	"github.com/condaccess/condaccess/internal/devca"
	"github.com/condaccess/condaccess/internal/suite"
	"github.com/condaccess/condaccess/internal/telemetry"
	"github.com/condaccess/condaccess/services/compliance"
	"github.com/condaccess/condaccess/services/compliance/compliancegrpc"
	"github.com/condaccess/condaccess/services/compliance/compliancestore"
)

// Defaults of the service's flags.
const (
	DefaultRetention        = 100_000
	DefaultProgressInterval = time.Second
)

// Factory builds the compliance service.
type Factory struct {
	certTTL     time.Duration
	retention   int64
	progress    time.Duration
	synchronous string
	// ApplyFault, when set, runs before the risk consumer applies each event; an error
	// fails that apply. Fault injection for tests of a stuck consumer; nil in production.
	ApplyFault func(rev int64) error
}

// Name implements suite.Factory.
func (*Factory) Name() string { return "compliance" }

// RegisterFlags implements suite.Factory.
func (f *Factory) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&f.certTTL, "device-cert-ttl", compliance.DefaultDeviceCertTTL, "lifetime of the device certificates the compliance service issues (agents renew at two thirds)")
	fs.Int64Var(&f.retention, "compliance-retention", DefaultRetention, "compliance events kept for watchers that resume (0 = keep all)")
	fs.DurationVar(&f.progress, "compliance-progress-interval", DefaultProgressInterval, "idle interval between progress messages on WatchComplianceEvents")
	fs.StringVar(&f.synchronous, "compliance-sqlite-synchronous", "FULL", "SQLite synchronous mode of the compliance store: FULL (acknowledged writes survive power loss) or NORMAL")
}

// New implements suite.Factory: it opens <DataDir>/compliance.db, or the schema
// compliance of env.DatabaseURL when set.
func (f *Factory) New(ctx context.Context, env suite.Env) (suite.Service, error) {
	if env.Peers.Risk == "" {
		return nil, errors.New("compliance needs the risk service's address (--risk-addr)")
	}
	progress := f.progress
	if progress <= 0 {
		progress = DefaultProgressInterval
	}
	if f.retention < 0 {
		return nil, errors.New("--compliance-retention must not be negative")
	}
	if env.DatabaseURL != "" {
		return f.newPG(ctx, env, progress)
	}
	st, err := compliancestore.Open(ctx, compliancestore.Options{
		Path:             filepath.Join(env.DataDir, "compliance.db"),
		Retention:        f.retention,
		ProgressInterval: progress,
		Synchronous:      f.synchronous,
		Logger:           env.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	conn, err := env.Dial(env.Peers.Risk)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("dial risk %s: %w", env.Peers.Risk, err)
	}
	svc := compliance.New(compliance.Config{Store: st, Encode: compliancegrpc.EncodeEvent, Logger: env.Logger})
	if err := f.setIdentity(svc, env); err != nil {
		st.Close()
		return nil, err
	}
	s := &Service{
		store:    st,
		svc:      svc,
		grpc:     compliancegrpc.New(svc),
		Consumer: NewRiskConsumer(svc, riskv1.NewRiskServiceClient(conn), env, f.ApplyFault),
	}
	// Readers of compliance events learn how fresh compliance's view of risk is.
	s.grpc.SetRiskAsOf(func() time.Time { return s.Consumer.Status().LastContact })
	if s.metrics, err = registerMetrics(s.Consumer, s.store.Revision); err != nil {
		st.Close()
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return s, nil
}

// setIdentity lets svc issue device certificates when the process has the device
// CA's key (env.DeviceCAFile and env.DeviceCAKeyFile).
func (f *Factory) setIdentity(svc *compliance.Service, env suite.Env) error {
	if env.DeviceCAFile == "" || env.DeviceCAKeyFile == "" {
		return nil
	}
	ca, err := devca.Load(env.DeviceCAFile, env.DeviceCAKeyFile)
	if err != nil {
		return err
	}
	var bundle []byte
	if env.ServerCABundleFile != "" {
		if bundle, err = os.ReadFile(env.ServerCABundleFile); err != nil {
			return fmt.Errorf("server CA bundle: %w", err)
		}
	}
	svc.SetIdentityConfig(compliance.IdentityConfig{CA: ca, CABundlePEM: bundle, CertTTL: f.certTTL})
	return nil
}

// registerMetrics exports the risk feed's health and the event log's revision.
func registerMetrics(feed *consumer.Consumer[*riskv1.RiskEvent], revision func() int64) (metric.Registration, error) {
	meter := otel.Meter("condaccess/compliance")
	lag, err := meter.Float64ObservableGauge("condaccess.compliance.risk_feed.lag", metric.WithUnit("s"),
		metric.WithDescription("time since the risk event feed last delivered an event, a progress message or a resync"))
	if err != nil {
		return nil, err
	}
	connected, err := meter.Int64ObservableGauge("condaccess.compliance.risk_feed.connected",
		metric.WithDescription("1 while the risk event stream is open"))
	if err != nil {
		return nil, err
	}
	riskRev, err := meter.Int64ObservableGauge("condaccess.compliance.risk_feed.revision",
		metric.WithDescription("last risk revision applied"))
	if err != nil {
		return nil, err
	}
	reconnects, err := meter.Int64ObservableCounter("condaccess.compliance.risk_feed.reconnects",
		metric.WithDescription("risk event stream failures so far"))
	if err != nil {
		return nil, err
	}
	rev, err := meter.Int64ObservableGauge("condaccess.compliance.events.revision",
		metric.WithDescription("last compliance event revision"))
	if err != nil {
		return nil, err
	}
	return meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		st := feed.Status()
		if !st.LastContact.IsZero() {
			o.ObserveFloat64(lag, time.Since(st.LastContact).Seconds())
		}
		c := int64(0)
		if st.Connected {
			c = 1
		}
		o.ObserveInt64(connected, c)
		o.ObserveInt64(riskRev, st.Revision)
		o.ObserveInt64(reconnects, st.Reconnects)
		o.ObserveInt64(rev, revision())
		return nil
	}, lag, connected, riskRev, reconnects, rev)
}

// Service is the running compliance service.
type Service struct {
	store *compliancestore.Store
	svc   *compliance.Service
	// Consumer follows the risk event stream.
	Consumer *consumer.Consumer[*riskv1.RiskEvent]
	metrics  metric.Registration
	grpc     *compliancegrpc.Server
}

// Register implements suite.Service.
func (s *Service) Register(r grpc.ServiceRegistrar) {
	compliancegrpc.Register(r, s.grpc)
}

// Run implements suite.Service: the risk consumer, the sweeps and the deadline timer.
// (Watch streams end when the server stops: internal/server drains every stream.)
func (s *Service) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.svc.Run(ctx) }()
	err := s.Consumer.Run(ctx)
	err2 := <-errc
	if ctx.Err() != nil {
		return nil
	}
	return errors.Join(err, err2)
}

// Close implements suite.Service.
func (s *Service) Close() error {
	return errors.Join(s.metrics.Unregister(), s.store.Close())
}

// Domain returns the compliance domain service.
func (s *Service) Domain() *compliance.Service { return s.svc }

var tracer = otel.Tracer("github.com/condaccess/condaccess/services/compliance")

// NewRiskConsumer returns the consumer of the risk event stream: device risk changes are
// applied (risk stored, device re-evaluated, compliance event and cursor written in one
// transaction), other events only advance the cursor; a resync lists every device risk.
// fault (optional, tests only) runs before each apply; its error fails the apply.
func NewRiskConsumer(svc *compliance.Service, client riskv1.RiskServiceClient, env suite.Env, fault func(rev int64) error) *consumer.Consumer[*riskv1.RiskEvent] {
	return consumer.New(consumer.Config[*riskv1.RiskEvent]{
		Name:   "compliance<-risk",
		Source: riskSource{client},
		Cursor: svc.RiskCursor,
		Resync: func(ctx context.Context) (int64, error) {
			risks, rev, err := listRisks(ctx, client)
			if err != nil {
				return 0, err
			}
			return rev, svc.ResyncRisks(ctx, risks, rev)
		},
		Apply: func(ctx context.Context, ev *riskv1.RiskEvent, rev int64) error {
			if fault != nil {
				if err := fault(rev); err != nil {
					return err
				}
			}
			ctx = telemetry.ContextFromTraceContext(ctx, ev.GetTraceContext())
			c := ev.GetDeviceRiskChanged()
			if c == nil {
				a := ev.GetAlertChanged().GetAlert()
				if a == nil {
					return svc.SkipRisk(ctx, rev)
				}
				return svc.ApplyAlert(ctx, rev, alertFromProto(a))
			}
			ctx, span := tracer.Start(ctx, "compliance.ApplyRiskEvent", trace.WithSpanKind(trace.SpanKindConsumer),
				trace.WithAttributes(
					attribute.String("condaccess.device_id", c.GetDeviceRisk().GetDeviceId()),
					attribute.Int64("condaccess.risk_revision", rev),
					attribute.String("condaccess.risk_level", c.GetDeviceRisk().GetLevel().String()),
				))
			defer span.End()
			err := svc.ApplyRisk(ctx, rev, riskFromProto(c.GetDeviceRisk(), rev))
			if err != nil {
				span.SetStatus(codes.Error, err.Error())
			}
			return err
		},
		Logger: env.Logger,
		// A stuck risk consumer makes compliance NOT_SERVING: what it reports is old.
		Health:     healthOf(env),
		HealthName: compliancev1.ComplianceService_ServiceDesc.ServiceName,
	})
}

func alertFromProto(a *riskv1.Alert) compliance.AlertChange {
	lvl := compliance.RiskNone
	if a.GetSeverity() > commonv1.Severity_SEVERITY_INFORMATIONAL {
		lvl = compliance.RiskLevel(a.GetSeverity())
	}
	return compliance.AlertChange{
		AlertID: a.GetAlertId(), DeviceID: a.GetDeviceId(), Level: lvl,
		Active: a.GetStatus() != riskv1.AlertStatus_ALERT_STATUS_RESOLVED && a.GetResolveTime() == nil && lvl > compliance.RiskNone,
	}
}

func riskFromProto(r *riskv1.DeviceRisk, rev int64) compliance.DeviceRisk {
	out := compliance.DeviceRisk{
		DeviceID:       r.GetDeviceId(),
		Level:          compliance.RiskLevel(r.GetLevel()),
		ActiveAlertIDs: r.GetActiveAlertIds(),
		Revision:       r.GetRevision(),
	}
	if out.Revision == 0 {
		out.Revision = rev
	}
	if t := r.GetUpdateTime(); t != nil {
		out.UpdateTime = t.AsTime().UTC()
	}
	return out
}

// listRisks pages through ListDeviceRisks; the revision is the first page's (every page
// of one listing reflects it).
func listRisks(ctx context.Context, client riskv1.RiskServiceClient) ([]compliance.DeviceRisk, int64, error) {
	var out []compliance.DeviceRisk
	var rev int64
	tok := ""
	for first := true; first || tok != ""; first = false {
		resp, err := client.ListDeviceRisks(ctx, &riskv1.ListDeviceRisksRequest{PageSize: 10000, PageToken: tok})
		if err != nil {
			return nil, 0, fmt.Errorf("list device risks: %w", err)
		}
		if first {
			rev = resp.GetRevision()
		}
		for _, r := range resp.GetDeviceRisks() {
			out = append(out, riskFromProto(r, rev))
		}
		tok = resp.GetNextPageToken()
	}
	return out, rev, nil
}

type riskSource struct{ client riskv1.RiskServiceClient }

func (s riskSource) Watch(ctx context.Context, start int64) (consumer.Stream[*riskv1.RiskEvent], error) {
	st, err := s.client.WatchRiskEvents(ctx, &riskv1.WatchRiskEventsRequest{StartRevision: start})
	if err != nil {
		return nil, err
	}
	return riskStream{st}, nil
}

type riskStream struct {
	st grpc.ServerStreamingClient[riskv1.WatchRiskEventsResponse]
}

func (s riskStream) Recv() (*riskv1.RiskEvent, int64, bool, error) {
	m, err := s.st.Recv()
	if err != nil {
		return nil, 0, false, err
	}
	if p := m.GetProgress(); p != nil {
		return nil, p.GetRevision(), true, nil
	}
	ev := m.GetEvent()
	return ev, ev.GetRevision(), false, nil
}

// Audit implements suite.Audited.
func (s *Service) Audit() *audit.Log { return s.store.Audit() }

// healthOf is env.Health as a consumer.HealthSetter (nil when there is none).
func healthOf(env suite.Env) consumer.HealthSetter {
	if env.Health == nil {
		return nil
	}
	return env.Health
}
