// Package auditgrpc puts the authenticated caller into each call's context as the audit actor, and serves condaccess.audit.v1.AuditService over the audit logs of a process's stores.
package auditgrpc

import (
	"context"
	"errors"
	"sync"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/condaccess/condaccess/gen/go/condaccess/audit/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/auth"
)

// Actor returns the audit actor of the call in ctx: the identity the authentication
// interceptor established (auth.FromContext), the method, the peer address and the
// trace id. ok is false when the call carries no authenticated identity.
func Actor(ctx context.Context, method string) (audit.Actor, bool) {
	id, ok := auth.FromContext(ctx)
	if !ok {
		return audit.Actor{}, false
	}
	a := audit.Actor{Subject: id.Subject, Method: method}
	for _, r := range id.Roles {
		a.Roles = append(a.Roles, auth.RoleName(r))
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		a.Peer = p.Addr.String()
	}
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		a.TraceID = sc.TraceID().String()
	}
	return a, true
}

// UnaryServerInterceptor adds the audit actor to each call's context. It must run
// after the authentication interceptor.
func UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if a, ok := Actor(ctx, info.FullMethod); ok {
			ctx = audit.NewContext(ctx, a)
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor adds the audit actor to each stream's context. It must run
// after the authentication interceptor.
func StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if a, ok := Actor(ss.Context(), info.FullMethod); ok {
			ss = &ctxStream{ServerStream: ss, ctx: audit.NewContext(ss.Context(), a)}
		}
		return handler(srv, ss)
	}
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }

// ReasonInvalidPageToken is the ErrorInfo reason of a page token that is malformed or
// was made for other filters.
const ReasonInvalidPageToken = "INVALID_PAGE_TOKEN"

// Server implements AuditService over the audit logs of a process's stores.
type Server struct {
	auditv1.UnsafeAuditServiceServer
	mu   sync.RWMutex
	logs []*audit.Log
}

// Add lists the events of l too: for a store that opens after the server is
// registered (the Shared Signals store, which needs the HTTP address).
func (s *Server) Add(l *audit.Log) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.logs = append(s.logs[:len(s.logs):len(s.logs)], l)
}

// New returns a server listing the events of logs, merged newest first.
func New(logs ...*audit.Log) *Server { return &Server{logs: logs} }

// Register registers s on r.
func Register(r grpc.ServiceRegistrar, s *Server) { auditv1.RegisterAuditServiceServer(r, s) }

// ListAuditEvents implements AuditService.
func (s *Server) ListAuditEvents(ctx context.Context, req *auditv1.ListAuditEventsRequest) (*auditv1.ListAuditEventsResponse, error) {
	f := audit.Filter{
		Subject: req.GetActor(), ResourceType: req.GetResourceType(), ResourceID: req.GetResourceId(), Method: req.GetMethod(),
	}
	if req.GetStartTime() != nil {
		f.Start = req.GetStartTime().AsTime()
	}
	if req.GetEndTime() != nil {
		f.End = req.GetEndTime().AsTime()
	}
	if !f.Start.IsZero() && !f.End.IsZero() && !f.End.After(f.Start) {
		return nil, apierr.InvalidArgument("", apierr.FieldViolation("end_time", "must be after start_time"))
	}
	pos, err := audit.DecodePageToken(f, req.GetPageToken())
	if err != nil {
		return nil, apierr.InvalidArgument(ReasonInvalidPageToken, apierr.FieldViolation("page_token", err.Error()))
	}
	s.mu.RLock()
	logs := s.logs
	s.mu.RUnlock()
	evs, more, err := audit.List(ctx, logs, f, pos, int(req.GetPageSize()))
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		return nil, apierr.New(codes.Internal, "AUDIT_LIST_FAILED", err.Error())
	}
	out := &auditv1.ListAuditEventsResponse{NextPageToken: audit.NextPageToken(f, evs, more)}
	for _, e := range evs {
		pe, err := toProto(e)
		if err != nil {
			return nil, apierr.New(codes.Internal, "AUDIT_LIST_FAILED", err.Error())
		}
		out.Events = append(out.Events, pe)
	}
	return out, nil
}

var actions = map[string]auditv1.AuditAction{
	audit.ActionCreate: auditv1.AuditAction_AUDIT_ACTION_CREATE,
	audit.ActionUpdate: auditv1.AuditAction_AUDIT_ACTION_UPDATE,
	audit.ActionDelete: auditv1.AuditAction_AUDIT_ACTION_DELETE,
}

func jsonValue(b []byte) (*structpb.Value, error) {
	if b == nil {
		return nil, nil
	}
	v := &structpb.Value{}
	if err := protojson.Unmarshal(b, v); err != nil {
		return nil, err
	}
	return v, nil
}

// toProto converts an event.
func toProto(e audit.Event) (*auditv1.AuditEvent, error) {
	before, err := jsonValue(e.Before)
	if err != nil {
		return nil, err
	}
	after, err := jsonValue(e.After)
	if err != nil {
		return nil, err
	}
	return &auditv1.AuditEvent{
		Service: e.Source, Id: e.ID, Time: timestamppb.New(e.Time),
		Actor:  &auditv1.AuditActor{Subject: e.Actor.Subject, Roles: e.Actor.Roles, Peer: e.Actor.Peer},
		Method: e.Actor.Method, Action: actions[e.Action],
		ResourceType: e.ResourceType, ResourceId: e.ResourceID,
		Before: before, After: after, Etag: e.Etag, TraceId: e.Actor.TraceID,
	}, nil
}
