package policyengine_test

import (
	"errors"
	"fmt"
	"testing"

	pe "github.com/condaccess/condaccess/services/access/policyengine"
)

// TestTokenGroups: a token's groups (and the groups enclosing them) make policies that
// include those groups apply; they never exempt the user through exclude_groups.
func TestTokenGroups(t *testing.T) {
	blockContractors := pol("block-contractors", block, users(pe.UserAssignment{IncludeGroups: []string{"g-contractors"}}))
	blockEng := pol("block-all", block, users(pe.UserAssignment{IncludeGroups: []string{"g-all"}}))
	blockExceptAdmins := pol("block-but-admins", block, users(pe.UserAssignment{All: true, ExcludeGroups: []string{"g-admins"}}))
	tests := []struct {
		name     string
		policy   pe.Policy
		user     string
		groups   []string
		all      bool // Request.AllPolicies (the slow path)
		want     pe.Decision
		wantCode string
	}{
		{"no token group: policy does not apply", blockContractors, "alice", nil, false, pe.DecisionAllow, pe.CodeAllowed},
		{"token group included: applies", blockContractors, "alice", []string{"g-contractors"}, false, pe.DecisionBlock, pe.CodeBlockedByPolicy},
		{"token group included, slow path", blockContractors, "alice", []string{"g-contractors"}, true, pe.DecisionBlock, pe.CodeBlockedByPolicy},
		{"enclosing group of a token group included", blockEng, "dave", []string{"g-contractors"}, false, pe.DecisionBlock, pe.CodeBlockedByPolicy},
		{"unknown token group ignored", blockContractors, "alice", []string{"contractors", ""}, false, pe.DecisionAllow, pe.CodeAllowed},
		{"directory exclusion still exempts", blockExceptAdmins, "dave", nil, false, pe.DecisionAllow, pe.CodeAllowed},
		// The attack: a token (an IdP where users create or join groups) claims the
		// excluded group; the policy still applies.
		{"attack: token group in exclude_groups does not exempt", blockExceptAdmins, "alice", []string{"g-admins"}, false, pe.DecisionBlock, pe.CodeBlockedByPolicy},
		{"attack: token group in exclude_groups, slow path", blockExceptAdmins, "alice", []string{"g-admins"}, true, pe.DecisionBlock, pe.CodeBlockedByPolicy},
		{"attack: token group nested in an excluded group", pol("x", block, users(pe.UserAssignment{All: true, ExcludeGroups: []string{"g-all"}})),
			"dave", []string{"g-sales"}, false, pe.DecisionBlock, pe.CodeBlockedByPolicy},
		{"token group also a directory group: exclusion holds", blockExceptAdmins, "dave", []string{"g-admins"}, false, pe.DecisionAllow, pe.CodeAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap, err := pe.Compile(testDir(), []pe.Policy{tt.policy})
			if err != nil {
				t.Fatal(err)
			}
			var res pe.Result
			// Twice with one Result: the scratch bitsets must come back clean.
			for i := range 2 {
				snap.Evaluate(&pe.Request{UserID: tt.user, AppID: "payroll", TokenGroups: tt.groups, AllPolicies: tt.all}, compliant, pe.Feed{}, &res)
				if res.Decision != tt.want || res.MainReason() != tt.wantCode {
					t.Fatalf("run %d: decision %v %s, want %v %s", i, res.Decision, res.MainReason(), tt.want, tt.wantCode)
				}
			}
			// The same Result without token groups: nothing left over.
			snap.Evaluate(&pe.Request{UserID: tt.user, AppID: "payroll"}, compliant, pe.Feed{}, &res)
			var fresh pe.Result
			snap.Evaluate(&pe.Request{UserID: tt.user, AppID: "payroll"}, compliant, pe.Feed{}, &fresh)
			if res.Decision != fresh.Decision || res.MainReason() != fresh.MainReason() {
				t.Fatalf("after token groups: %v %s, fresh %v %s", res.Decision, res.MainReason(), fresh.Decision, fresh.MainReason())
			}
		})
	}
}

// TestResolveTokenUser: an external id wins; a user id matches only a user without one.
func TestResolveTokenUser(t *testing.T) {
	dir := testDir()
	dir.Users[0].ExternalID = "00u-alice" // alice
	dir.Users[1].ExternalID = "erin"      // bob's IdP id happens to equal erin's user id
	snap, err := pe.Compile(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		claim, want string
		ok          bool
	}{
		{"00u-alice", "alice", true},
		{"dave", "dave", true},   // no external id: matched by user id
		{"alice", "", false},     // attack: alice is bound to 00u-alice; her user id is not enough
		{"bob", "", false},       // same for bob
		{"erin", "bob", true},    // the external id wins over erin's user id
		{"00U-ALICE", "", false}, // exact match only
		{"nobody", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, ok := snap.ResolveTokenUser(tt.claim)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ResolveTokenUser(%q) = %q, %v; want %q, %v", tt.claim, got, ok, tt.want, tt.ok)
		}
	}
	dir.Users[2].ExternalID = "00u-alice"
	if _, err := pe.Compile(dir, nil); !errors.Is(err, pe.ErrInvalidDirectory) {
		t.Fatalf("duplicate external id: err = %v, want ErrInvalidDirectory", err)
	}
}

// TestTokenGroupsNoExemptionOnBloomCollision: with more than 64 groups, the user's
// directory groups share Bloom bits with a token group; the exclusion still reads the
// directory groups only.
func TestTokenGroupsNoExemptionOnBloomCollision(t *testing.T) {
	dir := &pe.Directory{Users: []pe.User{{ID: "alice"}}, Applications: []pe.Application{{ID: "payroll"}}}
	for i := range 70 {
		g := pe.Group{ID: fmt.Sprintf("g%d", i)}
		if i == 0 {
			g.MemberUsers = []string{"alice"} // g0 and g64 share Bloom bit 0
		}
		dir.Groups = append(dir.Groups, g)
	}
	p := pol("block-but-g64", block, users(pe.UserAssignment{All: true, ExcludeGroups: []string{"g64"}}))
	snap, err := pe.Compile(dir, []pe.Policy{p})
	if err != nil {
		t.Fatal(err)
	}
	for _, all := range []bool{false, true} {
		var res pe.Result
		snap.Evaluate(&pe.Request{UserID: "alice", AppID: "payroll", TokenGroups: []string{"g64"}, AllPolicies: all}, compliant, pe.Feed{}, &res)
		if res.Decision != pe.DecisionBlock {
			t.Fatalf("AllPolicies=%v: token group g64 exempted alice: %v %s", all, res.Decision, res.MainReason())
		}
	}
}
