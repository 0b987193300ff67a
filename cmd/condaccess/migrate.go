package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/condaccess/condaccess/services/access/accessstore"
	"github.com/condaccess/condaccess/services/risk/riskstore"
)

func init() {
	register("migrate", "copy an embedded install's stores (risk, compliance, access, remediation) into PostgreSQL (stop the services first)", runMigrate)
}

// runMigrate copies <from-data-dir>/risk/risk.db into the risk schema of --to, and
// <from-data-dir>/compliance/compliance.db (with the device CA) into its compliance schema.
func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.String("from-data-dir", "", "the --data-dir of the embedded install (its risk store is <dir>/risk/risk.db)")
	to := fs.String("to", "", "PostgreSQL URL (postgres://...) whose risk schema must be empty")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *from == "" || *to == "" || fs.NArg() > 0 {
		return fmt.Errorf("%w: migrate needs --from-data-dir and --to, and no arguments", errUsage)
	}
	path := filepath.Join(*from, "risk", "risk.db")
	// Never create an empty store where the install's should be.
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("%w: no risk store at %s: %v", errUsage, path, err)
	}
	src, err := riskstore.Open(ctx, riskstore.Options{Path: path, CompactInterval: -1})
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := riskstore.OpenPG(ctx, riskstore.PGOptions{URL: *to, CompactInterval: -1})
	if err != nil {
		return err
	}
	defer dst.Close()
	// Refuse a non-empty compliance target before copying anything.
	comp, err := openComplianceMigration(ctx, *from, *to)
	if err != nil {
		return err
	}
	if comp != nil {
		defer comp.close()
	}
	c, err := riskstore.CopyToPG(ctx, src, dst)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "risk: copied %d alerts, %d level versions, %d events (revision %d, history from %d), %d audit events; verified\n",
		c.Alerts, c.DeviceRiskVersions, c.Events, c.Revision, c.CompactedBefore+1, c.AuditEvents)
	if comp != nil {
		if err := comp.copy(ctx, stdout); err != nil {
			return err
		}
	}
	if err := migrateAccess(ctx, *from, *to, stdout); err != nil {
		return err
	}
	if err := migrateRemediation(ctx, *from, *to, stdout); err != nil {
		return err
	}
	return nil
}

// migrateAccess copies <from>/access/access.db, when there is one, into the access
// schema of url.
func migrateAccess(ctx context.Context, from, url string, stdout io.Writer) error {
	path := filepath.Join(from, "access", "access.db")
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	src, err := accessstore.Open(ctx, accessstore.Options{Path: path})
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := accessstore.OpenPG(ctx, accessstore.PGOptions{URL: url})
	if err != nil {
		return err
	}
	defer dst.Close()
	c, err := accessstore.CopyToPG(ctx, src, dst)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "access: copied %d users, %d groups, %d applications, %d policies, %d device states, %d sessions, %d sign-in batches, %d session events (revision %d, history from %d), %d audit events; verified\n",
		c.Rows["users"], c.Rows["dir_groups"], c.Rows["applications"], c.Rows["policies"], c.Rows["device_compliance"], c.Rows["sessions"],
		c.Rows["signin_batches"], c.Rows["session_events"], c.Revision, c.CompactedBefore+1, c.Rows["audit_events"])
	return nil
}
