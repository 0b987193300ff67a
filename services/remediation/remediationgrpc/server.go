// Package remediationgrpc serves the remediation service's RemediationService and AgentService over gRPC.
package remediationgrpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/eventlog"
	"github.com/condaccess/condaccess/services/remediation"
	"github.com/condaccess/condaccess/services/remediation/remediationstore"
)

// Error reasons (google.rpc.ErrorInfo) of this service.
const (
	ReasonNotFound           = "NOT_FOUND"
	ReasonFailedPrecondition = "FAILED_PRECONDITION"
	ReasonPermissionDenied   = "PERMISSION_DENIED"
	ReasonAgentReplaced      = "AGENT_CONNECTION_REPLACED"
	ReasonHelloRequired      = "HELLO_REQUIRED"
	ReasonBadPageToken       = "BAD_PAGE_TOKEN"
	ReasonHelloTimeout       = "HELLO_TIMEOUT"
)

// DefaultHelloTimeout is how long Connect waits for the agent's hello.
const DefaultHelloTimeout = 10 * time.Second

// Config configures New.
type Config struct {
	Service *remediation.Service
	Store   remediation.Store
	Logger  *slog.Logger
	// HelloTimeout bounds the wait for an agent's first message on Connect; default 10s.
	// A connection that never says hello would otherwise hold a stream forever.
	HelloTimeout time.Duration
}

// Server implements RemediationService and AgentService.
type Server struct {
	remediationv1.UnsafeRemediationServiceServer
	remediationv1.UnsafeAgentServiceServer
	svc   *remediation.Service
	store remediation.Store
	log   *slog.Logger
	hello time.Duration
}

// New returns a Server.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = DefaultHelloTimeout
	}
	return &Server{svc: cfg.Service, store: cfg.Store, log: cfg.Logger, hello: cfg.HelloTimeout}
}

// Register registers both services on r.
func Register(r grpc.ServiceRegistrar, s *Server) {
	remediationv1.RegisterRemediationServiceServer(r, s)
	remediationv1.RegisterAgentServiceServer(r, s)
}

func toStatus(err error) error {
	var inv *remediation.InvalidError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return apierr.FromContext(err)
	case errors.Is(err, remediationstore.ErrBadPageToken):
		return apierr.InvalidArgument(ReasonBadPageToken, apierr.FieldViolation("page_token", "not a page token of this listing"))
	case errors.As(err, &inv):
		vs := make([]*errdetails.BadRequest_FieldViolation, 0, len(inv.Violations))
		for _, v := range inv.Violations {
			vs = append(vs, apierr.FieldViolation(v.Field, v.Description))
		}
		return apierr.InvalidArgument("", vs...)
	case errors.Is(err, remediation.ErrNotFound):
		return apierr.New(codes.NotFound, ReasonNotFound, err.Error())
	case errors.Is(err, remediation.ErrFailedPrecondition):
		return apierr.New(codes.FailedPrecondition, ReasonFailedPrecondition, err.Error())
	case errors.Is(err, remediation.ErrPermissionDenied):
		return apierr.New(codes.PermissionDenied, ReasonPermissionDenied, err.Error())
	case errors.Is(err, remediation.ErrAborted):
		return apierr.New(codes.Aborted, ReasonAgentReplaced, "a newer connection of this device replaced this one")
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Internal, err.Error())
}

func caller(ctx context.Context) string {
	if id, ok := auth.FromContext(ctx); ok && id.Subject != "" {
		return id.Subject
	}
	return "unknown"
}

// StartInvestigation implements RemediationService.
func (s *Server) StartInvestigation(ctx context.Context, req *remediationv1.StartInvestigationRequest) (*remediationv1.StartInvestigationResponse, error) {
	inv, err := s.svc.StartInvestigation(ctx, req.GetDeviceId(), req.GetAlertIds(), req.GetReason(), caller(ctx))
	if err != nil {
		return nil, toStatus(err)
	}
	return &remediationv1.StartInvestigationResponse{Investigation: investigationToProto(inv)}, nil
}

// GetInvestigation implements RemediationService.
func (s *Server) GetInvestigation(ctx context.Context, req *remediationv1.GetInvestigationRequest) (*remediationv1.GetInvestigationResponse, error) {
	inv, err := s.svc.GetInvestigation(ctx, req.GetInvestigationId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &remediationv1.GetInvestigationResponse{Investigation: investigationToProto(inv)}, nil
}

// ListInvestigations implements RemediationService.
func (s *Server) ListInvestigations(ctx context.Context, req *remediationv1.ListInvestigationsRequest) (*remediationv1.ListInvestigationsResponse, error) {
	invs, next, err := s.svc.ListInvestigations(ctx, remediation.InvestigationFilter{DeviceID: req.GetDeviceId(), State: remediation.InvestigationState(req.GetState())}, int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &remediationv1.ListInvestigationsResponse{NextPageToken: next}
	for _, inv := range invs {
		out.Investigations = append(out.Investigations, investigationToProto(inv))
	}
	return out, nil
}

// GetAction implements RemediationService.
func (s *Server) GetAction(ctx context.Context, req *remediationv1.GetActionRequest) (*remediationv1.GetActionResponse, error) {
	a, err := s.svc.GetAction(ctx, req.GetActionId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &remediationv1.GetActionResponse{Action: actionToProto(a)}, nil
}

// ListActions implements RemediationService.
func (s *Server) ListActions(ctx context.Context, req *remediationv1.ListActionsRequest) (*remediationv1.ListActionsResponse, error) {
	as, next, err := s.svc.ListActions(ctx, remediation.ActionFilter{DeviceID: req.GetDeviceId(), InvestigationID: req.GetInvestigationId(), State: remediation.ActionState(req.GetState())}, int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, toStatus(err)
	}
	return &remediationv1.ListActionsResponse{Actions: actionsToProto(as), NextPageToken: next}, nil
}

// SubmitAction implements RemediationService.
func (s *Server) SubmitAction(ctx context.Context, req *remediationv1.SubmitActionRequest) (*remediationv1.SubmitActionResponse, error) {
	a, err := s.svc.SubmitAction(ctx, req.GetDeviceId(), remediation.ActionType(req.GetType()), EvidenceFromProto(req.GetTarget()), req.GetInvestigationId(), req.GetComment(), caller(ctx))
	if err != nil {
		return nil, toStatus(err)
	}
	return &remediationv1.SubmitActionResponse{Action: actionToProto(a)}, nil
}

// ApproveAction implements RemediationService.
func (s *Server) ApproveAction(ctx context.Context, req *remediationv1.ApproveActionRequest) (*remediationv1.ApproveActionResponse, error) {
	a, err := s.svc.ApproveAction(ctx, req.GetActionId(), req.GetComment(), caller(ctx))
	if err != nil {
		return nil, toStatus(err)
	}
	return &remediationv1.ApproveActionResponse{Action: actionToProto(a)}, nil
}

// RejectAction implements RemediationService.
func (s *Server) RejectAction(ctx context.Context, req *remediationv1.RejectActionRequest) (*remediationv1.RejectActionResponse, error) {
	a, err := s.svc.RejectAction(ctx, req.GetActionId(), req.GetComment(), caller(ctx))
	if err != nil {
		return nil, toStatus(err)
	}
	return &remediationv1.RejectActionResponse{Action: actionToProto(a)}, nil
}

// UndoAction implements RemediationService.
func (s *Server) UndoAction(ctx context.Context, req *remediationv1.UndoActionRequest) (*remediationv1.UndoActionResponse, error) {
	a, r, err := s.svc.UndoAction(ctx, req.GetActionId(), req.GetComment(), caller(ctx))
	if err != nil {
		return nil, toStatus(err)
	}
	return &remediationv1.UndoActionResponse{Action: actionToProto(a), RestoreAction: actionToProto(r)}, nil
}

// CancelInvestigation implements RemediationService.
func (s *Server) CancelInvestigation(ctx context.Context, req *remediationv1.CancelInvestigationRequest) (*remediationv1.CancelInvestigationResponse, error) {
	inv, err := s.svc.CancelInvestigation(ctx, req.GetInvestigationId(), req.GetComment(), caller(ctx))
	if err != nil {
		return nil, toStatus(err)
	}
	return &remediationv1.CancelInvestigationResponse{Investigation: investigationToProto(inv)}, nil
}

// SetAutomationLevel implements RemediationService.
func (s *Server) SetAutomationLevel(ctx context.Context, req *remediationv1.SetAutomationLevelRequest) (*remediationv1.SetAutomationLevelResponse, error) {
	st, err := s.svc.SetAutomationLevel(ctx, req.GetSetting().GetDeviceGroup(), remediation.Level(req.GetSetting().GetLevel()), caller(ctx))
	if err != nil {
		return nil, toStatus(err)
	}
	return &remediationv1.SetAutomationLevelResponse{Setting: settingToProto(st)}, nil
}

// ListAutomationLevels implements RemediationService.
func (s *Server) ListAutomationLevels(ctx context.Context, _ *remediationv1.ListAutomationLevelsRequest) (*remediationv1.ListAutomationLevelsResponse, error) {
	sets, def, err := s.svc.ListAutomationLevels(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &remediationv1.ListAutomationLevelsResponse{DefaultLevel: remediationv1.AutomationLevel(def)}
	for _, st := range sets {
		out.Settings = append(out.Settings, settingToProto(st))
	}
	return out, nil
}

// ListAgents implements RemediationService.
func (s *Server) ListAgents(ctx context.Context, req *remediationv1.ListAgentsRequest) (*remediationv1.ListAgentsResponse, error) {
	agents, next, err := s.svc.ListAgents(ctx, int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &remediationv1.ListAgentsResponse{NextPageToken: next}
	for _, a := range agents {
		out.Agents = append(out.Agents, agentToProto(a))
	}
	return out, nil
}

// WatchInvestigationEvents implements RemediationService.
func (s *Server) WatchInvestigationEvents(req *remediationv1.WatchInvestigationEventsRequest, stream grpc.ServerStreamingServer[remediationv1.WatchInvestigationEventsResponse]) error {
	ctx := stream.Context()
	err := s.store.Watch(ctx, req.GetStartRevision(), func(rev int64, payload []byte) error {
		ev := &remediationv1.InvestigationEvent{}
		if err := proto.Unmarshal(payload, ev); err != nil {
			return status.Errorf(codes.Internal, "decode event %d: %v", rev, err)
		}
		ev.Revision = rev
		if d := req.GetDeviceId(); d != "" && ev.GetInvestigationChanged().GetInvestigation().GetDeviceId() != d && ev.GetActionChanged().GetAction().GetDeviceId() != d {
			return nil // another device's: the next progress message carries the revision
		}
		return stream.Send(&remediationv1.WatchInvestigationEventsResponse{Kind: &remediationv1.WatchInvestigationEventsResponse_Event{Event: ev}})
	}, func(rev int64) error {
		return stream.Send(&remediationv1.WatchInvestigationEventsResponse{Kind: &remediationv1.WatchInvestigationEventsResponse_Progress{Progress: &commonv1.WatchProgress{Revision: rev, Time: timestamppb.New(time.Now())}}})
	})
	if err == nil || ctx.Err() != nil {
		return apierr.FromContext(ctx.Err())
	}
	if st := eventlog.ToStatus(err); st != err {
		return st
	}
	return toStatus(err)
}

// recvFirst receives the first message of stream, or fails with DEADLINE_EXCEEDED
// (reason HELLO_TIMEOUT) after d; returning ends the stream, which ends the Recv.
func recvFirst(stream grpc.BidiStreamingServer[remediationv1.ConnectRequest, remediationv1.ConnectResponse], d time.Duration) (*remediationv1.ConnectRequest, error) {
	type result struct {
		m   *remediationv1.ConnectRequest
		err error
	}
	got := make(chan result, 1)
	go func() {
		m, err := stream.Recv()
		got <- result{m, err}
	}()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case r := <-got:
		return r.m, r.err
	case <-timer.C:
		return nil, apierr.New(codes.DeadlineExceeded, ReasonHelloTimeout, fmt.Sprintf("no hello within %s of connecting", d))
	}
}

// Connect implements AgentService: hello first, then heartbeats and results up,
// commands down. A newer connection of the same device ends this one with ABORTED;
// a result for another device's action ends it with PERMISSION_DENIED.
func (s *Server) Connect(stream grpc.BidiStreamingServer[remediationv1.ConnectRequest, remediationv1.ConnectResponse]) error {
	ctx := stream.Context()
	first, err := recvFirst(stream, s.hello)
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return apierr.InvalidArgument(ReasonHelloRequired, apierr.FieldViolation("hello", "the first message of Connect must be a hello"))
	}
	// Only device D's own certificate (or development mode) may connect as D.
	if err := auth.RequireDevice(ctx, hello.GetDeviceId()); err != nil {
		return err
	}
	deviceID := hello.GetDeviceId()
	conn, err := s.svc.AgentConnect(ctx, remediation.AgentHello{DeviceID: deviceID, Version: hello.GetAgentVersion(), Hostname: hello.GetHostname(), DetectionRoots: hello.GetDetectionRoots()})
	if err != nil {
		return toStatus(err)
	}
	defer s.svc.AgentDisconnect(context.WithoutCancel(ctx), conn)
	// The ack is sent once the connection is registered; commands follow it.
	if err := stream.Send(&remediationv1.ConnectResponse{Kind: &remediationv1.ConnectResponse_Ack{Ack: &remediationv1.ConnectAck{HeartbeatInterval: durationpb.New(s.svc.HeartbeatInterval())}}}); err != nil {
		return err
	}
	s.log.InfoContext(ctx, "agent connected", "device_id", deviceID, "version", hello.GetAgentVersion())

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sendErr := make(chan error, 1)
	go func() {
		for {
			a, err := conn.Next(ctx)
			if err != nil {
				sendErr <- err
				return
			}
			if err := stream.Send(&remediationv1.ConnectResponse{Kind: &remediationv1.ConnectResponse_Command{Command: commandToProto(a)}}); err != nil {
				sendErr <- err
				return
			}
			if err := s.svc.ActionSent(ctx, a.ID); err != nil && ctx.Err() == nil {
				s.log.WarnContext(ctx, "recording a sent action", "action_id", a.ID, "err", err)
			}
		}
	}()
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			switch k := m.GetKind().(type) {
			case *remediationv1.ConnectRequest_Heartbeat:
				s.svc.AgentHeartbeat(ctx, conn)
			case *remediationv1.ConnectRequest_Result:
				s.svc.AgentHeartbeat(ctx, conn)
				_, err := s.svc.ReportResult(ctx, deviceID, resultFromProto(k.Result))
				switch {
				case errors.Is(err, remediation.ErrPermissionDenied):
					recvErr <- toStatus(err)
					return
				case errors.Is(err, remediation.ErrNotFound):
					s.log.WarnContext(ctx, "agent reported a result for an unknown action", "device_id", deviceID, "action_id", k.Result.GetActionId())
				case err != nil:
					recvErr <- toStatus(err)
					return
				}
			case *remediationv1.ConnectRequest_Hello:
				recvErr <- apierr.InvalidArgument(ReasonHelloRequired, apierr.FieldViolation("hello", "hello may only be the first message"))
				return
			}
		}
	}()
	select {
	case err := <-recvErr:
		if errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled {
			return apierr.FromContext(ctx.Err())
		}
		if err != nil && errors.Is(err, io.EOF) {
			return nil
		}
		return err
	case err := <-sendErr:
		return toStatus(err)
	}
}
