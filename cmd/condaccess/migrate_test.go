package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/services/risk"
	"github.com/condaccess/condaccess/services/risk/riskgrpc"
	"github.com/condaccess/condaccess/services/risk/riskstore"
)

// TestMigrateRisk: `condaccess migrate` copies an embedded risk store into
// PostgreSQL with its revision; a second run into the same schema, a missing store
// and missing flags are refused.
func TestMigrateRisk(t *testing.T) {
	ctx := context.Background()
	url := pgtest.URL(t)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "risk"), 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := riskstore.Open(ctx, riskstore.Options{Path: filepath.Join(dir, "risk", "risk.db"), Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := risk.New(risk.Config{Store: st, Encode: riskgrpc.EncodeEvent}).ReportAlert(ctx, risk.Alert{ID: "a-1", DeviceID: "dev-1", Severity: risk.SeverityHigh, Title: "t"}); err != nil {
		t.Fatal(err)
	}
	head := st.Revision()
	st.Close()

	var out bytes.Buffer
	if err := run(ctx, []string{"migrate", "--from-data-dir", dir, "--to", url}, &out, &out); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "copied 1 alerts") || !strings.Contains(out.String(), "verified") {
		t.Fatalf("output: %s", out.String())
	}
	pg, err := riskstore.OpenPG(ctx, riskstore.PGOptions{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	if got, err := pg.DeviceRisk(ctx, "dev-1"); err != nil || got.Level != risk.LevelHigh || pg.Revision() != head {
		t.Fatalf("after migrate: %+v, %v, revision %d; want HIGH at revision %d", got, err, pg.Revision(), head)
	}

	tests := []struct {
		name    string
		args    []string
		want    error
		wantMsg string
	}{
		{"into a non-empty schema", []string{"--from-data-dir", dir, "--to", url}, riskstore.ErrTargetNotEmpty, "not empty"},
		{"no store there", []string{"--from-data-dir", t.TempDir(), "--to", url}, errUsage, "no risk store"},
		{"no target", []string{"--from-data-dir", dir}, errUsage, "--to"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(ctx, append([]string{"migrate"}, tt.args...), &out, &out)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("migrate = %v, want %v mentioning %q", err, tt.want, tt.wantMsg)
			}
		})
	}
	if n, err := pg.DeviceRisk(ctx, "dev-1"); err != nil || pg.Revision() != head {
		t.Fatalf("a refused migrate changed the target: %+v, %v", n, err)
	}
}
