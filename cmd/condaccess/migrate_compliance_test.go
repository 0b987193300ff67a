package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/services/compliance/compliancestore"
)

// TestMigrateCompliance: an embedded risk+compliance install (a device made
// NONCOMPLIANT by a HIGH alert) is migrated with `condaccess migrate`; serve on
// PostgreSQL then shows the same compliance at the same revision, signs with the
// install's device CA, and the flow goes on (resolving the alert makes the device
// COMPLIANT). A target whose compliance schema is not empty is refused before
// anything is copied.
func TestMigrateCompliance(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	// serve starts a suite of risk and compliance (embedded, or on url) and returns a
	// connection to it and a stop function.
	serve := func(dataDir, url string) (*grpc.ClientConn, func()) {
		t.Helper()
		o := serveOptions{grpcAddr: "127.0.0.1:0", services: "risk,compliance", dataDir: dataDir, databaseURL: url, stopTimeout: 5 * time.Second}
		s, err := startSuite(ctx, o, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		return conn, func() {
			conn.Close()
			if err := s.Stop(); err != nil {
				t.Errorf("stop: %v", err)
			}
		}
	}
	waitState := func(conn *grpc.ClientConn, want commonv1.ComplianceState) int64 {
		t.Helper()
		c := compliancev1.NewComplianceServiceClient(conn)
		for {
			r, err := c.ListDeviceCompliance(ctx, &compliancev1.ListDeviceComplianceRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if l := r.GetDeviceCompliances(); len(l) == 1 && l[0].GetState() == want {
				return r.GetRevision()
			}
			if ctx.Err() != nil {
				t.Fatalf("dev-1 compliance = %v, want %v", r.GetDeviceCompliances(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	conn, stop := serve(dir, "")
	if _, err := compliancev1.NewCompliancePolicyServiceClient(conn).CreateCompliancePolicy(ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
		PolicyId: "max-medium", DisplayName: "max medium", MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_MEDIUM, Assignment: &compliancev1.PolicyAssignment{AllDevices: true}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := compliancev1.NewDeviceServiceClient(conn).EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
		DeviceId: "dev-1", DisplayName: "laptop", Platform: commonv1.Platform_PLATFORM_WINDOWS, OsVersion: "10.0.22631", OwnerUserId: "u-1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := riskv1.NewRiskServiceClient(conn).ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
		AlertId: "a-1", DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "Malicious file"}}); err != nil {
		t.Fatal(err)
	}
	rev := waitState(conn, commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT)
	stop()
	caPEM, err := os.ReadFile(filepath.Join(dir, "device-ca", "device-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}

	// A target whose compliance schema holds a device CA already: refused, nothing copied.
	busy := pgtest.URL(t)
	if _, _, err := compliancestore.SharedDeviceCA(ctx, busy, func() ([]byte, []byte, error) { return []byte("c"), []byte("k"), nil }); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"migrate", "--from-data-dir", dir, "--to", busy}, &out, &out); !errors.Is(err, compliancestore.ErrTargetNotEmpty) {
		t.Fatalf("migrate into a non-empty compliance schema = %v, want ErrTargetNotEmpty", err)
	}
	db, err := sql.Open("pgx", busy)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var alerts int64
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM risk.alerts`).Scan(&alerts); err != nil || alerts != 0 {
		t.Fatalf("a refused migrate copied %d alerts (%v)", alerts, err)
	}

	url := pgtest.URL(t)
	out.Reset()
	if err := run(ctx, []string{"migrate", "--from-data-dir", dir, "--to", url}, &out, &out); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "compliance: copied 1 devices, 1 policies, 1 compliance rows") || !strings.Contains(out.String(), "the data dir's device CA; verified") {
		t.Fatalf("output: %s", out.String())
	}
	if strings.Contains(out.String(), "compliance]") || strings.Contains(out.String(), "[compliance") {
		t.Fatalf("compliance still reported as not migrated: %s", out.String())
	}

	newDir := t.TempDir()
	conn, stop = serve(newDir, url)
	defer stop()
	if got := waitState(conn, commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT); got != rev {
		t.Fatalf("revision on PostgreSQL = %d, want the embedded store's %d", got, rev)
	}
	if got, err := os.ReadFile(filepath.Join(newDir, "device-ca", "device-ca.pem")); err != nil || !bytes.Equal(got, caPEM) {
		t.Fatalf("device CA on PostgreSQL differs from the embedded install's (%v)", err)
	}
	if _, err := riskv1.NewRiskServiceClient(conn).ResolveAlert(ctx, &riskv1.ResolveAlertRequest{AlertId: "a-1",
		Classification: riskv1.AlertClassification_ALERT_CLASSIFICATION_FALSE_POSITIVE}); err != nil {
		t.Fatal(err)
	}
	if got := waitState(conn, commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT); got <= rev {
		t.Fatalf("revision after the resolve = %d, want after %d", got, rev)
	}
}
