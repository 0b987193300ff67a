package accesscore_test

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/services/access"
	"github.com/condaccess/condaccess/services/access/accesscore"
	"github.com/condaccess/condaccess/services/access/accessstore"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// replicas returns two access services on one PostgreSQL schema, neither
// following the other (Follow is not running): what they check before a write
// comes from catching up with the change log.
func replicas(t *testing.T) (a, b *accesscore.Service) {
	t.Helper()
	url := pgtest.URL(t)
	ctx := context.Background()
	svc := func() *accesscore.Service {
		st, err := accessstore.OpenPG(ctx, accessstore.PGOptions{URL: url})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		s, err := accesscore.New(ctx, accesscore.Config{Store: st})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	return svc(), svc()
}

// TestReplicaWritesCheckTheOtherReplicasChanges: a replica validates an admin
// write against the directory and policies every replica wrote, not only its
// own: the attacks (locking out a break-glass account marked on the other
// replica, a group whose member the other replica deleted, a duplicate policy)
// are refused, the legitimate writes pass.
func TestReplicaWritesCheckTheOtherReplicasChanges(t *testing.T) {
	ctx := context.Background()
	a, b := replicas(t)
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	_, err := a.CreateUser(ctx, &access.User{ID: "breakglass", DisplayName: "Break glass", EmergencyAccess: true})
	must("create the break-glass account on A", err)
	_, err = a.CreateUser(ctx, &access.User{ID: "u-1", DisplayName: "Ada"})
	must("create u-1 on A", err)
	blockAll := func(id string, exclude ...string) *access.Policy {
		return &access.Policy{ID: id, DisplayName: id, State: access.PolicyEnabled,
			Users: access.UserAssignment{All: true, ExcludeUsers: exclude}, Applications: access.ApplicationAssignment{All: true},
			Grant: access.GrantControls{Block: true}}
	}
	tests := []struct {
		name  string
		write func() error
		want  error
	}{
		{"B locks out the account A marked break-glass", func() error { _, err := b.CreatePolicy(ctx, blockAll("block-all")); return err }, access.ErrLockout},
		{"B excludes it: allowed", func() error { _, err := b.CreatePolicy(ctx, blockAll("block-all", "breakglass")); return err }, nil},
		{"A creates the policy B created", func() error { _, err := a.CreatePolicy(ctx, blockAll("block-all", "breakglass")); return err }, access.ErrAlreadyExists},
		{"A deletes u-1", func() error { return a.DeleteUser(ctx, "u-1", "") }, nil},
		{"B makes a group of the deleted u-1", func() error {
			_, err := b.CreateGroup(ctx, &access.Group{ID: "g-1", DisplayName: "G", MemberUserIDs: []string{"u-1"}})
			return err
		}, access.ErrNotFound},
		{"B makes a group of the break-glass account: allowed", func() error {
			_, err := b.CreateGroup(ctx, &access.Group{ID: "g-1", DisplayName: "G", MemberUserIDs: []string{"breakglass"}})
			return err
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.write(); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := a.GetUser(ctx, "u-1"); !errors.Is(err, access.ErrNotFound) {
		t.Fatalf("u-1 on A after its delete: %v, want not found", err)
	}
	if p, _, err := b.ListPolicies(ctx, 0, "", 10); err != nil || len(p) != 1 {
		t.Fatalf("policies = %d (%v), want the one allowed", len(p), err)
	}
}
