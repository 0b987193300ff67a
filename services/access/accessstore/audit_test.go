package accessstore_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/sqlitedb"
	"github.com/condaccess/condaccess/services/access"
	"github.com/condaccess/condaccess/services/access/accessstore"
)

// failAudit makes every audit append of s fail (an injected failure).
func failAudit(t *testing.T, s *accessstore.Store) {
	t.Helper()
	ctx := context.Background()
	if err := s.DB().Write(ctx, func(tx *sqlitedb.Tx) error {
		_, err := tx.ExecContext(ctx, `CREATE TRIGGER fail_audit BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'injected audit failure'); END`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// A change whose audit event cannot be written is not stored: every audited write
// rolls back with its audit append.
func TestAuditFailureRollsBackTheChange(t *testing.T) {
	ctx := audit.NewContext(context.Background(), audit.Actor{Subject: "bob"})
	s, err := accessstore.Open(ctx, accessstore.Options{Path: filepath.Join(t.TempDir(), "access.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.CreateUser(ctx, &access.User{ID: "u-1", DisplayName: "Ada", Etag: "e1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreatePolicy(ctx, &access.Policy{ID: "p-1", DisplayName: "before", Etag: "e1"}); err != nil {
		t.Fatal(err)
	}
	failAudit(t, s)

	tests := []struct {
		name  string
		write func() error
		check func() error
	}{
		{"create policy", func() error { return s.CreatePolicy(ctx, &access.Policy{ID: "p-2", DisplayName: "new", Etag: "e1"}) },
			func() error {
				if _, err := s.GetPolicy(ctx, "p-2"); !errors.Is(err, access.ErrNotFound) {
					return errors.New("p-2 exists")
				}
				return nil
			}},
		{"update policy", func() error {
			return s.UpdatePolicy(ctx, &access.Policy{ID: "p-1", DisplayName: "after", Etag: "e2"}, "e1")
		},
			func() error {
				if p, err := s.GetPolicy(ctx, "p-1"); err != nil || p.DisplayName != "before" {
					return errors.New("p-1 changed")
				}
				return nil
			}},
		{"delete policy", func() error { return s.DeletePolicy(ctx, "p-1", "") },
			func() error { _, err := s.GetPolicy(ctx, "p-1"); return err }},
		{"delete user", func() error { return s.DeleteUser(ctx, "u-1", "", nil) },
			func() error { _, err := s.GetUser(ctx, "u-1"); return err }},
		{"import", func() error {
			return s.ImportDirectory(ctx, &access.Directory{Users: []*access.User{{ID: "u-9", DisplayName: "Imported", Etag: "e1"}}})
		}, func() error {
			if _, err := s.GetUser(ctx, "u-9"); !errors.Is(err, access.ErrNotFound) {
				return errors.New("u-9 exists")
			}
			return nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.write(); err == nil {
				t.Fatal("write succeeded with a failing audit log")
			}
			if err := tt.check(); err != nil {
				t.Errorf("the change was stored: %v", err)
			}
		})
	}
	evs, _, err := audit.List(ctx, []*audit.Log{s.Audit()}, audit.Filter{}, nil, 100)
	if err != nil || len(evs) != 2 {
		t.Fatalf("audit events = %d (%v), want the 2 from before the failure", len(evs), err)
	}
	for _, e := range evs {
		if e.Actor.Subject != "bob" || e.Action != audit.ActionCreate {
			t.Errorf("event %+v, want bob's creations", e)
		}
	}
}

// An external id change is audited with the user before and after; a refused clash
// appends nothing.
func TestExternalIDChangeIsAudited(t *testing.T) {
	ctx := audit.NewContext(context.Background(), audit.Actor{Subject: "bob"})
	s, err := accessstore.Open(ctx, accessstore.Options{Path: filepath.Join(t.TempDir(), "access.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, u := range []*access.User{{ID: "u-1", Etag: "e1"}, {ID: "u-2", ExternalID: "idp-2", Etag: "e1"}} {
		if err := s.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.UpdateUser(ctx, &access.User{ID: "u-1", ExternalID: "idp-2", Etag: "e2"}, "e1", nil); !errors.Is(err, access.ErrAlreadyExists) {
		t.Fatalf("clash: %v, want ErrAlreadyExists", err)
	}
	if err := s.UpdateUser(ctx, &access.User{ID: "u-1", ExternalID: "idp-1", Etag: "e2"}, "e1", nil); err != nil {
		t.Fatal(err)
	}
	evs, _, err := audit.List(ctx, []*audit.Log{s.Audit()}, audit.Filter{}, nil, 100)
	if err != nil || len(evs) != 3 {
		t.Fatalf("audit events = %d (%v), want 2 creations and 1 update", len(evs), err)
	}
	var upd *audit.Event
	for i := range evs {
		if evs[i].Action == audit.ActionUpdate {
			upd = &evs[i]
		}
	}
	if upd == nil {
		t.Fatalf("no update event in %+v", evs)
	}
	if upd.ResourceID != "u-1" || upd.Actor.Subject != "bob" ||
		!strings.Contains(string(upd.After), `"idp-1"`) || strings.Contains(string(upd.Before), `"idp-1"`) {
		t.Fatalf("update event %+v (before %s, after %s)", upd, upd.Before, upd.After)
	}
}
