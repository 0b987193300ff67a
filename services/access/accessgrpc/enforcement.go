package accessgrpc

import (
	"context"
	"net/http"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	"github.com/condaccess/condaccess/internal/apierr"
)

// ReasonInvalidRequest is the reason header of a request the enforcement
// points could not turn into a decision request (a missing header).
const ReasonInvalidRequest = "INVALID_REQUEST"

// SessionHeader carries the session id of an allowed access.
const SessionHeader = "x-condaccess-session-id"

func truthy(v string) bool {
	v = strings.ToLower(strings.TrimSpace(v))
	return v == "true" || v == "1" || v == "yes"
}

// fromHeaders builds the decision request from enforcement-point headers.
func (s *Server) fromHeaders(get func(string) string, ip string) *accessv1.EvaluateAccessRequest {
	req := &accessv1.EvaluateAccessRequest{UserId: get(s.headers.User), DeviceId: get(s.headers.Device), ApplicationId: get(s.headers.Application)}
	c := &accessv1.ClientContext{IpAddress: ip}
	if s.headers.MFA != "" {
		c.MfaDone = truthy(get(s.headers.MFA))
	}
	req.Client = c
	return req
}

// outcome is what an enforcement point answers.
type outcome struct {
	allow          bool
	reason, detail string
	session        string
}

func (s *Server) enforce(ctx context.Context, req *accessv1.EvaluateAccessRequest) outcome {
	// The enforcement points answer with the decision and its main reason only:
	// the engine leaves out the policies that did not apply.
	resp, err := s.decide(ctx, req, "", true)
	if err != nil && req.GetClient().GetIpAddress() != "" {
		// A client address we cannot parse is dropped rather than refused.
		req.Client.IpAddress = ""
		resp, err = s.decide(ctx, req, "", true)
	}
	if err != nil {
		return outcome{reason: ReasonInvalidRequest, detail: errMessage(err)}
	}
	o := outcome{allow: resp.GetDecision() == accessv1.Decision_DECISION_ALLOW, session: resp.GetSessionId()}
	if len(resp.GetReasons()) > 0 {
		o.reason, o.detail = resp.GetReasons()[0].GetCode(), resp.GetReasons()[0].GetMessage()
	}
	return o
}

func errMessage(err error) string {
	if vs := apierr.Violations(err); len(vs) > 0 {
		var parts []string
		for _, v := range vs {
			parts = append(parts, v.GetField()+": "+v.GetDescription())
		}
		return "invalid request: " + strings.Join(parts, "; ")
	}
	return err.Error()
}

type checkServer struct {
	authv3.UnimplementedAuthorizationServer
	s *Server
}

func header(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}}
}

// Check is Envoy's external authorization: OK or PERMISSION_DENIED (HTTP 403),
// with the main reason code in x-condaccess-reason.
func (c *checkServer) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	h := req.GetAttributes().GetRequest().GetHttp()
	hdrs := h.GetHeaders()
	get := func(k string) string {
		if v, ok := hdrs[k]; ok {
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
	ip := req.GetAttributes().GetSource().GetAddress().GetSocketAddress().GetAddress()
	o := c.s.enforce(ctx, c.s.fromHeaders(get, ip))
	if o.allow {
		hs := []*corev3.HeaderValueOption{header(ReasonHeader, o.reason)}
		if o.session != "" {
			hs = append(hs, header(SessionHeader, o.session))
		}
		return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{Headers: hs}}}, nil
	}
	return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied), Message: o.reason + ": " + o.detail},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden},
			Headers: []*corev3.HeaderValueOption{header(ReasonHeader, o.reason)},
			Body:    o.reason + ": " + o.detail + "\n",
		}}}, nil
}

// AuthzHandler is the HTTP forward-auth endpoint (GET /authz) for nginx
// auth_request, Traefik ForwardAuth and Caddy forward_auth: 200 to allow, 403
// to block, the main reason code in x-condaccess-reason. The client address
// is the first X-Forwarded-For entry, when present.
func (s *Server) AuthzHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodPost {
			w.Header().Set("Allow", "GET, HEAD, POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		ip := ""
		if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
			ip, _, _ = strings.Cut(xff, ",")
			ip = strings.TrimSpace(ip)
		}
		o := s.enforce(r.Context(), s.fromHeaders(r.Header.Get, ip))
		w.Header().Set(ReasonHeader, o.reason)
		w.Header().Set("Cache-Control", "no-store")
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
			w.Write([]byte(o.reason + ": " + o.detail + "\n"))
		}
	})
}
