package accessgrpc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/telemetry"
	"github.com/condaccess/condaccess/services/access/accessgrpc"
)

const (
	compliant    = commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT
	noncompliant = commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT
	allow        = accessv1.Decision_DECISION_ALLOW
	block        = accessv1.Decision_DECISION_BLOCK
)

// must returns v, or panics (failing the test run) on an unexpected error.
func TestMain(m *testing.M) {
	// The binary installs an SDK tracer provider (telemetry.Setup); so do the tests,
	// so that decisions get trace ids.
	otel.SetTracerProvider(sdktrace.NewTracerProvider())
	otel.SetTextMapPropagator(propagation.TraceContext{})
	os.Exit(m.Run())
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("unexpected error: %v", err))
	}
	return v
}

// seed creates the wire example's directory and policy.
func seed(t *testing.T, h *harness) {
	t.Helper()
	ctx := context.Background()
	must(h.dir.CreateUser(ctx, &accessv1.CreateUserRequest{User: &accessv1.User{UserId: "u-1", DisplayName: "Ada"}}))
	for _, app := range []string{"payroll", "wiki"} {
		must(h.dir.CreateApplication(ctx, &accessv1.CreateApplicationRequest{Application: &accessv1.Application{ApplicationId: app, DisplayName: app}}))
	}
	must(h.pol.CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: &accessv1.ConditionalAccessPolicy{
		PolicyId: "payroll-compliant", DisplayName: "Payroll requires a compliant device", State: accessv1.PolicyState_POLICY_STATE_ENABLED,
		Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{Include: []string{"payroll"}},
		GrantControls: &accessv1.GrantControls{Require: []accessv1.GrantControl{accessv1.GrantControl_GRANT_CONTROL_COMPLIANT_DEVICE}},
	}}))
}

func evaluate(t *testing.T, h *harness, user, dev, app string) *accessv1.EvaluateAccessResponse {
	t.Helper()
	return must(h.acc.EvaluateAccess(context.Background(), &accessv1.EvaluateAccessRequest{UserId: user, DeviceId: dev, ApplicationId: app}))
}

func codesOf(r *accessv1.EvaluateAccessResponse) []string {
	var out []string
	for _, x := range r.GetReasons() {
		out = append(out, x.GetCode())
	}
	return out
}

func waitDecision(t *testing.T, h *harness, want accessv1.Decision, user, dev, app string) *accessv1.EvaluateAccessResponse {
	t.Helper()
	var r *accessv1.EvaluateAccessResponse
	eventually(t, "decision "+want.String(), func() bool {
		r = evaluate(t, h, user, dev, app)
		return r.GetDecision() == want
	})
	return r
}

// TestWireFlow plays the access lines of ARCHITECTURE.md's wire examples.
func TestWireFlow(t *testing.T) {
	h := start(t, options{})
	seed(t, h)
	ctx := context.Background()

	h.compliance.set("dev-1", compliant, commonv1.RiskLevel_RISK_LEVEL_NONE, nil, nil)
	r := waitDecision(t, h, allow, "u-1", "dev-1", "payroll")
	if diff := cmp.Diff([]string{"GRANTED_BY_POLICY"}, codesOf(r)); diff != "" {
		t.Errorf("allow reasons (-want +got):\n%s", diff)
	}
	if r.GetSessionId() == "" || r.GetTraceId() == "" || !r.GetDeviceCompliance().GetKnown() || r.GetPolicySnapshotVersion() == 0 {
		t.Errorf("allow response lacks session, trace, device or snapshot: %v", r)
	}

	// HIGH alert: the compliance service marks dev-1 noncompliant.
	h.compliance.set("dev-1", noncompliant, commonv1.RiskLevel_RISK_LEVEL_HIGH, []string{"a-1"}, nil)
	r = waitDecision(t, h, block, "u-1", "dev-1", "payroll")
	if diff := cmp.Diff([]string{"COMPLIANT_DEVICE_REQUIRED"}, codesOf(r)); diff != "" {
		t.Errorf("block reasons (-want +got):\n%s", diff)
	}
	var kinds []accessv1.CauseKind
	alertInChain := false
	for _, c := range r.GetCauseChain() {
		kinds = append(kinds, c.GetKind())
		if c.GetKind() == accessv1.CauseKind_CAUSE_KIND_ALERT && c.GetId() == "a-1" {
			alertInChain = true
		}
	}
	if !alertInChain {
		t.Errorf("cause chain %v lacks alert a-1", r.GetCauseChain())
	}
	wantKinds := []accessv1.CauseKind{accessv1.CauseKind_CAUSE_KIND_ALERT, accessv1.CauseKind_CAUSE_KIND_RISK_LEVEL, accessv1.CauseKind_CAUSE_KIND_COMPLIANCE_SETTING, accessv1.CauseKind_CAUSE_KIND_POLICY, accessv1.CauseKind_CAUSE_KIND_CONTROL}
	if diff := cmp.Diff(wantKinds, kinds); diff != "" {
		t.Errorf("cause chain kinds (-want +got):\n%s", diff)
	}
	if got := r.GetDeviceCompliance(); got.GetState() != noncompliant || got.GetDeviceRisk() != commonv1.RiskLevel_RISK_LEVEL_HIGH || got.GetRevision() != 2 || got.GetStale() {
		t.Errorf("device compliance = %v", got)
	}
	// wiki has no policy: still allowed.
	if r := evaluate(t, h, "u-1", "dev-1", "wiki"); r.GetDecision() != allow || codesOf(r)[0] != "ALLOWED" {
		t.Errorf("wiki = %v %v", r.GetDecision(), codesOf(r))
	}

	// Resolved: compliant again.
	h.compliance.set("dev-1", compliant, commonv1.RiskLevel_RISK_LEVEL_NONE, nil, nil)
	waitDecision(t, h, allow, "u-1", "dev-1", "payroll")

	// A REPORT_ONLY block policy never blocks and reports "would block".
	must(h.pol.CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: &accessv1.ConditionalAccessPolicy{
		PolicyId: "wiki-block", DisplayName: "Block wiki (trial)", State: accessv1.PolicyState_POLICY_STATE_REPORT_ONLY,
		Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{Include: []string{"wiki"}},
		GrantControls: &accessv1.GrantControls{Block: true},
	}}))
	r = evaluate(t, h, "u-1", "dev-1", "wiki")
	if r.GetDecision() != allow {
		t.Fatalf("report-only policy blocked: %v", r)
	}
	want := []*accessv1.PolicyResult{{PolicyId: "wiki-block", DisplayName: "Block wiki (trial)", State: accessv1.PolicyState_POLICY_STATE_REPORT_ONLY,
		Result: accessv1.PolicyResultKind_POLICY_RESULT_KIND_REPORT_ONLY_WOULD_BLOCK}}
	if diff := cmp.Diff(want, r.GetPolicies(), protocmp.Transform()); diff != "" {
		t.Errorf("per-policy results (-want +got):\n%s", diff)
	}

	// Every decision was recorded with its reasons and trace id.
	if err := h.svc.Recorder().Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sis := must(h.acc.ListSignIns(ctx, &accessv1.ListSignInsRequest{UserId: "u-1", ApplicationId: "payroll", Decision: block}))
	if len(sis.GetSignIns()) == 0 {
		t.Fatal("no blocked payroll sign-in recorded")
	}
	si := sis.GetSignIns()[0]
	if si.GetTraceId() == "" || len(si.GetReasons()) == 0 || si.GetReasons()[0].GetCode() != "COMPLIANT_DEVICE_REQUIRED" || si.GetComplianceState() != noncompliant {
		t.Errorf("sign-in = %v", si)
	}
}

// TestRevocationOnNoncompliance: a WatchSessionEvents subscriber receives the
// revocation of dev-1's session, with the compliance event's trace.
func TestRevocationOnNoncompliance(t *testing.T) {
	h := start(t, options{})
	seed(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h.compliance.set("dev-1", compliant, commonv1.RiskLevel_RISK_LEVEL_NONE, nil, nil)
	r := waitDecision(t, h, allow, "u-1", "dev-1", "payroll")
	sid := r.GetSessionId()
	if r2 := evaluate(t, h, "u-1", "dev-1", "payroll"); r2.GetSessionId() != sid {
		t.Fatalf("refresh opened a new session %q, want %q", r2.GetSessionId(), sid)
	}
	watch := must(h.acc.WatchSessionEvents(ctx, &accessv1.WatchSessionEventsRequest{}))

	tc := &commonv1.TraceContext{Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	rev := h.compliance.set("dev-1", noncompliant, commonv1.RiskLevel_RISK_LEVEL_HIGH, []string{"a-1"}, tc)
	var opened bool
	for {
		m, err := watch.Recv()
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		e := m.GetEvent()
		if e == nil {
			continue
		}
		if o := e.GetSessionOpened(); o != nil && o.GetSession().GetSessionId() == sid {
			opened = true
			if got := telemetry.TraceID(telemetry.ContextFromTraceContext(ctx, e.GetTraceContext())); got != r.GetTraceId() {
				t.Errorf("session_opened trace id = %q, want the decision's %q", got, r.GetTraceId())
			}
		}
		if rv := e.GetSessionRevoked(); rv != nil {
			if !opened {
				t.Error("revocation before session_opened")
			}
			if rv.GetSession().GetSessionId() != sid || rv.GetReasonCode() != "DEVICE_NONCOMPLIANT" || rv.GetComplianceRevision() != rev ||
				rv.GetSession().GetState() != accessv1.SessionState_SESSION_STATE_REVOKED {
				t.Errorf("revoked = %v", rv)
			}
			if got := telemetry.TraceID(telemetry.ContextFromTraceContext(ctx, e.GetTraceContext())); got != "4bf92f3577b34da6a3ce929d0e0e4736" {
				t.Errorf("revocation trace id = %q, want the compliance event's", got)
			}
			break
		}
	}
	sessions := must(h.acc.ListSessions(ctx, &accessv1.ListSessionsRequest{DeviceId: "dev-1"}))
	if len(sessions.GetSessions()) != 1 || sessions.GetSessions()[0].GetState() != accessv1.SessionState_SESSION_STATE_REVOKED {
		t.Errorf("sessions = %v", sessions.GetSessions())
	}
	// Compliant again: a new session opens.
	h.compliance.set("dev-1", compliant, commonv1.RiskLevel_RISK_LEVEL_NONE, nil, nil)
	if r := waitDecision(t, h, allow, "u-1", "dev-1", "payroll"); r.GetSessionId() == sid || r.GetSessionId() == "" {
		t.Errorf("session after revocation = %q (old %q)", r.GetSessionId(), sid)
	}
}

// TestStaleFeedFailsClosed: with the compliance service stopped past the
// staleness bound, apps that require a compliant device block with
// COMPLIANCE_STATE_STALE; others still allow.
func TestStaleFeedFailsClosed(t *testing.T) {
	h := start(t, options{bound: 200 * time.Millisecond})
	seed(t, h)
	h.compliance.set("dev-1", compliant, commonv1.RiskLevel_RISK_LEVEL_NONE, nil, nil)
	r := waitDecision(t, h, allow, "u-1", "dev-1", "payroll")
	if r.GetDeviceCompliance().GetStale() {
		t.Fatal("fresh feed reported stale")
	}
	h.stopFeed()
	r = waitDecision(t, h, block, "u-1", "dev-1", "payroll")
	if diff := cmp.Diff([]string{"COMPLIANCE_STATE_STALE"}, codesOf(r)); diff != "" {
		t.Errorf("reasons (-want +got):\n%s", diff)
	}
	dc := r.GetDeviceCompliance()
	if !dc.GetStale() || dc.GetAge().AsDuration() <= 200*time.Millisecond || dc.GetState() != compliant {
		t.Errorf("device compliance = %v", dc)
	}
	if st := h.svc.FeedStatus(); !st.Stale || st.Lag <= st.Bound {
		t.Errorf("feed status = %+v", st)
	}
	if r := evaluate(t, h, "u-1", "dev-1", "wiki"); r.GetDecision() != allow {
		t.Errorf("app without compliance requirement blocked: %v", codesOf(r))
	}
}

type checkCase struct {
	name           string
	user, dev, app string
	wantDecision   accessv1.Decision
	wantReason     string
}

// TestEnforcementPointsAgree: Envoy Check and GET /authz give the decisions
// EvaluateAccess gives.
func TestEnforcementPointsAgree(t *testing.T) {
	h := start(t, options{})
	seed(t, h)
	ctx := context.Background()
	must(h.dir.CreateUser(ctx, &accessv1.CreateUserRequest{User: &accessv1.User{UserId: "u-off", Disabled: true}}))
	h.compliance.set("dev-1", compliant, commonv1.RiskLevel_RISK_LEVEL_NONE, nil, nil)
	h.compliance.set("dev-2", noncompliant, commonv1.RiskLevel_RISK_LEVEL_HIGH, []string{"a-9"}, nil)
	eventually(t, "dev-2 known", func() bool { return evaluate(t, h, "u-1", "dev-2", "payroll").GetDeviceCompliance().GetKnown() })
	waitDecision(t, h, allow, "u-1", "dev-1", "payroll")
	tests := []checkCase{
		{"compliant device", "u-1", "dev-1", "payroll", allow, "GRANTED_BY_POLICY"},
		{"noncompliant device", "u-1", "dev-2", "payroll", block, "COMPLIANT_DEVICE_REQUIRED"},
		{"no policy", "u-1", "dev-2", "wiki", allow, "ALLOWED"},
		{"unknown user", "ghost", "dev-1", "payroll", block, "UNKNOWN_USER"},
		{"unknown device", "u-1", "dev-x", "payroll", block, "UNKNOWN_DEVICE"},
		{"unknown application", "u-1", "dev-1", "nope", block, "UNKNOWN_APPLICATION"},
		{"disabled user", "u-off", "dev-1", "wiki", block, "USER_DISABLED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := evaluate(t, h, tt.user, tt.dev, tt.app)
			if r.GetDecision() != tt.wantDecision || codesOf(r)[0] != tt.wantReason {
				t.Fatalf("EvaluateAccess = %v %v, want %v %s", r.GetDecision(), codesOf(r), tt.wantDecision, tt.wantReason)
			}
			// Envoy ext_authz.
			cr := must(h.authz.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
				Http: &authv3.AttributeContext_HttpRequest{Headers: map[string]string{"x-user-id": tt.user, "x-device-id": tt.dev, "x-application-id": tt.app}}}}}))
			gotAllow := cr.GetStatus().GetCode() == int32(codes.OK)
			var hdrs []*corev3.HeaderValueOption
			if gotAllow {
				hdrs = cr.GetOkResponse().GetHeaders()
			} else {
				hdrs = cr.GetDeniedResponse().GetHeaders()
				if cr.GetDeniedResponse().GetStatus().GetCode() != 403 {
					t.Errorf("Check denied with HTTP %v, want 403", cr.GetDeniedResponse().GetStatus().GetCode())
				}
			}
			if gotAllow != (tt.wantDecision == allow) || headerValue(hdrs, accessgrpc.ReasonHeader) != tt.wantReason {
				t.Errorf("Check = allow %v reason %q, want %v %s", gotAllow, headerValue(hdrs, accessgrpc.ReasonHeader), tt.wantDecision, tt.wantReason)
			}
			// HTTP forward auth.
			req, _ := http.NewRequest(http.MethodGet, h.http.URL+"/authz", nil)
			req.Header.Set("x-user-id", tt.user)
			req.Header.Set("x-device-id", tt.dev)
			req.Header.Set("x-application-id", tt.app)
			resp := must(http.DefaultClient.Do(req))
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			wantCode := http.StatusForbidden
			if tt.wantDecision == allow {
				wantCode = http.StatusOK
			}
			if resp.StatusCode != wantCode || resp.Header.Get(accessgrpc.ReasonHeader) != tt.wantReason {
				t.Errorf("GET /authz = %d %q, want %d %s", resp.StatusCode, resp.Header.Get(accessgrpc.ReasonHeader), wantCode, tt.wantReason)
			}
		})
	}
	// Every decision is in the sign-in log, whichever point asked (the
	// enforcement points evaluate with OnlyApplied: same decision and reasons).
	if err := h.svc.Recorder().Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sis := must(h.acc.ListSignIns(ctx, &accessv1.ListSignInsRequest{UserId: "u-off"})).GetSignIns()
	if len(sis) != 3 {
		t.Errorf("sign-ins of u-off = %d, want 3 (EvaluateAccess, Check, /authz)", len(sis))
	}
	for _, si := range sis {
		if si.GetDecision() != block || len(si.GetReasons()) == 0 || si.GetReasons()[0].GetCode() != "USER_DISABLED" {
			t.Errorf("sign-in %s = %v %v, want BLOCK USER_DISABLED", si.GetSignInId(), si.GetDecision(), si.GetReasons())
		}
	}
	// A request without the headers is refused, not allowed.
	resp := must(http.Get(h.http.URL + "/authz"))
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get(accessgrpc.ReasonHeader) != accessgrpc.ReasonInvalidRequest {
		t.Errorf("GET /authz without headers = %d %q", resp.StatusCode, resp.Header.Get(accessgrpc.ReasonHeader))
	}
}

func headerValue(hs []*corev3.HeaderValueOption, k string) string {
	for _, h := range hs {
		if h.GetHeader().GetKey() == k {
			return h.GetHeader().GetValue()
		}
	}
	return ""
}

func TestLockoutGuard(t *testing.T) {
	h := start(t, options{emergency: []string{"bg-flag"}})
	ctx := context.Background()
	must(h.dir.CreateUser(ctx, &accessv1.CreateUserRequest{User: &accessv1.User{UserId: "bg-1", EmergencyAccess: true}}))
	must(h.dir.CreateUser(ctx, &accessv1.CreateUserRequest{User: &accessv1.User{UserId: "bg-flag"}}))
	must(h.dir.CreateApplication(ctx, &accessv1.CreateApplicationRequest{Application: &accessv1.Application{ApplicationId: "payroll"}}))
	pol := func(state accessv1.PolicyState, exclude ...string) *accessv1.ConditionalAccessPolicy {
		return &accessv1.ConditionalAccessPolicy{PolicyId: "all-mfa", DisplayName: "Everyone needs MFA", State: state,
			Users: &accessv1.UserAssignment{All: true, ExcludeUsers: exclude}, Applications: &accessv1.ApplicationAssignment{All: true},
			GrantControls: &accessv1.GrantControls{Require: []accessv1.GrantControl{accessv1.GrantControl_GRANT_CONTROL_MFA}}}
	}
	tests := []struct {
		name    string
		p       *accessv1.ConditionalAccessPolicy
		code    codes.Code
		account string
	}{
		{"enabled, no exclusion", pol(accessv1.PolicyState_POLICY_STATE_ENABLED), codes.FailedPrecondition, "bg-1"},
		{"flag account not excluded", pol(accessv1.PolicyState_POLICY_STATE_ENABLED, "bg-1"), codes.FailedPrecondition, "bg-flag"},
		{"report-only is allowed", pol(accessv1.PolicyState_POLICY_STATE_REPORT_ONLY), codes.OK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.pol.CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: tt.p})
			if status.Code(err) != tt.code {
				t.Fatalf("code = %v (%v), want %v", status.Code(err), err, tt.code)
			}
			if tt.account != "" {
				msg := status.Convert(err).Message()
				if !contains(msg, `"`+tt.account+`"`) || !contains(msg, "exclude_users") || apierr.Reason(err) != accessgrpc.ReasonLockout {
					t.Errorf("message %q (reason %s) does not name %s and how to exclude it", msg, apierr.Reason(err), tt.account)
				}
			}
		})
	}
	// Enabling the report-only policy is guarded too; with both excluded it passes.
	got := must(h.pol.GetPolicy(ctx, &accessv1.GetPolicyRequest{PolicyId: "all-mfa"})).GetPolicy()
	p := pol(accessv1.PolicyState_POLICY_STATE_ENABLED)
	p.Etag = got.GetEtag()
	_, err := h.pol.UpdatePolicy(ctx, &accessv1.UpdatePolicyRequest{Policy: p, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"state"}}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("enable via update: %v", err)
	}
	p = pol(accessv1.PolicyState_POLICY_STATE_ENABLED, "bg-1", "bg-flag")
	p.Etag = got.GetEtag()
	must(h.pol.UpdatePolicy(ctx, &accessv1.UpdatePolicyRequest{Policy: p}))
}

func contains(s, sub string) bool {
	return len(s) >= len(sub) && (s == sub || len(sub) == 0 || indexOf(s, sub) >= 0)
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

func TestErrors(t *testing.T) {
	h := start(t, options{})
	seed(t, h)
	ctx := context.Background()
	u := must(h.dir.GetUser(ctx, &accessv1.GetUserRequest{UserId: "u-1"})).GetUser()
	validPolicy := func() *accessv1.ConditionalAccessPolicy {
		return &accessv1.ConditionalAccessPolicy{PolicyId: "p", DisplayName: "P", State: accessv1.PolicyState_POLICY_STATE_ENABLED,
			Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{Include: []string{"wiki"}},
			GrantControls: &accessv1.GrantControls{Block: true}}
	}
	noControl := validPolicy()
	noControl.GrantControls = &accessv1.GrantControls{}
	both := validPolicy()
	both.GrantControls.Require = []accessv1.GrantControl{accessv1.GrantControl_GRANT_CONTROL_MFA}
	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"stale etag", func() error {
			_, err := h.dir.UpdateUser(ctx, &accessv1.UpdateUserRequest{User: &accessv1.User{UserId: "u-1", DisplayName: "x", Etag: "stale"}})
			return err
		}, codes.Aborted},
		{"current etag", func() error {
			_, err := h.dir.UpdateUser(ctx, &accessv1.UpdateUserRequest{User: &accessv1.User{UserId: "u-1", DisplayName: "x", Etag: u.GetEtag()},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"display_name"}}})
			return err
		}, codes.OK},
		{"unknown mask path", func() error {
			_, err := h.dir.UpdateUser(ctx, &accessv1.UpdateUserRequest{User: &accessv1.User{UserId: "u-1"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"user_id"}}})
			return err
		}, codes.InvalidArgument},
		{"duplicate user", func() error {
			_, err := h.dir.CreateUser(ctx, &accessv1.CreateUserRequest{User: &accessv1.User{UserId: "u-1"}})
			return err
		}, codes.AlreadyExists},
		{"policy without control", func() error {
			_, err := h.pol.CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: noControl})
			return err
		}, codes.InvalidArgument},
		{"policy with block and requirement", func() error {
			_, err := h.pol.CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: both})
			return err
		}, codes.InvalidArgument},
		{"missing policy", func() error {
			_, err := h.pol.GetPolicy(ctx, &accessv1.GetPolicyRequest{PolicyId: "none"})
			return err
		}, codes.NotFound},
		{"malformed request", func() error {
			_, err := h.acc.EvaluateAccess(ctx, &accessv1.EvaluateAccessRequest{UserId: "u-1", ApplicationId: "payroll"})
			return err
		}, codes.InvalidArgument},
		{"bad ip", func() error {
			_, err := h.acc.EvaluateAccess(ctx, &accessv1.EvaluateAccessRequest{UserId: "u-1", DeviceId: "d", ApplicationId: "payroll", Client: &accessv1.ClientContext{IpAddress: "999.1.1.1"}})
			return err
		}, codes.InvalidArgument},
		{"unknown member", func() error {
			_, err := h.dir.CreateGroup(ctx, &accessv1.CreateGroupRequest{Group: &accessv1.Group{GroupId: "g", MemberUserIds: []string{"ghost"}}})
			return err
		}, codes.NotFound},
		{"bad page token", func() error {
			_, err := h.dir.ListUsers(ctx, &accessv1.ListUsersRequest{PageToken: "!!"})
			return err
		}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); status.Code(err) != tt.want {
				t.Fatalf("code = %v (%v), want %v", status.Code(err), err, tt.want)
			}
		})
	}
}

func TestGroupsNestingAndCycles(t *testing.T) {
	h := start(t, options{})
	ctx := context.Background()
	must(h.dir.CreateUser(ctx, &accessv1.CreateUserRequest{User: &accessv1.User{UserId: "u-1"}}))
	must(h.dir.CreateGroup(ctx, &accessv1.CreateGroupRequest{Group: &accessv1.Group{GroupId: "inner", MemberUserIds: []string{"u-1"}}}))
	must(h.dir.CreateGroup(ctx, &accessv1.CreateGroupRequest{Group: &accessv1.Group{GroupId: "outer", MemberGroupIds: []string{"inner"}}}))
	u := must(h.dir.GetUser(ctx, &accessv1.GetUserRequest{UserId: "u-1"})).GetUser()
	if diff := cmp.Diff([]string{"inner"}, u.GetGroupIds()); diff != "" {
		t.Errorf("direct groups (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"inner", "outer"}, u.GetTransitiveGroupIds()); diff != "" {
		t.Errorf("transitive groups (-want +got):\n%s", diff)
	}
	_, err := h.dir.UpdateGroup(ctx, &accessv1.UpdateGroupRequest{Group: &accessv1.Group{GroupId: "inner", MemberGroupIds: []string{"outer"}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"member_group_ids"}}})
	if status.Code(err) != codes.FailedPrecondition || apierr.Reason(err) != accessgrpc.ReasonMembershipCycle {
		t.Fatalf("cycle: %v", err)
	}
	// A policy excluding the outer group excludes u-1 (transitively): exclusion beats inclusion.
	must(h.dir.CreateApplication(ctx, &accessv1.CreateApplicationRequest{Application: &accessv1.Application{ApplicationId: "app"}}))
	must(h.pol.CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: &accessv1.ConditionalAccessPolicy{PolicyId: "blk", DisplayName: "Block",
		State: accessv1.PolicyState_POLICY_STATE_ENABLED, Users: &accessv1.UserAssignment{IncludeUsers: []string{"u-1"}, ExcludeGroups: []string{"outer"}},
		Applications: &accessv1.ApplicationAssignment{All: true}, GrantControls: &accessv1.GrantControls{Block: true}}}))
	if r := evaluate(t, h, "u-1", "d", "app"); r.GetDecision() != allow {
		t.Errorf("excluded user blocked: %v", codesOf(r))
	}
	// Remove u-1 from inner: the block applies.
	must(h.dir.UpdateGroup(ctx, &accessv1.UpdateGroupRequest{Group: &accessv1.Group{GroupId: "inner"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"member_user_ids"}}}))
	if r := evaluate(t, h, "u-1", "d", "app"); r.GetDecision() != block || codesOf(r)[0] != "BLOCKED_BY_POLICY" {
		t.Errorf("after removal: %v %v", r.GetDecision(), codesOf(r))
	}
}

func TestImportDirectory(t *testing.T) {
	h := start(t, options{})
	ctx := context.Background()
	stream := must(h.dir.ImportDirectory(ctx))
	var users []*accessv1.User
	for i := range 2500 {
		users = append(users, &accessv1.User{UserId: "u" + itoa(i)})
	}
	if err := stream.Send(&accessv1.ImportDirectoryRequest{Users: users[:2000]}); err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&accessv1.ImportDirectoryRequest{Users: users[2000:], Applications: []*accessv1.Application{{ApplicationId: "app"}},
		Groups: []*accessv1.Group{{GroupId: "all", MemberUserIds: []string{"u1", "u2"}, MemberGroupIds: []string{"sub"}}, {GroupId: "sub", MemberUserIds: []string{"u3"}}}}); err != nil {
		t.Fatal(err)
	}
	resp := must(stream.CloseAndRecv())
	if resp.GetUsers() != 2500 || resp.GetGroups() != 2 || resp.GetApplications() != 1 {
		t.Fatalf("import = %v", resp)
	}
	u := must(h.dir.GetUser(ctx, &accessv1.GetUserRequest{UserId: "u3"})).GetUser()
	if diff := cmp.Diff([]string{"all", "sub"}, u.GetTransitiveGroupIds()); diff != "" {
		t.Errorf("transitive (-want +got):\n%s", diff)
	}
	if r := evaluate(t, h, "u2499", "d", "app"); r.GetDecision() != allow {
		t.Errorf("imported user: %v", codesOf(r))
	}
	// A cycle in the import is refused.
	stream = must(h.dir.ImportDirectory(ctx))
	stream.Send(&accessv1.ImportDirectoryRequest{Groups: []*accessv1.Group{{GroupId: "x", MemberGroupIds: []string{"y"}}, {GroupId: "y", MemberGroupIds: []string{"x"}}}})
	if _, err := stream.CloseAndRecv(); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("cyclic import: %v", err)
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

func TestWhatIf(t *testing.T) {
	h := start(t, options{})
	seed(t, h)
	ctx := context.Background()
	h.compliance.set("dev-1", compliant, commonv1.RiskLevel_RISK_LEVEL_NONE, nil, nil)
	waitDecision(t, h, allow, "u-1", "dev-1", "payroll")
	req := &accessv1.EvaluateAccessRequest{UserId: "u-1", DeviceId: "dev-1", ApplicationId: "payroll"}
	countSignIns := func() int {
		if err := h.svc.Recorder().Flush(ctx); err != nil {
			t.Fatal(err)
		}
		return len(must(h.acc.ListSignIns(ctx, &accessv1.ListSignInsRequest{PageSize: 1000})).GetSignIns())
	}
	before := countSignIns()
	tests := []struct {
		name     string
		o        *accessv1.WhatIfOverrides
		want     accessv1.Decision
		wantCode codes.Code
	}{
		{"risk high", &accessv1.WhatIfOverrides{DeviceRisk: commonv1.RiskLevel_RISK_LEVEL_HIGH}, block, codes.OK},
		{"risk low", &accessv1.WhatIfOverrides{DeviceRisk: commonv1.RiskLevel_RISK_LEVEL_LOW}, allow, codes.OK},
		{"noncompliant", &accessv1.WhatIfOverrides{ComplianceState: noncompliant}, block, codes.OK},
		{"draft block", &accessv1.WhatIfOverrides{DraftPolicies: []*accessv1.ConditionalAccessPolicy{{PolicyId: "d", DisplayName: "D",
			State: accessv1.PolicyState_POLICY_STATE_ENABLED, Users: &accessv1.UserAssignment{All: true},
			Applications: &accessv1.ApplicationAssignment{All: true}, GrantControls: &accessv1.GrantControls{Block: true}}}}, block, codes.OK},
		{"invalid draft", &accessv1.WhatIfOverrides{DraftPolicies: []*accessv1.ConditionalAccessPolicy{{PolicyId: "d", DisplayName: "D",
			State: accessv1.PolicyState_POLICY_STATE_ENABLED, Users: &accessv1.UserAssignment{All: true},
			Applications: &accessv1.ApplicationAssignment{All: true}, GrantControls: &accessv1.GrantControls{}}}}, 0, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := h.acc.WhatIf(ctx, &accessv1.WhatIfRequest{Request: req, Overrides: tt.o})
			if status.Code(err) != tt.wantCode {
				t.Fatalf("code = %v (%v), want %v", status.Code(err), err, tt.wantCode)
			}
			if err != nil {
				return
			}
			if r.GetActual().GetDecision() != allow || r.GetWhatIf().GetDecision() != tt.want {
				t.Fatalf("actual %v, what-if %v (want %v)", r.GetActual().GetDecision(), r.GetWhatIf().GetDecision(), tt.want)
			}
			decisionChanged := false
			for _, c := range r.GetChanges() {
				decisionChanged = decisionChanged || strings.HasPrefix(c, "decision: DECISION_ALLOW → DECISION_BLOCK")
			}
			if (tt.want == block) != decisionChanged {
				t.Errorf("changes = %q", r.GetChanges())
			}
		})
	}
	// WhatIf records no sign-in.
	if after := countSignIns(); after != before {
		t.Errorf("WhatIf recorded %d sign-ins", after-before)
	}
}

func TestEvaluateAccessStream(t *testing.T) {
	h := start(t, options{})
	seed(t, h)
	ctx := context.Background()
	s := must(h.acc.EvaluateAccessStream(ctx))
	for i, app := range []string{"payroll", "wiki", "nope"} {
		if err := s.Send(&accessv1.EvaluateAccessStreamRequest{RequestId: itoa(i), Request: &accessv1.EvaluateAccessRequest{UserId: "u-1", DeviceId: "dev-1", ApplicationId: app}}); err != nil {
			t.Fatal(err)
		}
	}
	s.CloseSend()
	var got []string
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, m.GetRequestId()+":"+m.GetResponse().GetDecision().String()+":"+codesOf(m.GetResponse())[0])
	}
	// No compliance feed data yet for dev-1: UNKNOWN_DEVICE.
	want := []string{"0:DECISION_BLOCK:UNKNOWN_DEVICE", "1:DECISION_ALLOW:ALLOWED", "2:DECISION_BLOCK:UNKNOWN_APPLICATION"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestRestartResumes: a restarted access service serves the stored device
// states and sessions, resumes the compliance feed from its stored cursor
// (no resync), and still revokes a session opened before the restart.
func TestRestartResumes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.db")
	fc := newFakeCompliance()
	h := start(t, options{dbPath: path, compliance: fc})
	seed(t, h)
	fc.set("dev-1", compliant, commonv1.RiskLevel_RISK_LEVEL_NONE, nil, nil)
	sid := waitDecision(t, h, allow, "u-1", "dev-1", "payroll").GetSessionId()
	if err := h.svc.Recorder().Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "cursor at 1", func() bool { return h.svc.FeedStatus().Revision == 1 })
	h.stop()

	h2 := start(t, options{dbPath: path, compliance: fc})
	// Until its feed runs, a service treats the stored states as stale (fail closed).
	eventually(t, "the restarted feed running", func() bool { return h2.svc.FeedStatus().Running })
	if r := evaluate(t, h2, "u-1", "dev-1", "payroll"); r.GetDecision() != allow || r.GetSessionId() != sid {
		t.Fatalf("after restart: %v session %q, want ALLOW in session %q", codesOf(r), r.GetSessionId(), sid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	watch := must(h2.acc.WatchSessionEvents(ctx, &accessv1.WatchSessionEventsRequest{StartRevision: 1}))
	fc.set("dev-1", noncompliant, commonv1.RiskLevel_RISK_LEVEL_HIGH, []string{"a-1"}, nil)
	for {
		m, err := watch.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if rv := m.GetEvent().GetSessionRevoked(); rv != nil {
			if rv.GetSession().GetSessionId() != sid {
				t.Errorf("revoked %q, want %q", rv.GetSession().GetSessionId(), sid)
			}
			break
		}
	}
	fc.mu.Lock()
	starts := slices.Clone(fc.starts)
	fc.mu.Unlock()
	if len(starts) < 2 || starts[len(starts)-1] != 1 {
		t.Errorf("watch start revisions %v: the restarted service should resume from 1", starts)
	}
}

// TestIdentityRevocation: the revocation of a device's identity revokes its sessions
// (session_revoked, reason DEVICE_IDENTITY_REVOKED) and blocks it whatever the
// policies say; other devices are not affected.
func TestIdentityRevocation(t *testing.T) {
	h := start(t, options{})
	seed(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h.compliance.set("dev-1", compliant, commonv1.RiskLevel_RISK_LEVEL_NONE, nil, nil)
	h.compliance.set("dev-2", compliant, commonv1.RiskLevel_RISK_LEVEL_NONE, nil, nil)
	sid := waitDecision(t, h, allow, "u-1", "dev-1", "payroll").GetSessionId()
	waitDecision(t, h, allow, "u-1", "dev-2", "payroll")
	watch := must(h.acc.WatchSessionEvents(ctx, &accessv1.WatchSessionEventsRequest{}))

	rev := h.compliance.revokeIdentity("dev-1")
	for {
		m, err := watch.Recv()
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		if rv := m.GetEvent().GetSessionRevoked(); rv != nil {
			if rv.GetSession().GetSessionId() != sid || rv.GetReasonCode() != "DEVICE_IDENTITY_REVOKED" || rv.GetComplianceRevision() != rev {
				t.Errorf("revoked = %v, want session %s for DEVICE_IDENTITY_REVOKED at revision %d", rv, sid, rev)
			}
			break
		}
	}
	r := evaluate(t, h, "u-1", "dev-1", "payroll")
	if r.GetDecision() != block || len(r.GetReasons()) == 0 || r.GetReasons()[0].GetCode() != "DEVICE_IDENTITY_REVOKED" {
		t.Errorf("decision for the revoked device = %v", r)
	}
	if r := evaluate(t, h, "u-1", "dev-2", "payroll"); r.GetDecision() != allow {
		t.Errorf("another device = %v, want ALLOW", r.GetDecision())
	}
	// Enrolled again (an active identity event reaches the process's set): allowed.
	h.revoked.Reissued("dev-1")
	waitDecision(t, h, allow, "u-1", "dev-1", "payroll")
}
