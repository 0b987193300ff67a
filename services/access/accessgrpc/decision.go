package accessgrpc

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/telemetry"
	"github.com/condaccess/condaccess/services/access"
	"github.com/condaccess/condaccess/services/access/accesscore"
	pe "github.com/condaccess/condaccess/services/access/policyengine"
)

// engineRequest converts and checks a request (the domain rules the proto
// validation does not cover, and the basic rules for callers that bypass it:
// the enforcement points).
func engineRequest(req *accessv1.EvaluateAccessRequest, prefix string) (pe.Request, error) {
	var vs []*violation
	for _, f := range []struct{ name, v string }{{"user_id", req.GetUserId()}, {"device_id", req.GetDeviceId()}, {"application_id", req.GetApplicationId()}} {
		if f.v == "" || len(f.v) > 128 {
			vs = append(vs, apierr.FieldViolation(prefix+f.name, "required, at most 128 characters"))
		}
	}
	c := req.GetClient()
	r := pe.Request{UserID: req.GetUserId(), DeviceID: req.GetDeviceId(), AppID: req.GetApplicationId(),
		Platform: pe.Platform(c.GetPlatform()), MFADone: c.GetMfaDone(), ClientApp: pe.ClientApp(c.GetClientAppType())}
	if ip := c.GetIpAddress(); ip != "" {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			vs = append(vs, apierr.FieldViolation(prefix+"client.ip_address", "not an IPv4 or IPv6 address"))
		}
		r.IP = a.Unmap()
	}
	if len(vs) > 0 {
		return r, apierr.InvalidArgument("", vs...)
	}
	return r, nil
}

// signInSource is what a decision hands the sign-in recorder.
type signInSource struct {
	client   *accessv1.ClientContext
	resp     *accessv1.EvaluateAccessResponse
	identErr string // why a presented token or certificate was refused
}

// SetSignInID implements accesscore.SignInIDSetter.
func (s *signInSource) SetSignInID(id string) { s.resp.SignInId = id }

// decision is a decision's response and sign-in source in one allocation,
// with room for the usual one reason and one policy.
type decision struct {
	src       signInSource
	resp      accessv1.EvaluateAccessResponse
	device    accessv1.DeviceComplianceInfo
	age       durationpb.Duration
	reasons   [1]accessv1.Reason
	reasonsP  [1]*accessv1.Reason
	policies  [1]accessv1.PolicyResult
	policiesP [1]*accessv1.PolicyResult
}

// decide is the one decision function behind EvaluateAccess,
// EvaluateAccessStream, Envoy's Check and the HTTP forward-auth endpoint.
// onlyApplied leaves out the policies that did not apply (enforcement points:
// the decision and reasons are the same; see policyengine.Request.OnlyApplied).
func (s *Server) decide(ctx context.Context, req *accessv1.EvaluateAccessRequest, prefix string, onlyApplied bool) (*accessv1.EvaluateAccessResponse, error) {
	r, err := engineRequest(req, prefix)
	if err != nil {
		return nil, err
	}
	r.OnlyApplied = onlyApplied
	// The caller (an authenticated enforcement point or admin) names the user and the device.
	caller, _ := auth.FromContext(ctx)
	o := accesscore.DecideOptions{UserProof: access.ProofAssertedByCaller, DeviceProof: access.ProofAssertedByCaller}
	return s.run(ctx, &r, o, caller.Subject, "", req.GetClient()), nil
}

// run decides r and records the sign-in with how each identity was proven, the
// enforcement point and, when a credential was refused, why.
func (s *Server) run(ctx context.Context, r *pe.Request, o accesscore.DecideOptions, ep, identErr string, client *accessv1.ClientContext) *accessv1.EvaluateAccessResponse {
	out := s.svc.Decide(ctx, r, o, telemetry.TraceID(ctx), func(res *pe.Result, sid, traceID string) any {
		d := new(decision)
		d.fill(res)
		d.resp.SessionId, d.resp.TraceId = sid, traceID
		d.resp.UserProof, d.resp.DeviceProof, d.resp.EnforcementPoint = accessv1.Proof(o.UserProof), accessv1.Proof(o.DeviceProof), ep
		d.resp.UserId = r.UserID
		if o.TokenSubject != "" {
			d.resp.TokenSubject, d.resp.TokenIssuer = o.TokenSubject, o.TokenIssuer
			if len(r.TokenGroups) > 0 { // as Decide left them
				d.resp.TokenGroups = s.svc.Snapshot().DirectoryGroups(r.TokenGroups)
			}
		}
		d.src = signInSource{client: client, resp: &d.resp, identErr: identErr}
		return &d.src
	})
	return out.(*signInSource).resp
}

// EncodeSignIn appends a sign-in's detail (accessv1.SignIn without its indexed
// fields) to dst, on the recorder goroutine.
func EncodeSignIn(dst []byte, _ *access.SignIn, src any) []byte {
	s, ok := src.(*signInSource)
	if !ok {
		return dst
	}
	rec := signInRecs.Get().(*accessv1.SignIn)
	rec.Client, rec.Reasons, rec.Policies = s.client, s.resp.GetReasons(), s.resp.GetPolicies()
	rec.ComplianceState = s.resp.GetDeviceCompliance().GetState()
	rec.UserProof, rec.DeviceProof, rec.EnforcementPoint, rec.IdentityError = s.resp.GetUserProof(), s.resp.GetDeviceProof(), s.resp.GetEnforcementPoint(), s.identErr
	rec.TokenSubject, rec.TokenIssuer, rec.TokenGroups = s.resp.GetTokenSubject(), s.resp.GetTokenIssuer(), s.resp.GetTokenGroups()
	out, err := proto.MarshalOptions{}.MarshalAppend(dst, rec)
	rec.Client, rec.Reasons, rec.Policies = nil, nil, nil
	rec.UserProof, rec.DeviceProof, rec.EnforcementPoint, rec.IdentityError = 0, 0, "", ""
	rec.TokenSubject, rec.TokenIssuer, rec.TokenGroups = "", "", nil
	signInRecs.Put(rec)
	if err != nil {
		return dst
	}
	return out
}

// signInRecs are the reused wrappers EncodeSignIn marshals (one per sign-in otherwise).
var signInRecs = sync.Pool{New: func() any { return new(accessv1.SignIn) }}

func signInToProto(si *access.SignIn) (*accessv1.SignIn, error) {
	out := &accessv1.SignIn{}
	if len(si.Detail) > 0 {
		if err := proto.Unmarshal(si.Detail, out); err != nil {
			return nil, fmt.Errorf("decode sign-in %s: %w", si.ID, err)
		}
	}
	out.SignInId, out.Time, out.UserId, out.DeviceId, out.ApplicationId = si.ID, ts(si.Time), si.UserID, si.DeviceID, si.AppID
	out.Decision, out.TraceId = accessv1.Decision(si.Decision), si.TraceID
	out.UserProof, out.DeviceProof = accessv1.Proof(si.UserProof), accessv1.Proof(si.DeviceProof)
	return out, nil
}

// controlLists holds the list of every set of controls, shared read-only by
// the responses (nil for the empty set).
var controlLists = func() (out [256][]accessv1.GrantControl) {
	for cs := 1; cs < 256; cs++ {
		for c := pe.Control(1); c < 8; c++ {
			if pe.Controls(cs).Has(c) {
				out[cs] = append(out[cs], accessv1.GrantControl(c))
			}
		}
		out[cs] = slices.Clip(out[cs])
	}
	return out
}()

func controls(cs pe.Controls) []accessv1.GrantControl { return controlLists[cs] }

// resultToProto converts an engine result (res is reused after this returns:
// everything is copied; its strings are immutable).
func resultToProto(res *pe.Result) *accessv1.EvaluateAccessResponse {
	d := new(decision)
	d.fill(res)
	return &d.resp
}

// fill converts res into d.resp, using d's arrays when they are large enough.
func (d *decision) fill(res *pe.Result) {
	out := &d.resp
	out.Decision, out.PolicySnapshotVersion = accessv1.Decision(res.Decision), res.SnapshotVersion
	d.age.Seconds, d.age.Nanos = int64(res.Device.Age/time.Second), int32(res.Device.Age%time.Second)
	d.device.State, d.device.Revision, d.device.Age = commonv1.ComplianceState(res.Device.State), res.Device.Revision, &d.age
	d.device.Stale, d.device.DeviceRisk, d.device.Known = res.Device.Stale, commonv1.RiskLevel(res.Device.Risk), res.Device.Known
	out.DeviceCompliance = &d.device
	if n := len(res.Reasons); n > 0 {
		rs, rp := d.reasons[:], d.reasonsP[:]
		if n > len(rs) {
			rs, rp = make([]accessv1.Reason, n), make([]*accessv1.Reason, n)
		}
		out.Reasons = rp[:n:n]
		for i, r := range res.Reasons {
			rs[i].Code, rs[i].Message, rs[i].PolicyId = r.Code, r.Message, r.PolicyID
			out.Reasons[i] = &rs[i]
		}
	}
	if n := len(res.Policies); n > 0 {
		ps, pp := d.policies[:], d.policiesP[:]
		if n > len(ps) {
			ps, pp = make([]accessv1.PolicyResult, n), make([]*accessv1.PolicyResult, n)
		}
		out.Policies = pp[:n:n]
		for i, p := range res.Policies {
			ps[i].PolicyId, ps[i].DisplayName, ps[i].State = p.PolicyID, p.DisplayName, accessv1.PolicyState(p.State)
			ps[i].Result, ps[i].NotAppliedReason = accessv1.PolicyResultKind(p.Kind), p.NotApplied
			ps[i].SatisfiedControls, ps[i].UnsatisfiedControls = controls(p.Satisfied), controls(p.Unsatisfied)
			out.Policies[i] = &ps[i]
		}
	}
	if n := len(res.Causes); n > 0 {
		cs := make([]accessv1.Cause, n)
		out.CauseChain = make([]*accessv1.Cause, n)
		for i, c := range res.Causes {
			cs[i].Kind, cs[i].Id, cs[i].Description = accessv1.CauseKind(c.Kind), c.ID, c.Description
			out.CauseChain[i] = &cs[i]
		}
	}
}

type violation = errdetails.BadRequest_FieldViolation
