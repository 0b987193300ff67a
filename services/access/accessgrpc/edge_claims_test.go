package accessgrpc_test

import (
	"context"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/services/access/accesscore"
	"github.com/condaccess/condaccess/services/access/accessgrpc"
	"github.com/condaccess/condaccess/services/access/edgeid"
	"github.com/condaccess/condaccess/services/access/edgeid/edgeidtest"
)

// newClaimsWorld: an edge verifying tokens of one issuer (groups from the "groups"
// claim when groupsClaim), a directory with users bound to external ids (alice,
// ceo) and without (bob, dave), and two policies that target groups.
func newClaimsWorld(t *testing.T, groupsClaim string) *edgeWorld {
	t.Helper()
	w := &edgeWorld{issuer: edgeidtest.NewIssuer(t)}
	tv, err := edgeid.NewTokenVerifier(edgeid.TokenConfig{Issuers: []string{w.issuer.URL}, Audience: "condaccess", GroupsClaim: groupsClaim})
	if err != nil {
		t.Fatal(err)
	}
	refs, err := accesscore.NewBlockedRefs(newKey(t), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	w.h = start(t, options{headers: accessgrpc.DefaultHeaders, httpWrap: callerWrap, emergency: []string{"ops"}, edge: &accessgrpc.Edge{Tokens: tv, TrustedHops: 1,
		BlockedRefs: refs, ConsoleURL: func() string { return "http://console.test" }}})
	ctx := context.Background()
	h := w.h
	for _, u := range []*accessv1.User{
		{UserId: "alice", DisplayName: "Alice", ExternalId: "00u-alice"},
		{UserId: "ceo", DisplayName: "CEO", ExternalId: "00u-ceo"},
		{UserId: "bob", DisplayName: "Bob"},
		{UserId: "dave", DisplayName: "Dave"},
		{UserId: "root", DisplayName: "Break glass", EmergencyAccess: true},
		{UserId: "ops", DisplayName: "Ops (--access-emergency-accounts)"},
	} {
		must(h.dir.CreateUser(ctx, &accessv1.CreateUserRequest{User: u}))
	}
	must(h.dir.CreateGroup(ctx, &accessv1.CreateGroupRequest{Group: &accessv1.Group{GroupId: "contractors", DisplayName: "Contractors"}}))
	must(h.dir.CreateGroup(ctx, &accessv1.CreateGroupRequest{Group: &accessv1.Group{GroupId: "break-glass", DisplayName: "Break glass", MemberUserIds: []string{"dave"}}}))
	for _, a := range []string{"open", "hr", "crm"} {
		must(h.dir.CreateApplication(ctx, &accessv1.CreateApplicationRequest{Application: &accessv1.Application{ApplicationId: a, DisplayName: a}}))
	}
	for _, p := range []*accessv1.ConditionalAccessPolicy{
		{PolicyId: "hr-no-contractors", DisplayName: "HR: block contractors", State: accessv1.PolicyState_POLICY_STATE_ENABLED,
			Users: &accessv1.UserAssignment{IncludeGroups: []string{"contractors"}}, Applications: &accessv1.ApplicationAssignment{Include: []string{"hr"}},
			GrantControls: &accessv1.GrantControls{Block: true}},
		{PolicyId: "crm-break-glass-only", DisplayName: "CRM: block all but break-glass", State: accessv1.PolicyState_POLICY_STATE_ENABLED,
			Users: &accessv1.UserAssignment{All: true, ExcludeGroups: []string{"break-glass"}, ExcludeUsers: []string{"root", "ops"}}, Applications: &accessv1.ApplicationAssignment{Include: []string{"crm"}},
			GrantControls: &accessv1.GrantControls{Block: true}},
	} {
		must(h.pol.CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: p}))
	}
	return w
}

// TestAuthzTokenUserAndGroups: the token's user claim resolves to a directory user
// (external_id first; a user id only for a user without one), its groups claim counts
// for include_groups only and only when --oidc-groups-claim names it; the sign-in
// records the resolved user and the token's subject.
func TestAuthzTokenUserAndGroups(t *testing.T) {
	worlds := map[string]*edgeWorld{"groups": newClaimsWorld(t, "groups"), "": newClaimsWorld(t, "")}
	tok := func(w *edgeWorld, sub string, groups ...string) string {
		c := map[string]any{"sub": sub, "aud": "condaccess"}
		if groups != nil {
			c["groups"] = groups
		}
		return w.issuer.Token(c)
	}
	for _, tt := range []struct {
		name        string
		groupsClaim string
		app, sub    string
		groups      []string
		wantAllow   bool
		wantReason  string
		wantUser    string   // recorded user id
		wantGroups  []string // recorded token groups
	}{
		{name: "external id resolves to its user", groupsClaim: "groups", app: "open", sub: "00u-alice", wantAllow: true, wantReason: "ALLOWED", wantUser: "alice"},
		{name: "user id of a user without an external id", groupsClaim: "groups", app: "open", sub: "bob", wantAllow: true, wantReason: "ALLOWED", wantUser: "bob"},
		{name: "attack: subject equal to a bound user's id", groupsClaim: "groups", app: "open", sub: "ceo", wantReason: "UNKNOWN_USER"},
		{name: "attack: subject equal to another bound user's id", groupsClaim: "groups", app: "open", sub: "alice", wantReason: "UNKNOWN_USER"},
		{name: "subject matching nobody", groupsClaim: "groups", app: "open", sub: "00u-nobody", wantReason: "UNKNOWN_USER"},
		{name: "attack: external id differing in case", groupsClaim: "groups", app: "open", sub: "00U-ALICE", wantReason: "UNKNOWN_USER"},
		{name: "no token group: include policy does not apply", groupsClaim: "groups", app: "hr", sub: "bob", wantAllow: true, wantReason: "ALLOWED", wantUser: "bob"},
		{name: "token group makes an include policy apply", groupsClaim: "groups", app: "hr", sub: "bob", groups: []string{"contractors", "not-a-directory-group"},
			wantReason: "BLOCKED_BY_POLICY", wantUser: "bob", wantGroups: []string{"contractors"}},
		{name: "token group through an external id", groupsClaim: "groups", app: "hr", sub: "00u-alice", groups: []string{"contractors"},
			wantReason: "BLOCKED_BY_POLICY", wantUser: "alice", wantGroups: []string{"contractors"}},
		// The lockout guard's proof (no enabled policy can block an emergency
		// account) holds on directory groups: token groups do not count for them.
		{name: "attack: token group on an emergency-access user", groupsClaim: "groups", app: "hr", sub: "root", groups: []string{"contractors"},
			wantAllow: true, wantReason: "ALLOWED", wantUser: "root"},
		{name: "attack: token group on an --access-emergency-accounts user", groupsClaim: "groups", app: "hr", sub: "ops", groups: []string{"contractors"},
			wantAllow: true, wantReason: "ALLOWED", wantUser: "ops"},
		{name: "directory exclusion exempts", groupsClaim: "groups", app: "crm", sub: "dave", wantAllow: true, wantReason: "ALLOWED", wantUser: "dave"},
		{name: "attack: token claims the excluded group", groupsClaim: "groups", app: "crm", sub: "bob", groups: []string{"break-glass"},
			wantReason: "BLOCKED_BY_POLICY", wantUser: "bob", wantGroups: []string{"break-glass"}},
		{name: "without --access-token-groups token groups are ignored", groupsClaim: "", app: "hr", sub: "bob", groups: []string{"contractors"},
			wantAllow: true, wantReason: "ALLOWED", wantUser: "bob"},
		{name: "attack without --access-token-groups: excluded group in the token", groupsClaim: "", app: "crm", sub: "bob", groups: []string{"break-glass"},
			wantReason: "BLOCKED_BY_POLICY", wantUser: "bob"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := worlds[tt.groupsClaim]
			token := tok(w, tt.sub, tt.groups...)
			resp := w.authz(t, "ep", edgeCase{app: tt.app, token: token, xff: []string{"203.0.113.9"}})
			resp.Body.Close()
			// Envoy's Check decides the same.
			cr := must(w.h.authz.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
				Source: &authv3.AttributeContext_Peer{Address: sockAddr("127.0.0.1")},
				Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/", Headers: map[string]string{
					"authorization": "Bearer " + token, "x-application-id": tt.app, "x-envoy-external-address": "203.0.113.9"}}},
			}}))
			hv := cr.GetDeniedResponse().GetHeaders()
			if codes.Code(cr.GetStatus().GetCode()) == codes.OK {
				hv = cr.GetOkResponse().GetHeaders()
			}
			if (codes.Code(cr.GetStatus().GetCode()) == codes.OK) != tt.wantAllow || headerValue(hv, accessgrpc.ReasonHeader) != tt.wantReason {
				t.Errorf("Check = %v %s, want allow %v %s", cr.GetStatus(), headerValue(hv, accessgrpc.ReasonHeader), tt.wantAllow, tt.wantReason)
			}
			wantCode := http.StatusForbidden
			if tt.wantAllow {
				wantCode = http.StatusOK
			}
			if resp.StatusCode != wantCode || resp.Header.Get(accessgrpc.ReasonHeader) != tt.wantReason {
				t.Fatalf("GET /authz = %d %s, want %d %s", resp.StatusCode, resp.Header.Get(accessgrpc.ReasonHeader), wantCode, tt.wantReason)
			}
			ctx := context.Background()
			if err := w.h.svc.Recorder().Flush(ctx); err != nil {
				t.Fatal(err)
			}
			id := resp.Header.Get(accessgrpc.SignInHeader)
			var si *accessv1.SignIn
			for _, s := range must(w.h.acc.ListSignIns(ctx, &accessv1.ListSignInsRequest{PageSize: 1000})).GetSignIns() {
				if s.GetSignInId() == id {
					si = s
				}
			}
			if si == nil {
				t.Fatalf("sign-in %q not recorded", id)
			}
			if si.GetUserId() != tt.wantUser || si.GetTokenSubject() != tt.sub || si.GetTokenIssuer() != w.issuer.URL ||
				!slices.Equal(si.GetTokenGroups(), tt.wantGroups) || si.GetUserProof() != accessv1.Proof_PROOF_VERIFIED_TOKEN {
				t.Errorf("sign-in user %q subject %q issuer %q groups %q proof %v; want user %q subject %q groups %q",
					si.GetUserId(), si.GetTokenSubject(), si.GetTokenIssuer(), si.GetTokenGroups(), si.GetUserProof(), tt.wantUser, tt.sub, tt.wantGroups)
			}
		})
	}
}

// TestBlockedPageKeepsTokenGroups: the end user's page re-evaluates a block with the
// token groups the decision counted, so a block that came from them is not shown as
// restored.
func TestBlockedPageKeepsTokenGroups(t *testing.T) {
	w := newClaimsWorld(t, "groups")
	token := w.issuer.Token(map[string]any{"sub": "bob", "aud": "condaccess", "groups": []string{"contractors"}})
	resp := w.authz(t, "ep", edgeCase{app: "hr", token: token, xff: []string{"203.0.113.9"}})
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := helpLink.FindStringSubmatch(string(body))
	if resp.StatusCode != http.StatusForbidden || m == nil {
		t.Fatalf("GET /authz = %d, body:\n%s", resp.StatusCode, body)
	}
	st := must(w.h.acc.GetBlockedStatus(context.Background(), &accessv1.GetBlockedStatusRequest{Ref: m[1]})).GetStatus()
	if st.GetRestored() {
		t.Fatalf("a block from a token group shows as restored: %v", st)
	}
}

// TestExternalIDAdmin: external ids through CreateUser, UpdateUser and
// ImportDirectory; a clash is refused and changes nothing.
func TestExternalIDAdmin(t *testing.T) {
	h := start(t, options{})
	ctx := context.Background()
	must(h.dir.CreateUser(ctx, &accessv1.CreateUserRequest{User: &accessv1.User{UserId: "alice", DisplayName: "A", ExternalId: "00u-alice"}}))
	bob := must(h.dir.CreateUser(ctx, &accessv1.CreateUserRequest{User: &accessv1.User{UserId: "bob", DisplayName: "B"}})).GetUser()

	_, err := h.dir.CreateUser(ctx, &accessv1.CreateUserRequest{User: &accessv1.User{UserId: "eve", ExternalId: "00u-alice"}})
	wantCode(t, err, codes.AlreadyExists)
	_, err = h.dir.UpdateUser(ctx, &accessv1.UpdateUserRequest{User: &accessv1.User{UserId: "bob", ExternalId: "00u-alice", Etag: bob.GetEtag()},
		UpdateMask: fieldMask("external_id")})
	wantCode(t, err, codes.AlreadyExists)
	_, err = h.dir.CreateUser(ctx, &accessv1.CreateUserRequest{User: &accessv1.User{UserId: "eve", ExternalId: "has space"}})
	wantCode(t, err, codes.InvalidArgument)
	wantViolation(t, err, "user.external_id")

	// Import: a duplicate inside the import names the field; a clash with a user
	// outside it is ALREADY_EXISTS.
	_, err = importDir(ctx, h, &accessv1.ImportDirectoryRequest{Users: []*accessv1.User{
		{UserId: "u1", ExternalId: "x-1"}, {UserId: "u2", ExternalId: "x-1"}}})
	wantCode(t, err, codes.InvalidArgument)
	wantViolation(t, err, "chunk[0].users[1].external_id")
	_, err = importDir(ctx, h, &accessv1.ImportDirectoryRequest{Users: []*accessv1.User{{UserId: "u1", ExternalId: "00u-alice"}}})
	wantCode(t, err, codes.AlreadyExists)
	if _, err := h.dir.GetUser(ctx, &accessv1.GetUserRequest{UserId: "u1"}); status.Code(err) != codes.NotFound {
		t.Fatalf("refused import stored u1: %v", err)
	}
	if got, _ := h.svc.Snapshot().ResolveTokenUser("00u-alice"); got != "alice" {
		t.Fatalf("00u-alice resolves to %q after refused changes", got)
	}

	// Moving an external id: bob takes alice's after she gives it up.
	al := must(h.dir.GetUser(ctx, &accessv1.GetUserRequest{UserId: "alice"})).GetUser()
	must(h.dir.UpdateUser(ctx, &accessv1.UpdateUserRequest{User: &accessv1.User{UserId: "alice", Etag: al.GetEtag()}, UpdateMask: fieldMask("external_id")}))
	got := must(h.dir.UpdateUser(ctx, &accessv1.UpdateUserRequest{User: &accessv1.User{UserId: "bob", ExternalId: "00u-alice", Etag: bob.GetEtag()},
		UpdateMask: fieldMask("external_id")})).GetUser()
	if got.GetExternalId() != "00u-alice" {
		t.Fatalf("bob's external id = %q", got.GetExternalId())
	}
	for claim, want := range map[string]string{"00u-alice": "bob", "alice": "alice", "bob": ""} {
		if u, _ := h.svc.Snapshot().ResolveTokenUser(claim); u != want {
			t.Errorf("ResolveTokenUser(%q) = %q, want %q", claim, u, want)
		}
	}
	// ListUsers by external id: the user a sign-in's token_subject names.
	for ext, want := range map[string][]string{"00u-alice": {"bob"}, "00u-nobody": nil, "alice": nil} {
		var got []string
		for _, u := range must(h.dir.ListUsers(ctx, &accessv1.ListUsersRequest{ExternalId: ext})).GetUsers() {
			got = append(got, u.GetUserId())
		}
		if !slices.Equal(got, want) {
			t.Errorf("ListUsers(external_id %q) = %v, want %v", ext, got, want)
		}
	}
	// An import swapping external ids between the users it writes.
	must(importDir(ctx, h, &accessv1.ImportDirectoryRequest{Users: []*accessv1.User{
		{UserId: "alice", DisplayName: "A", ExternalId: "00u-alice"}, {UserId: "bob", DisplayName: "B", ExternalId: "00u-bob"}}}))
	must(importDir(ctx, h, &accessv1.ImportDirectoryRequest{Users: []*accessv1.User{
		{UserId: "alice", DisplayName: "A", ExternalId: "00u-bob"}, {UserId: "bob", DisplayName: "B", ExternalId: "00u-alice"}}}))
	for claim, want := range map[string]string{"00u-alice": "bob", "00u-bob": "alice"} {
		if u, _ := h.svc.Snapshot().ResolveTokenUser(claim); u != want {
			t.Errorf("after the swap ResolveTokenUser(%q) = %q, want %q", claim, u, want)
		}
	}
}

func wantCode(t *testing.T, err error, want codes.Code) {
	t.Helper()
	if status.Code(err) != want {
		t.Fatalf("code = %v (%v), want %v", status.Code(err), err, want)
	}
}

func wantViolation(t *testing.T, err error, field string) {
	t.Helper()
	for _, v := range apierr.Violations(err) {
		if v.GetField() == field {
			return
		}
	}
	t.Fatalf("no field violation %q in %v (%v)", field, apierr.Violations(err), err)
}

func fieldMask(paths ...string) *fieldmaskpb.FieldMask { return &fieldmaskpb.FieldMask{Paths: paths} }

// importDir imports reqs in one ImportDirectory stream.
func importDir(ctx context.Context, h *harness, reqs ...*accessv1.ImportDirectoryRequest) (*accessv1.ImportDirectoryResponse, error) {
	stream, err := h.dir.ImportDirectory(ctx)
	if err != nil {
		return nil, err
	}
	for _, r := range reqs {
		if err := stream.Send(r); err != nil {
			break // the server's error comes with CloseAndRecv
		}
	}
	return stream.CloseAndRecv()
}
