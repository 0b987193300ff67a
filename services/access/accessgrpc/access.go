package accessgrpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/telemetry"
	"github.com/condaccess/condaccess/services/access"
	"github.com/condaccess/condaccess/services/access/accesscore"
	pe "github.com/condaccess/condaccess/services/access/policyengine"
)

type accessServer struct {
	accessv1.UnsafeAccessServiceServer
	s *Server
}

func (a *accessServer) EvaluateAccess(ctx context.Context, req *accessv1.EvaluateAccessRequest) (*accessv1.EvaluateAccessResponse, error) {
	return a.s.decide(ctx, req, "", false)
}

func (a *accessServer) EvaluateAccessStream(stream accessv1.AccessService_EvaluateAccessStreamServer) error {
	ctx := stream.Context()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp, err := a.s.decide(ctx, req.GetRequest(), "request.", false)
		if err != nil {
			return err
		}
		if err := stream.Send(&accessv1.EvaluateAccessStreamResponse{RequestId: req.GetRequestId(), Response: resp}); err != nil {
			return err
		}
	}
}

func (a *accessServer) WhatIf(ctx context.Context, req *accessv1.WhatIfRequest) (*accessv1.WhatIfResponse, error) {
	r, err := engineRequest(req.GetRequest(), "request.")
	if err != nil {
		return nil, err
	}
	o := req.GetOverrides()
	w := accesscore.WhatIf{ComplianceState: access.ComplianceState(o.GetComplianceState()), Risk: access.RiskLevel(o.GetDeviceRisk())}
	if o != nil && o.MfaDone != nil {
		v := o.GetMfaDone()
		w.MFADone = &v
	}
	for _, d := range o.GetDraftPolicies() {
		w.Drafts = append(w.Drafts, PolicyFromProto(d))
	}
	var actual, hypo pe.Result
	if err := a.s.svc.WhatIf(r, w, &actual, &hypo); err != nil {
		return nil, toStatus(err)
	}
	trace := telemetry.TraceID(ctx)
	out := &accessv1.WhatIfResponse{Actual: resultToProto(&actual), WhatIf: resultToProto(&hypo)}
	out.Actual.TraceId, out.WhatIf.TraceId = trace, trace
	out.Changes = changes(out.Actual, out.WhatIf)
	return out, nil
}

func mainReason(r *accessv1.EvaluateAccessResponse) string {
	if len(r.GetReasons()) == 0 {
		return ""
	}
	return r.GetReasons()[0].GetCode()
}

// changes describes, one line each, what differs between two decisions.
func changes(a, b *accessv1.EvaluateAccessResponse) []string {
	var out []string
	if a.GetDecision() != b.GetDecision() {
		out = append(out, fmt.Sprintf("decision: %s → %s (%s)", a.GetDecision(), b.GetDecision(), mainReason(b)))
	} else if mainReason(a) != mainReason(b) {
		out = append(out, fmt.Sprintf("main reason: %s → %s", mainReason(a), mainReason(b)))
	}
	if a.GetDeviceCompliance().GetState() != b.GetDeviceCompliance().GetState() {
		out = append(out, fmt.Sprintf("device compliance: %s → %s", a.GetDeviceCompliance().GetState(), b.GetDeviceCompliance().GetState()))
	}
	if a.GetDeviceCompliance().GetDeviceRisk() != b.GetDeviceCompliance().GetDeviceRisk() {
		out = append(out, fmt.Sprintf("device risk: %s → %s", a.GetDeviceCompliance().GetDeviceRisk(), b.GetDeviceCompliance().GetDeviceRisk()))
	}
	before := map[string]*accessv1.PolicyResult{}
	for _, p := range a.GetPolicies() {
		before[p.GetPolicyId()] = p
	}
	seen := map[string]bool{}
	for _, p := range b.GetPolicies() {
		seen[p.GetPolicyId()] = true
		q := before[p.GetPolicyId()]
		switch {
		case q == nil:
			out = append(out, fmt.Sprintf("policy %s (draft): %s%s", p.GetPolicyId(), p.GetResult(), why(p)))
		case q.GetResult() != p.GetResult() || q.GetState() != p.GetState():
			out = append(out, fmt.Sprintf("policy %s: %s → %s%s", p.GetPolicyId(), q.GetResult(), p.GetResult(), why(p)))
		}
	}
	for _, q := range a.GetPolicies() {
		if !seen[q.GetPolicyId()] {
			out = append(out, fmt.Sprintf("policy %s: %s → not evaluated (draft disables it)", q.GetPolicyId(), q.GetResult()))
		}
	}
	return out
}

func why(p *accessv1.PolicyResult) string {
	switch {
	case p.GetNotAppliedReason() != "":
		return " (" + p.GetNotAppliedReason() + ")"
	case len(p.GetUnsatisfiedControls()) > 0:
		return fmt.Sprintf(" (unsatisfied: %v)", p.GetUnsatisfiedControls())
	}
	return ""
}

func (a *accessServer) ListSignIns(ctx context.Context, req *accessv1.ListSignInsRequest) (*accessv1.ListSignInsResponse, error) {
	f := access.SignInFilter{UserID: req.GetUserId(), DeviceID: req.GetDeviceId(), AppID: req.GetApplicationId(), Decision: access.Decision(req.GetDecision()),
		UserProof: access.Proof(req.GetUserProof()), DeviceProof: access.Proof(req.GetDeviceProof())}
	if req.After != nil {
		f.After = req.GetAfter().AsTime()
	}
	if req.Before != nil {
		f.Before = req.GetBefore().AsTime()
	}
	sis, next, err := a.s.svc.ListSignIns(ctx, f, req.GetPageToken(), pageSize(req.GetPageSize(), 100))
	if err != nil {
		return nil, toStatus(err)
	}
	out := &accessv1.ListSignInsResponse{NextPageToken: next}
	for _, si := range sis {
		p, err := signInToProto(si)
		if err != nil {
			return nil, toStatus(err)
		}
		out.SignIns = append(out.SignIns, p)
	}
	return out, nil
}

func (a *accessServer) ListSessions(ctx context.Context, req *accessv1.ListSessionsRequest) (*accessv1.ListSessionsResponse, error) {
	ss, next, err := a.s.svc.ListSessions(ctx, access.SessionFilter{UserID: req.GetUserId(), DeviceID: req.GetDeviceId(), State: access.SessionState(req.GetState())},
		req.GetPageToken(), pageSize(req.GetPageSize(), 100))
	if err != nil {
		return nil, toStatus(err)
	}
	out := &accessv1.ListSessionsResponse{NextPageToken: next}
	for _, x := range ss {
		out.Sessions = append(out.Sessions, sessionToProto(x))
	}
	return out, nil
}

func (a *accessServer) WatchSessionEvents(req *accessv1.WatchSessionEventsRequest, stream accessv1.AccessService_WatchSessionEventsServer) error {
	err := a.s.svc.WatchSessionEvents(stream.Context(), req.GetStartRevision(), func(e *access.SessionEvent) error {
		ev := sessionEventToProto(e)
		if d := req.GetDeviceId(); d != "" && ev.GetSessionOpened().GetSession().GetDeviceId() != d && ev.GetSessionRevoked().GetSession().GetDeviceId() != d {
			return nil // another device's: the next progress message carries the revision
		}
		return stream.Send(&accessv1.WatchSessionEventsResponse{Kind: &accessv1.WatchSessionEventsResponse_Event{Event: ev}})
	}, func(rev int64) error {
		return stream.Send(&accessv1.WatchSessionEventsResponse{Kind: &accessv1.WatchSessionEventsResponse_Progress{
			Progress: &commonv1.WatchProgress{Revision: rev, Time: timestamppb.New(time.Now())}}})
	})
	if err != nil && stream.Context().Err() != nil {
		return nil
	}
	return toStatus(err)
}
