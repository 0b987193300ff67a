package accessgrpc_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
)

// TestWatchSignIns: the stream sends each sign-in recorded after its first heartbeat
// that matches its filters, once, and none from before it or outside its filters.
func TestWatchSignIns(t *testing.T) {
	h := start(t, options{})
	seed(t, h)
	old := evaluate(t, h, "u-1", "dev-1", "payroll") // before the stream: not sent
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	open := func(req *accessv1.WatchSignInsRequest) accessv1.AccessService_WatchSignInsClient {
		t.Helper()
		s, err := h.acc.WatchSignIns(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if m, err := s.Recv(); err != nil || m.GetHeartbeat() == nil {
			t.Fatalf("first message = %v %v, want a heartbeat", m, err)
		}
		return s
	}
	payroll := open(&accessv1.WatchSignInsRequest{ApplicationId: "payroll"})
	wikiBlocked := open(&accessv1.WatchSignInsRequest{ApplicationId: "wiki", Decision: accessv1.Decision_DECISION_BLOCK})
	// next returns the next sign-in on s, skipping heartbeats.
	next := func(s accessv1.AccessService_WatchSignInsClient) *accessv1.SignInNotice {
		t.Helper()
		for {
			m, err := s.Recv()
			if err != nil {
				t.Fatalf("waiting for a sign-in: %v", err)
			}
			if si := m.GetSignIn(); si != nil {
				return si
			}
		}
	}
	r1 := evaluate(t, h, "u-1", "dev-1", "payroll")
	r2 := evaluate(t, h, "u-1", "dev-unknown", "wiki") // allowed: no policy on wiki
	r3 := evaluate(t, h, "u-1", "dev-1", "payroll")
	for _, want := range []string{r1.GetSignInId(), r3.GetSignInId()} {
		if got := next(payroll); got.GetSignInId() != want {
			t.Fatalf("payroll stream sent %s (%s), want %s (old %s, wiki %s)", got.GetSignInId(), got.GetApplicationId(), want, old.GetSignInId(), r2.GetSignInId())
		}
	}
	// The wiki-and-BLOCK stream gets nothing from the allowed wiki sign-in: the first
	// thing it sends is a block made later.
	h.pol.CreatePolicy(context.Background(), &accessv1.CreatePolicyRequest{Policy: &accessv1.ConditionalAccessPolicy{
		PolicyId: "wiki-block", DisplayName: "Block wiki", State: accessv1.PolicyState_POLICY_STATE_ENABLED,
		Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{Include: []string{"wiki"}},
		GrantControls: &accessv1.GrantControls{Block: true}}})
	r4 := waitDecision(t, h, accessv1.Decision_DECISION_BLOCK, "u-1", "dev-1", "wiki")
	if got := next(wikiBlocked); got.GetSignInId() == r2.GetSignInId() || got.GetDecision() != accessv1.Decision_DECISION_BLOCK || got.GetApplicationId() != "wiki" {
		t.Fatalf("wiki/BLOCK stream sent %v, want a blocked wiki sign-in such as %s", got, r4.GetSignInId())
	}

	bad, err := h.acc.WatchSignIns(ctx, &accessv1.WatchSignInsRequest{Decision: accessv1.Decision(99)})
	if err == nil {
		_, err = bad.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("undefined decision filter = %v, want INVALID_ARGUMENT", err)
	}
}
