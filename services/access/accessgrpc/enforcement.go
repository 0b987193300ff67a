package accessgrpc

import (
	"context"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/services/access/accesscore"
)

// ReasonInvalidRequest is the reason header of a request the enforcement
// points could not turn into a decision request (a missing application header).
const ReasonInvalidRequest = "INVALID_REQUEST"

// SessionHeader carries the session id of an allowed access.
const SessionHeader = "x-condaccess-session-id"

// SignInHeader carries the sign-in id (the reference shown to the user) of a decision.
const SignInHeader = "x-condaccess-sign-in-id"

func truthy(v string) bool {
	v = strings.ToLower(strings.TrimSpace(v))
	return v == "true" || v == "1" || v == "yes"
}

// outcome is what an enforcement point answers.
type outcome struct {
	allow   bool
	reason  string
	session string
	signIn  string
	// ref is the sealed reference of a blocked sign-in for the console's end-user page
	// (empty when no such page is linked).
	ref string
}

// enforce verifies what an enforcement point forwarded and decides. The caller must
// be authenticated (the handlers check the role first).
func (s *Server) enforce(ctx context.Context, f *forwarded) outcome {
	caller, _ := s.callerOf(ctx)
	id := s.resolve(ctx, f, caller, time.Now())
	if a := id.req.AppID; a == "" || len(a) > 128 {
		return outcome{reason: ReasonInvalidRequest}
	}
	c := &accessv1.ClientContext{MfaDone: id.req.MFADone}
	if id.req.IP.IsValid() {
		c.IpAddress = id.req.IP.String()
	}
	// The enforcement points answer with the decision and its main reason only:
	// the engine leaves out the policies that did not apply.
	id.req.OnlyApplied = true
	resp := s.run(ctx, &id.req, id.opts, id.caller, id.err, c)
	o := outcome{allow: resp.GetDecision() == accessv1.Decision_DECISION_ALLOW, session: resp.GetSessionId(), signIn: resp.GetSignInId()}
	if len(resp.GetReasons()) > 0 {
		o.reason = resp.GetReasons()[0].GetCode()
	}
	if !o.allow && o.signIn != "" && s.edge.HelpURL == "" && s.edge.BlockedRefs != nil {
		o.ref, _ = s.edge.BlockedRefs.Seal(accesscore.BlockedSignIn{SignInID: o.signIn, UserID: id.req.UserID, DeviceID: id.req.DeviceID,
			AppID: id.req.AppID, IP: id.req.IP, MFADone: id.req.MFADone, TokenGroups: resp.GetTokenGroups(), Time: time.Now().UTC()})
		if len(o.ref) > maxBlockedRef {
			// Too many token groups for a link (GetBlockedStatus takes 2048
			// characters): the page shows the sign-in id only.
			o.ref = ""
		}
	}
	return o
}

// maxBlockedRef is the longest reference GetBlockedStatus accepts.
const maxBlockedRef = 2048

// blockedBody is the end user's 403 page: a short message and the reference (the
// sign-in id), with a link to the help page when configured. No policy names or
// reason codes: those are in the sign-in log and the x-condaccess-reason header.
func (s *Server) blockedBody(o outcome) string {
	var b strings.Builder
	b.WriteString("Access blocked: this sign-in does not meet your organization's access requirements.\n")
	if o.signIn != "" {
		b.WriteString("Reference: " + o.signIn + "\n")
		if s.edge.HelpURL != "" {
			b.WriteString("Help: " + s.edge.HelpURL + "?ref=" + url.QueryEscape(o.signIn) + "\n")
		} else if page := s.consolePage(); page != "" && o.ref != "" {
			b.WriteString("Help: " + page + "?ref=" + o.ref + "\n")
		}
	}
	return b.String()
}

// consolePage is the console's end-user page on the HTTP address, if one is served.
func (s *Server) consolePage() string {
	if s.edge.ConsoleURL != nil {
		if base := s.edge.ConsoleURL(); base != "" {
			return base + "/blocked"
		}
	}
	return ""
}

type checkServer struct {
	authv3.UnimplementedAuthorizationServer
	s *Server
}

func header(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}}
}

// ContextExtensionApplication is the ext_authz per-route context extension that names
// the application (check_settings.context_extensions): set by Envoy's configuration,
// it cannot be forged by the client, unlike a request header; it wins over the
// x-application-id header.
const ContextExtensionApplication = "application_id"

// forwardedFromCheck maps Envoy's CheckRequest: headers from the request (map or
// header_map), the application from context_extensions, the device certificate from
// attributes.source.certificate (URL-encoded PEM, as Envoy forwards it with
// include_peer_certificate), the peer from attributes.source.address.
func forwardedFromCheck(req *authv3.CheckRequest) *forwarded {
	h := req.GetAttributes().GetRequest().GetHttp()
	hdrs := h.GetHeaders()
	get := func(k string) string {
		if v, ok := hdrs[strings.ToLower(k)]; ok {
			return v
		}
		for _, hv := range h.GetHeaderMap().GetHeaders() {
			if strings.EqualFold(hv.GetKey(), k) {
				if hv.GetValue() != "" {
					return hv.GetValue()
				}
				return string(hv.GetRawValue())
			}
		}
		return ""
	}
	f := &forwarded{get: get, check: true, deviceCert: req.GetAttributes().GetSource().GetCertificate(),
		app: req.GetAttributes().GetContextExtensions()[ContextExtensionApplication]}
	if a, err := netip.ParseAddr(req.GetAttributes().GetSource().GetAddress().GetSocketAddress().GetAddress()); err == nil {
		f.peer = a
	}
	if v := get(forwardedForHeader); v != "" {
		f.xff = []string{v}
	}
	return f
}

// Check is Envoy's external authorization: OK or PERMISSION_DENIED (HTTP 403),
// with the main reason code in x-condaccess-reason. The gRPC server has already
// authenticated the caller (ROLE_ENFORCEMENT_POINT).
func (c *checkServer) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	o := c.s.enforce(ctx, forwardedFromCheck(req))
	if o.allow {
		hs := []*corev3.HeaderValueOption{header(ReasonHeader, o.reason), header(SignInHeader, o.signIn)}
		if o.session != "" {
			hs = append(hs, header(SessionHeader, o.session))
		}
		return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{Headers: hs}}}, nil
	}
	hs := []*corev3.HeaderValueOption{header(ReasonHeader, o.reason), header("content-type", "text/plain; charset=utf-8")}
	if o.signIn != "" {
		hs = append(hs, header(SignInHeader, o.signIn))
	}
	return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied), Message: o.reason},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden},
			Headers: hs,
			Body:    c.s.blockedBody(o),
		}}}, nil
}

// AuthzHandler is the HTTP forward-auth endpoint (GET /authz) for nginx
// auth_request, Traefik ForwardAuth and Caddy forward_auth: 200 to allow, 403
// to block (the main reason code in x-condaccess-reason), 401 for a caller that
// is not authenticated, 403 ROLE_NOT_ALLOWED for one that is not an
// enforcement point. The user comes from a verified bearer token or Pomerium
// assertion, the device from the forwarded certificate, the client IP from the
// connection and the trusted X-Forwarded-For hops (see Edge).
func (s *Server) AuthzHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodPost {
			w.Header().Set("Allow", "GET, HEAD, POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		caller, ok := s.callerOf(r.Context())
		if !ok {
			w.Header().Set(ReasonHeader, "UNAUTHENTICATED")
			http.Error(w, "authentication required: /authz needs an enforcement-point client certificate", http.StatusUnauthorized)
			return
		}
		// Only enforcement points: EvaluateAccess names no allowed_services, so a
		// service's certificate may not decide (and open sessions) here either.
		if !caller.HasRole(commonv1.Role_ROLE_ENFORCEMENT_POINT) {
			w.Header().Set(ReasonHeader, "ROLE_NOT_ALLOWED")
			http.Error(w, "/authz may be called only by an enforcement point", http.StatusForbidden)
			return
		}
		f := forwardedFromHTTP(r, s.edge.CertHeader)
		o := s.enforce(r.Context(), f)
		w.Header().Set(ReasonHeader, o.reason)
		if o.signIn != "" {
			w.Header().Set(SignInHeader, o.signIn)
		}
		if o.allow {
			if o.session != "" {
				w.Header().Set(SessionHeader, o.session)
			}
			w.WriteHeader(http.StatusOK)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusForbidden)
		if r.Method != http.MethodHead {
			w.Write([]byte(s.blockedBody(o)))
		}
	})
}

// forwardedFromHTTP maps an /authz request: the peer from the connection, the
// X-Forwarded-For values, the device certificate from certHeader.
func forwardedFromHTTP(r *http.Request, certHeader string) *forwarded {
	f := &forwarded{get: r.Header.Get, xff: r.Header.Values(forwardedForHeader), deviceCert: r.Header.Get(certHeader)}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		f.peer = ap.Addr()
	}
	return f
}
