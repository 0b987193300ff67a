package accessgrpc_test

import (
	"context"
	"testing"
	"time"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
)

// TestWatchPolicies: the snapshot of policies, synced, then each creation, change and
// deletion with the policy's new etag.
func TestWatchPolicies(t *testing.T) {
	h := start(t, options{})
	seed(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := h.pol.WatchPolicies(ctx, &accessv1.WatchPoliciesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	next := func() *accessv1.WatchPoliciesResponse {
		t.Helper()
		for {
			m, err := stream.Recv()
			if err != nil {
				t.Fatalf("stream: %v", err)
			}
			if m.GetHeartbeat() == nil {
				return m
			}
		}
	}
	if m := next(); m.GetChange().GetPolicyId() != "payroll-compliant" || m.GetChange().GetDeleted() {
		t.Fatalf("snapshot = %v, want payroll-compliant", m)
	}
	if m := next(); !m.GetSynced() {
		t.Fatalf("after the snapshot: %v, want synced", m)
	}
	created := must(h.pol.CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: &accessv1.ConditionalAccessPolicy{
		PolicyId: "wiki-trial", DisplayName: "Wiki trial", State: accessv1.PolicyState_POLICY_STATE_REPORT_ONLY,
		Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{Include: []string{"wiki"}},
		GrantControls: &accessv1.GrantControls{Block: true}}})).GetPolicy()
	if c := next().GetChange(); c.GetPolicyId() != "wiki-trial" || c.GetEtag() != created.GetEtag() || c.GetDeleted() {
		t.Fatalf("after create: %v, want wiki-trial at %s", c, created.GetEtag())
	}
	created.DisplayName = "Wiki trial (renamed)"
	updated := must(h.pol.UpdatePolicy(ctx, &accessv1.UpdatePolicyRequest{Policy: created})).GetPolicy()
	if c := next().GetChange(); c.GetPolicyId() != "wiki-trial" || c.GetEtag() != updated.GetEtag() || c.GetEtag() == created.GetEtag() {
		t.Fatalf("after update: %v, want the new etag %s", c, updated.GetEtag())
	}
	must(h.pol.DeletePolicy(ctx, &accessv1.DeletePolicyRequest{PolicyId: "wiki-trial", Etag: updated.GetEtag()}))
	if c := next().GetChange(); c.GetPolicyId() != "wiki-trial" || !c.GetDeleted() {
		t.Fatalf("after delete: %v, want wiki-trial deleted", c)
	}
}
