// Package riskgrpc serves condaccess.risk.v1.RiskService over the risk domain.
package riskgrpc

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/services/risk"
)

// Config configures New.
type Config struct {
	Service *risk.Service
	// DevelopmentReporterIsDevice records alerts reported without a verified client
	// certificate (development mode) as reported by the alert's device itself, so
	// that FULL automation acts on them; otherwise their reporter is DEVELOPMENT and
	// their actions wait for approval.
	DevelopmentReporterIsDevice bool
	// EventCacheBytes caps the encoded size of the decoded events kept for watchers
	// (default DefaultEventCacheBytes): besides its 4,096 entries, the cache holds at
	// most this many bytes, since one alert event may be megabytes.
	EventCacheBytes int64
}

// DefaultEventCacheBytes is the default byte cap of the decoded event cache.
const DefaultEventCacheBytes = 64 << 20

// Server implements riskv1.RiskServiceServer.
type Server struct {
	riskv1.UnsafeRiskServiceServer
	svc         *risk.Service
	devAsDevice bool

	// recent holds decoded events by revision, so that watchers fanning out the same
	// live event decode it once (messages are shared read-only; gRPC marshals them
	// per stream).
	mu     sync.Mutex
	recent [eventCacheSize]*riskv1.WatchRiskEventsResponse
	sizes  [eventCacheSize]int64 // encoded size of each cached entry
	bytes  int64                 // sum of sizes
	max    int64                 // cap on bytes
}

// CachedEventBytes reports the encoded size of the events the cache holds.
func (s *Server) CachedEventBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}

const eventCacheSize = 4096

func (s *Server) event(e risk.StoredEvent) (*riskv1.WatchRiskEventsResponse, error) {
	i := e.Revision % eventCacheSize
	s.mu.Lock()
	m := s.recent[i]
	s.mu.Unlock()
	if m != nil && m.GetEvent().GetRevision() == e.Revision {
		return m, nil
	}
	ev, err := decodeEvent(e)
	if err != nil {
		return nil, err
	}
	m = &riskv1.WatchRiskEventsResponse{Kind: &riskv1.WatchRiskEventsResponse_Event{Event: ev}}
	size := int64(len(e.Payload))
	s.mu.Lock()
	// The entry replaced leaves; the oldest entries (following i in the ring) leave
	// until the new one fits the byte cap. An event larger than the cap is not cached:
	// it is decoded again for each watcher instead.
	s.bytes -= s.sizes[i]
	s.recent[i], s.sizes[i] = nil, 0
	if size <= s.max {
		for j := (i + 1) % eventCacheSize; s.bytes+size > s.max && j != i; j = (j + 1) % eventCacheSize {
			s.bytes -= s.sizes[j]
			s.recent[j], s.sizes[j] = nil, 0
		}
		s.recent[i], s.sizes[i] = m, size
		s.bytes += size
	}
	s.mu.Unlock()
	return m, nil
}

var _ riskv1.RiskServiceServer = (*Server)(nil)

// New returns a Server.
func New(cfg Config) *Server {
	if cfg.EventCacheBytes <= 0 {
		cfg.EventCacheBytes = DefaultEventCacheBytes
	}
	return &Server{svc: cfg.Service, devAsDevice: cfg.DevelopmentReporterIsDevice, max: cfg.EventCacheBytes}
}

// Register registers srv on s.
func Register(s grpc.ServiceRegistrar, srv *Server) { riskv1.RegisterRiskServiceServer(s, srv) }

// mayNameInvestigation reports whether the caller is the remediation service (a
// service identity naming it, or the legacy all-services role) or development mode.
func mayNameInvestigation(ctx context.Context) bool {
	id, _ := auth.FromContext(ctx)
	switch {
	case id.Kind == auth.KindDevelopment:
		return true
	case id.Kind == auth.KindService:
		return slices.Contains(id.Services, "remediation")
	}
	return id.HasRole(commonv1.Role_ROLE_SERVICE) && len(id.Services) == 0
}

func subject(ctx context.Context) string {
	if id, ok := auth.FromContext(ctx); ok {
		return id.Subject
	}
	return ""
}

// ReportAlert implements riskv1.RiskServiceServer.
func (s *Server) ReportAlert(ctx context.Context, req *riskv1.ReportAlertRequest) (*riskv1.ReportAlertResponse, error) {
	if req.GetAlert() == nil {
		return nil, apierr.InvalidArgument("", apierr.FieldViolation("alert", "required"))
	}
	if err := auth.CheckDevice(ctx, req.GetAlert().GetDeviceId()); err != nil {
		return nil, err
	}
	in := alertFromProto(req.GetAlert())
	in.Reporter = s.reporterOf(ctx, in.DeviceID)
	res, err := s.svc.ReportAlert(ctx, in)
	if err != nil {
		return nil, toStatus(err)
	}
	return &riskv1.ReportAlertResponse{Alert: alertToProto(&res.Alert), Created: res.Created, DeviceRisk: riskToProto(&res.Risk)}, nil
}

// ReportAlerts implements riskv1.RiskServiceServer.
func (s *Server) ReportAlerts(ctx context.Context, req *riskv1.ReportAlertsRequest) (*riskv1.ReportAlertsResponse, error) {
	in := make([]risk.Alert, len(req.GetAlerts()))
	for i, a := range req.GetAlerts() {
		// A device speaks only for itself: one alert for another device refuses
		// the whole batch, before anything is stored.
		if err := auth.CheckDevice(ctx, a.GetDeviceId()); err != nil {
			return nil, err
		}
		in[i] = alertFromProto(a)
		in[i].Reporter = s.reporterOf(ctx, in[i].DeviceID)
	}
	results, err := s.svc.ReportAlerts(ctx, in)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &riskv1.ReportAlertsResponse{Results: make([]*riskv1.ReportAlertsResult, len(results))}
	for i, r := range results {
		pr := &riskv1.ReportAlertsResult{AlertId: r.AlertID, Created: r.Created}
		if r.Err != nil {
			st := status.Convert(toStatus(r.Err))
			pr.Error = &riskv1.AlertError{Code: codeName(st.Code()), Message: st.Message()}
		}
		out.Results[i] = pr
	}
	return out, nil
}

// codeName is the canonical upper-case name of a code, e.g. "ALREADY_EXISTS".
func codeName(c codes.Code) string {
	names := [...]string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
		"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
		"OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}
	if int(c) < len(names) {
		return names[c]
	}
	return fmt.Sprintf("CODE_%d", c)
}

// GetAlert implements riskv1.RiskServiceServer.
func (s *Server) GetAlert(ctx context.Context, req *riskv1.GetAlertRequest) (*riskv1.GetAlertResponse, error) {
	a, err := s.svc.GetAlert(ctx, req.GetAlertId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &riskv1.GetAlertResponse{Alert: alertToProto(&a)}, nil
}

// ListAlerts implements riskv1.RiskServiceServer.
func (s *Server) ListAlerts(ctx context.Context, req *riskv1.ListAlertsRequest) (*riskv1.ListAlertsResponse, error) {
	alerts, next, err := s.svc.ListAlerts(ctx, risk.AlertQuery{
		DeviceID: req.GetDeviceId(), Status: risk.Status(req.GetStatus()), MinSeverity: risk.Severity(req.GetMinSeverity()),
		DetectedAfter: fromTS(req.GetDetectedAfter()), DetectedBefore: fromTS(req.GetDetectedBefore()),
		PageSize: int(req.GetPageSize()), PageToken: req.GetPageToken(),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	out := &riskv1.ListAlertsResponse{Alerts: make([]*riskv1.Alert, len(alerts)), NextPageToken: next}
	for i := range alerts {
		out.Alerts[i] = alertToProto(&alerts[i])
	}
	return out, nil
}

// UpdateAlert implements riskv1.RiskServiceServer. Without an update_mask, status is
// changed when set and assigned_to when non-empty.
func (s *Server) UpdateAlert(ctx context.Context, req *riskv1.UpdateAlertRequest) (*riskv1.UpdateAlertResponse, error) {
	u := risk.AlertUpdate{AlertID: req.GetAlertId(), Etag: req.GetEtag()}
	st := risk.Status(req.GetStatus())
	assignee := req.GetAssignedTo()
	if paths := req.GetUpdateMask().GetPaths(); len(paths) > 0 {
		for _, p := range paths {
			switch p {
			case "status":
				if st == risk.StatusUnspecified {
					return nil, apierr.InvalidArgument("", apierr.FieldViolation("status", "required when update_mask names it"))
				}
				u.Status = &st
			case "assigned_to":
				u.AssignedTo = &assignee
			default:
				return nil, apierr.InvalidArgument("", apierr.FieldViolation("update_mask", fmt.Sprintf("unknown path %q (want status, assigned_to)", p)))
			}
		}
	} else {
		if st != risk.StatusUnspecified {
			u.Status = &st
		}
		if assignee != "" {
			u.AssignedTo = &assignee
		}
	}
	a, err := s.svc.UpdateAlert(ctx, u)
	if err != nil {
		return nil, toStatus(err)
	}
	return &riskv1.UpdateAlertResponse{Alert: alertToProto(&a)}, nil
}

// AddAlertComment implements riskv1.RiskServiceServer.
func (s *Server) AddAlertComment(ctx context.Context, req *riskv1.AddAlertCommentRequest) (*riskv1.AddAlertCommentResponse, error) {
	a, err := s.svc.AddComment(ctx, req.GetAlertId(), subject(ctx), req.GetText())
	if err != nil {
		return nil, toStatus(err)
	}
	return &riskv1.AddAlertCommentResponse{Alert: alertToProto(&a)}, nil
}

// ResolveAlert implements riskv1.RiskServiceServer.
func (s *Server) ResolveAlert(ctx context.Context, req *riskv1.ResolveAlertRequest) (*riskv1.ResolveAlertResponse, error) {
	// The resolver is the authenticated caller; the request's resolved_by is ignored
	// (kept in the contract for compatibility), so that no caller can attribute a
	// resolution to someone else.
	by := subject(ctx)
	// investigation_id says an automated investigation resolved the alert: only the
	// remediation service (or development mode) may claim that, never a person.
	if req.GetInvestigationId() != "" && !mayNameInvestigation(ctx) {
		return nil, apierr.InvalidArgument("", apierr.FieldViolation("investigation_id",
			"set only by the remediation service for an automated investigation; leave it empty"))
	}
	a, dr, err := s.svc.ResolveAlert(ctx, risk.Resolution{
		AlertID: req.GetAlertId(), Classification: risk.Classification(req.GetClassification()),
		Determination: risk.Determination(req.GetDetermination()), Comment: req.GetComment(),
		ResolvedBy: by, InvestigationID: req.GetInvestigationId(),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &riskv1.ResolveAlertResponse{Alert: alertToProto(&a), DeviceRisk: riskToProto(&dr)}, nil
}

// GetDeviceRisk implements riskv1.RiskServiceServer.
func (s *Server) GetDeviceRisk(ctx context.Context, req *riskv1.GetDeviceRiskRequest) (*riskv1.GetDeviceRiskResponse, error) {
	r, err := s.svc.GetDeviceRisk(ctx, req.GetDeviceId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &riskv1.GetDeviceRiskResponse{DeviceRisk: riskToProto(&r)}, nil
}

// ListDeviceRisks implements riskv1.RiskServiceServer.
func (s *Server) ListDeviceRisks(ctx context.Context, req *riskv1.ListDeviceRisksRequest) (*riskv1.ListDeviceRisksResponse, error) {
	rs, next, rev, err := s.svc.ListDeviceRisks(ctx, risk.DeviceRiskQuery{
		MinLevel: risk.Level(req.GetMinLevel()), PageSize: int(req.GetPageSize()), PageToken: req.GetPageToken(),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	out := &riskv1.ListDeviceRisksResponse{DeviceRisks: make([]*riskv1.DeviceRisk, len(rs)), NextPageToken: next, Revision: rev}
	for i := range rs {
		out.DeviceRisks[i] = riskToProto(&rs[i])
	}
	return out, nil
}

// ListDeviceRiskHistory implements riskv1.RiskServiceServer.
func (s *Server) ListDeviceRiskHistory(ctx context.Context, req *riskv1.ListDeviceRiskHistoryRequest) (*riskv1.ListDeviceRiskHistoryResponse, error) {
	rs, next, err := s.svc.RiskHistory(ctx, req.GetDeviceId(), int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &riskv1.ListDeviceRiskHistoryResponse{Changes: make([]*riskv1.RiskChange, len(rs)), NextPageToken: next}
	for i := range rs {
		out.Changes[i] = changeToProto(&rs[i])
	}
	return out, nil
}

// WatchRiskEvents implements riskv1.RiskServiceServer.
func (s *Server) WatchRiskEvents(req *riskv1.WatchRiskEventsRequest, stream grpc.ServerStreamingServer[riskv1.WatchRiskEventsResponse]) error {
	ctx := stream.Context()
	err := s.svc.Watch(ctx, req.GetStartRevision(), func(e risk.StoredEvent) error {
		m, err := s.event(e)
		if err != nil {
			return fmt.Errorf("decode event %d: %w", e.Revision, err)
		}
		if d := req.GetDeviceId(); d != "" {
			ev := m.GetEvent()
			if ev.GetDeviceRiskChanged().GetDeviceRisk().GetDeviceId() != d && ev.GetAlertChanged().GetAlert().GetDeviceId() != d {
				return nil // another device's: the next progress message carries the revision
			}
		}
		return stream.Send(m)
	}, func(rev int64) error {
		return stream.Send(&riskv1.WatchRiskEventsResponse{Kind: &riskv1.WatchRiskEventsResponse_Progress{
			Progress: &commonv1.WatchProgress{Revision: rev, Time: timestamppb.Now()}}})
	})
	if err != nil && ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	return toStatus(err)
}
