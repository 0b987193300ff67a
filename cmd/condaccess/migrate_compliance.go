package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/condaccess/condaccess/internal/devca"
	"github.com/condaccess/condaccess/services/compliance/compliancestore"
)

// complianceMigration copies an embedded compliance store (and the data dir's device
// CA) into PostgreSQL.
type complianceMigration struct {
	src *compliancestore.Store
	dst *compliancestore.PGStore
	ca  *compliancestore.DeviceCAPEM
}

// openComplianceMigration opens <from>/compliance/compliance.db and the compliance
// schema of url, and fails with compliancestore.ErrTargetNotEmpty when that schema
// holds data; nil when the install has no compliance store.
func openComplianceMigration(ctx context.Context, from, url string) (*complianceMigration, error) {
	path := filepath.Join(from, "compliance", "compliance.db")
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	m := &complianceMigration{}
	// The device CA serve generated into the data dir (when not given by flags): the
	// replicas on PostgreSQL must keep signing with it, or enrolled devices break.
	certFile, keyFile := filepath.Join(from, "device-ca", "device-ca.pem"), filepath.Join(from, "device-ca", "device-ca-key.pem")
	if _, err := devca.Load(certFile, keyFile); err == nil {
		c, err := os.ReadFile(certFile)
		if err != nil {
			return nil, err
		}
		k, err := os.ReadFile(keyFile)
		if err != nil {
			return nil, err
		}
		m.ca = &compliancestore.DeviceCAPEM{Cert: c, Key: k}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("device CA in %s: %w", filepath.Dir(certFile), err)
	}
	var err error
	if m.src, err = compliancestore.Open(ctx, compliancestore.Options{Path: path}); err != nil {
		return nil, err
	}
	if m.dst, err = compliancestore.OpenPG(ctx, compliancestore.PGOptions{URL: url, CompactInterval: -1}); err != nil {
		m.src.Close()
		return nil, err
	}
	if err := compliancestore.CheckEmpty(ctx, m.dst); err != nil {
		m.close()
		return nil, err
	}
	return m, nil
}

func (m *complianceMigration) copy(ctx context.Context, stdout io.Writer) error {
	c, err := compliancestore.CopyToPG(ctx, m.src, m.dst, m.ca)
	if err != nil {
		return err
	}
	ca := "no device CA in the data dir (given by flags: keep passing --device-ca-cert/--device-ca-key)"
	if c.DeviceCA {
		ca = "the data dir's device CA"
	}
	fmt.Fprintf(stdout, "compliance: copied %d devices, %d policies, %d compliance rows, %d exclusions, %d device identities, %d events (revision %d, history from %d), %d audit events, %s; verified\n",
		c.Rows["devices"], c.Rows["policies"], c.Rows["compliance"], c.Rows["exclusions"], c.Rows["device_identities"],
		c.Rows[compliancestore.EventTable], c.Revision, c.CompactedBefore+1, c.Rows["audit_events"], ca)
	return nil
}

func (m *complianceMigration) close() {
	m.src.Close()
	m.dst.Close()
}
