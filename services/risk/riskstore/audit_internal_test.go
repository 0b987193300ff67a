package riskstore

import (
	"testing"

	"github.com/condaccess/condaccess/internal/audit"
)

// The audit table's migration is a file like the store's others (so that a later file
// cannot land before it); it must stay audit.Migrations' schema.
func TestAuditMigrationIsAuditSchema(t *testing.T) {
	b, err := migrationFiles.ReadFile("migrations/003_audit_events.sql")
	if err != nil {
		t.Fatal(err)
	}
	if want := audit.Migrations("")[0]; string(b) != want {
		t.Errorf("migrations/003_audit_events.sql differs from audit.Migrations:\n%s\nwant:\n%s", b, want)
	}
}
