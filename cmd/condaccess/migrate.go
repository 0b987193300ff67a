package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/condaccess/condaccess/services/risk/riskstore"
)

func init() {
	register("migrate", "copy an embedded install's risk, compliance and remediation stores into PostgreSQL (preview: access not yet; stop the services first)", runMigrate)
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
	if err := migrateRemediation(ctx, *from, *to, stdout); err != nil {
		return err
	}
	var skipped []string
	for _, svc := range []string{"access"} {
		if _, err := os.Stat(filepath.Join(*from, svc)); err == nil {
			skipped = append(skipped, svc)
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if len(skipped) > 0 {
		fmt.Fprintf(stdout, "not migrated (not yet supported on PostgreSQL): %v\n", skipped)
	}
	return nil
}
