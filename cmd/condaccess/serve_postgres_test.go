package main

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	auditv1 "github.com/condaccess/condaccess/gen/go/condaccess/audit/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/services/risk/riskapp"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestServeRefusesServicesNotOnPostgres: with --database-url, a database that does not
// answer fails the start without creating an embedded store (never a silent SQLite
// fallback). Every service has a PostgreSQL store now; serve still refuses one
// without (suite.PostgresReady) before opening anything.
func TestServeRefusesServicesNotOnPostgres(t *testing.T) {
	const url = "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2"
	tests := []struct {
		name     string
		services string
		wantErr  string
		usage    bool
	}{
		{"risk and compliance, database down", "risk,compliance", "device CA: compliancestore: pgdb: connect", false},
		{"access, database down", "access", "accessstore: pgdb: connect", false},
		{"risk, database down", "risk", "riskstore: pgdb: connect", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			o := serveOptions{grpcAddr: "127.0.0.1:0", services: tt.services, dataDir: dir, databaseURL: url, stopTimeout: time.Second}
			if !strings.Contains(tt.services, "compliance") {
				o.peers.Compliance = "127.0.0.1:1" // access needs a peer; nothing answers, dialing is lazy
			}
			s, err := startSuite(context.Background(), o, slog.New(slog.DiscardHandler))
			if err == nil {
				s.Stop()
				t.Fatal("started, want an error")
			}
			if errors.Is(err, errUsage) != tt.usage || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want (usage %v) an error mentioning %q", err, tt.usage, tt.wantErr)
			}
			if _, err := os.Stat(filepath.Join(dir, "risk", "risk.db")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("an embedded risk store was created (%v)", err)
			}
			for _, f := range []string{"compliance/compliance.db", "access/access.db", "remediation/remediation.db"} {
				if _, err := os.Stat(filepath.Join(dir, f)); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("an embedded store %s was created (%v)", f, err)
				}
			}
		})
	}
}

// TestServeRiskReplicasOnPostgres: two serve processes' worth of risk service on one
// database; an alert reported to one is the device's risk on the other, and nothing
// is written to the embedded store.
func TestServeRiskReplicasOnPostgres(t *testing.T) {
	url := pgtest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var clients []riskv1.RiskServiceClient
	var dirs []string
	for range 2 {
		dir := t.TempDir()
		dirs = append(dirs, dir)
		o := serveOptions{grpcAddr: "127.0.0.1:0", services: "risk", dataDir: dir, databaseURL: url, stopTimeout: 5 * time.Second}
		s, err := startSuite(ctx, o, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Stop() })
		conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		clients = append(clients, riskv1.NewRiskServiceClient(conn))
	}
	if _, err := clients[0].ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
		AlertId: "a-1", DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "Malicious file"}}); err != nil {
		t.Fatal(err)
	}
	resp, err := clients[1].GetDeviceRisk(ctx, &riskv1.GetDeviceRiskRequest{DeviceId: "dev-1"})
	if err != nil {
		t.Fatalf("GetDeviceRisk on the other replica: %v", err)
	}
	if got := resp.GetDeviceRisk(); got.GetLevel() != commonv1.RiskLevel_RISK_LEVEL_HIGH || cmp.Diff([]string{"a-1"}, got.GetActiveAlertIds()) != "" {
		t.Fatalf("device risk on the other replica = %v, want HIGH with a-1", got)
	}
	for _, dir := range dirs {
		if _, err := os.Stat(filepath.Join(dir, "risk", "risk.db")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("an embedded risk store was created in %s (%v)", dir, err)
		}
	}
}

// TestServeCompactionLeaseFailsOver: of two risk replicas on one database, the first
// started leads the event compaction (lease token 1); when it stops, the other takes
// the lease over (token 2) within --lease-duration.
func TestServeCompactionLeaseFailsOver(t *testing.T) {
	url := pgtest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	waitToken := func(want int64) {
		t.Helper()
		for {
			var tok int64
			err := db.QueryRowContext(ctx, `SELECT token FROM risk.leases WHERE name = $1`, riskapp.CompactionLease).Scan(&tok)
			if err == nil && tok == want {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("timeout waiting for lease token %d (last %d, %v)", want, tok, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	start := func() *runningSuite {
		t.Helper()
		o := serveOptions{grpcAddr: "127.0.0.1:0", services: "risk", dataDir: t.TempDir(), databaseURL: url,
			leaseDuration: 300 * time.Millisecond, stopTimeout: 5 * time.Second}
		s, err := startSuite(ctx, o, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Stop() })
		return s
	}
	first := start()
	waitToken(1)
	start()
	if err := first.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	waitToken(2)
}

// TestAuditRetentionOnPostgres: --audit-retention compacts the audit table a replica
// shares with the others: the event written through replica A is gone from A's
// listing once replica B (started later, with a retention of 1ns) has compacted.
func TestAuditRetentionOnPostgres(t *testing.T) {
	url := pgtest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := func(retention time.Duration) *grpc.ClientConn {
		t.Helper()
		o := serveOptions{grpcAddr: "127.0.0.1:0", services: "risk", dataDir: t.TempDir(), databaseURL: url, stopTimeout: 5 * time.Second,
			auditRetention: retention}
		s, err := startSuite(ctx, o, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Stop() })
		return dialReplica(t, s)
	}
	a := start(0)
	risk := riskv1.NewRiskServiceClient(a)
	if _, err := risk.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
		AlertId: "a-1", DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "Malicious file"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := risk.ResolveAlert(ctx, &riskv1.ResolveAlertRequest{AlertId: "a-1",
		Classification: riskv1.AlertClassification_ALERT_CLASSIFICATION_FALSE_POSITIVE}); err != nil {
		t.Fatal(err)
	}
	list := auditv1.NewAuditServiceClient(a)
	count := func() int {
		t.Helper()
		resp, err := list.ListAuditEvents(ctx, &auditv1.ListAuditEventsRequest{ResourceId: "a-1"})
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.GetEvents())
	}
	if n := count(); n != 1 {
		t.Fatalf("events of a-1 on replica A = %d, want 1", n)
	}
	start(time.Nanosecond)
	for count() != 0 {
		if ctx.Err() != nil {
			t.Fatal("replica B's retention did not remove the event written through replica A")
		}
		time.Sleep(10 * time.Millisecond) // polling interval: the loop waits on the condition
	}
}
