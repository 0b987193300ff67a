package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/condaccess/condaccess/services/remediation/remediationgrpc"
	"github.com/condaccess/condaccess/services/remediation/remediationstore"
)

// migrateRemediation copies <from>/remediation/remediation.db, when the install has
// one, into the remediation schema of url (which must be empty).
func migrateRemediation(ctx context.Context, from, url string, stdout io.Writer) error {
	path := filepath.Join(from, "remediation", "remediation.db")
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(stdout, "remediation: no embedded store at %s, nothing to migrate\n", path)
		return nil
	} else if err != nil {
		return err
	}
	src, err := remediationstore.Open(ctx, remediationstore.Options{Path: path, Encode: remediationgrpc.EncodeEvent})
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := remediationstore.OpenPG(ctx, remediationstore.PGOptions{URL: url, Encode: remediationgrpc.EncodeEvent, CompactInterval: -1})
	if err != nil {
		return err
	}
	defer dst.Close()
	c, err := remediationstore.CopyToPG(ctx, src, dst)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "remediation: copied %d investigations, %d actions, %d agents, %d events (revision %d, history from %d), risk cursor, %d audit events; verified\n",
		c.Rows["investigations"], c.Rows["actions"], c.Rows["agents"], c.Rows["events"], c.Revision, c.CompactedBefore+1, c.Rows["audit_events"])
	return nil
}
