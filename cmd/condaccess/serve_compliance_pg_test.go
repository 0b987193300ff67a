package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"database/sql"
	"encoding/pem"
	"errors"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/devca"
	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/services/compliance/complianceapp"
	"github.com/condaccess/condaccess/services/compliance/compliancegrpc"
)

// TestServeComplianceReplicasOnPostgres: two serve processes' worth of risk and
// compliance on one database. Policies written on either replica return (the
// follower learns of the leader's sweep from the database); a HIGH alert reported
// to one risk replica makes the device NONCOMPLIANT on both compliance replicas,
// applied once (one compliance change event, the risk cursor at risk's head); the
// follower stamps risk_as_of with the leader's feed contact; both replicas share
// the device CA stored in the compliance schema (an enrolment token made on one is
// redeemed on the other, once); nothing is written to an embedded store.
func TestServeComplianceReplicasOnPostgres(t *testing.T) {
	url := pgtest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var conns []*grpc.ClientConn
	var dirs []string
	for range 2 {
		dir := t.TempDir()
		dirs = append(dirs, dir)
		o := serveOptions{grpcAddr: "127.0.0.1:0", services: "risk,compliance", dataDir: dir, databaseURL: url,
			leaseDuration: time.Second, stopTimeout: 5 * time.Second}
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
		conns = append(conns, conn)
	}
	var holder string
	for {
		err := db.QueryRowContext(ctx, `SELECT holder FROM compliance.leases WHERE name = $1`, complianceapp.ConsumerLease).Scan(&holder)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no replica took the %s lease: %v", complianceapp.ConsumerLease, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// A policy on each replica: one of them is the follower, whose write returns once
	// the leader has swept.
	for i, p := range []*compliancev1.CompliancePolicy{
		{PolicyId: "max-medium", DisplayName: "max medium", MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_MEDIUM, Assignment: &compliancev1.PolicyAssignment{AllDevices: true}},
		{PolicyId: "max-high", DisplayName: "max high", MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_HIGH, Assignment: &compliancev1.PolicyAssignment{AllDevices: true}},
	} {
		pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
		must(compliancev1.NewCompliancePolicyServiceClient(conns[i]).CreateCompliancePolicy(pctx, &compliancev1.CreateCompliancePolicyRequest{Policy: p}))
		pcancel()
	}
	must(compliancev1.NewDeviceServiceClient(conns[1]).EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
		DeviceId: "dev-1", DisplayName: "laptop", Platform: commonv1.Platform_PLATFORM_WINDOWS, OsVersion: "10.0.22631", OwnerUserId: "u-1"}}))
	must(riskv1.NewRiskServiceClient(conns[0]).ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
		AlertId: "a-1", DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "Malicious file"}}))

	for i, conn := range conns {
		c := compliancev1.NewComplianceServiceClient(conn)
		var last *compliancev1.DeviceCompliance
		for {
			r, err := c.GetDeviceCompliance(ctx, &compliancev1.GetDeviceComplianceRequest{DeviceId: "dev-1"})
			if err != nil {
				t.Fatalf("replica %d: %v", i, err)
			}
			last = r.GetDeviceCompliance()
			if last.GetState() == commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT && last.GetDeviceRisk() == commonv1.RiskLevel_RISK_LEVEL_HIGH {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("replica %d: dev-1 compliance = %v, want NONCOMPLIANT at HIGH", i, last)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// Applied once: the event log (read on the second replica) holds one change of
	// dev-1 to NONCOMPLIANT, and the risk cursor is risk's head.
	lr, err := compliancev1.NewComplianceServiceClient(conns[1]).ListDeviceCompliance(ctx, &compliancev1.ListDeviceComplianceRequest{})
	if err != nil {
		t.Fatal(err)
	}
	head := lr.GetRevision()
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	stream, err := compliancev1.NewComplianceServiceClient(conns[1]).WatchComplianceEvents(wctx, &compliancev1.WatchComplianceEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	noncompliant := 0
	var riskAsOf time.Time
	for rev := int64(0); rev < head; {
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		riskAsOf = m.GetRiskAsOf().AsTime()
		ev := m.GetEvent()
		if ev == nil {
			continue
		}
		if ev.GetRevision() != rev+1 {
			t.Fatalf("event revision %d after %d: not gap-free", ev.GetRevision(), rev)
		}
		rev = ev.GetRevision()
		if dc := ev.GetDeviceComplianceChanged().GetDeviceCompliance(); dc.GetDeviceId() == "dev-1" && dc.GetState() == commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT {
			noncompliant++
		}
	}
	wcancel()
	if noncompliant != 1 {
		t.Errorf("dev-1 became NONCOMPLIANT in %d events, want 1", noncompliant)
	}
	if riskAsOf.Before(start) {
		t.Errorf("risk_as_of on the second replica = %v, want after the test's start %v (the leader's feed contact)", riskAsOf, start)
	}
	var cursor, riskHead int64
	if err := db.QueryRowContext(ctx, `SELECT (SELECT revision FROM compliance.cursors WHERE name = 'risk'), (SELECT head FROM risk.risk_events_state WHERE id = 1)`).Scan(&cursor, &riskHead); err != nil {
		t.Fatal(err)
	}
	for cursor != riskHead && ctx.Err() == nil {
		// Progress may still be on its way to the cursor; it never passes the head.
		time.Sleep(10 * time.Millisecond)
		if err := db.QueryRowContext(ctx, `SELECT (SELECT revision FROM compliance.cursors WHERE name = 'risk'), (SELECT head FROM risk.risk_events_state WHERE id = 1)`).Scan(&cursor, &riskHead); err != nil {
			t.Fatal(err)
		}
	}
	if cursor != riskHead {
		t.Errorf("compliance's risk cursor = %d, risk's head = %d", cursor, riskHead)
	}

	// One device CA for both replicas: the database's. A token made on one replica
	// enrols on the other, once: the certificate chains to the stored CA, and the
	// token redeemed again (on either replica) is refused.
	var stored []byte
	if err := db.QueryRowContext(ctx, `SELECT cert_pem FROM compliance.device_ca WHERE id = 1`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	tok, err := compliancev1.NewDeviceIdentityServiceClient(conns[0]).CreateEnrollmentToken(ctx, &compliancev1.CreateEnrollmentTokenRequest{DeviceId: "dev-1"})
	if err != nil {
		t.Fatal(err)
	}
	_, csr, err := devca.NewCSR()
	if err != nil {
		t.Fatal(err)
	}
	issued, err := compliancev1.NewDeviceIdentityServiceClient(conns[1]).EnrollDeviceIdentity(ctx, &compliancev1.EnrollDeviceIdentityRequest{Token: tok.GetToken(), CsrPem: string(csr)})
	if err != nil {
		t.Fatalf("enrol on the other replica: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(stored) {
		t.Fatal("stored device CA is not PEM")
	}
	blk, _ := pem.Decode([]byte(issued.GetCertificatePem()))
	if blk == nil {
		t.Fatalf("issued certificate is not PEM: %q", issued.GetCertificatePem())
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("certificate issued on the second replica does not chain to the shared CA: %v", err)
	}
	for i, conn := range conns {
		_, err := compliancev1.NewDeviceIdentityServiceClient(conn).EnrollDeviceIdentity(ctx, &compliancev1.EnrollDeviceIdentityRequest{Token: tok.GetToken(), CsrPem: string(csr)})
		if status.Code(err) != codes.Unauthenticated || apierr.Reason(err) != compliancegrpc.ReasonEnrollmentTokenInvalid {
			t.Errorf("used token redeemed again on replica %d = %v, want UNAUTHENTICATED %s", i, err, compliancegrpc.ReasonEnrollmentTokenInvalid)
		}
	}
	for _, dir := range dirs {
		got, err := os.ReadFile(filepath.Join(dir, "device-ca", "device-ca.pem"))
		if err != nil || !bytes.Equal(got, stored) {
			t.Errorf("device CA in %s differs from the database's (%v)", dir, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "compliance", "compliance.db")); !os.IsNotExist(err) {
			t.Errorf("an embedded compliance store was created in %s (%v)", dir, err)
		}
	}
}

// TestServeComplianceConsumerFailsOver: of two risk+compliance replicas on one
// database, the first started leads the compliance consumer (lease token 1); once it
// stops, the other takes the lease over (token 2) and applies the next risk event.
func TestServeComplianceConsumerFailsOver(t *testing.T) {
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
			err := db.QueryRowContext(ctx, `SELECT token FROM compliance.leases WHERE name = $1`, complianceapp.ConsumerLease).Scan(&tok)
			if err == nil && tok == want {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("timeout waiting for lease token %d (last %d, %v)", want, tok, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	start := func() (*runningSuite, *grpc.ClientConn) {
		t.Helper()
		o := serveOptions{grpcAddr: "127.0.0.1:0", services: "risk,compliance", dataDir: t.TempDir(), databaseURL: url,
			leaseDuration: 300 * time.Millisecond, stopTimeout: 5 * time.Second}
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
		return s, conn
	}
	first, _ := start()
	waitToken(1)
	_, conn := start()
	if _, err := compliancev1.NewCompliancePolicyServiceClient(conn).CreateCompliancePolicy(ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
		PolicyId: "max-medium", DisplayName: "max medium", MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_MEDIUM, Assignment: &compliancev1.PolicyAssignment{AllDevices: true}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := compliancev1.NewDeviceServiceClient(conn).EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
		DeviceId: "dev-1", DisplayName: "laptop", Platform: commonv1.Platform_PLATFORM_WINDOWS, OsVersion: "10.0.22631", OwnerUserId: "u-1"}}); err != nil {
		t.Fatal(err)
	}
	if err := first.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	waitToken(2)
	if _, err := riskv1.NewRiskServiceClient(conn).ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
		AlertId: "a-1", DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "Malicious file"}}); err != nil {
		t.Fatal(err)
	}
	c := compliancev1.NewComplianceServiceClient(conn)
	for {
		r, err := c.GetDeviceCompliance(ctx, &compliancev1.GetDeviceComplianceRequest{DeviceId: "dev-1"})
		if err != nil {
			t.Fatal(err)
		}
		if r.GetDeviceCompliance().GetState() == commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("dev-1 compliance = %v after the failover, want NONCOMPLIANT", r.GetDeviceCompliance())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestServeComplianceExLeaderHealth: a compliance leader whose risk consumer is stuck
// reports NOT_SERVING (what every replica serves is old); once another holder has
// taken the lease, it no longer consumes and reports SERVING again (the new leader's
// health speaks for the feed), while its compliance reads go on.
func TestServeComplianceExLeaderHealth(t *testing.T) {
	url := pgtest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var failing atomic.Bool
	facs := factories()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	for _, f := range facs {
		f.RegisterFlags(fs)
		if c, ok := f.(*complianceapp.Factory); ok {
			c.ApplyFault = func(int64) error {
				if failing.Load() {
					return errors.New("injected: cannot apply")
				}
				return nil
			}
		}
	}
	o := serveOptions{grpcAddr: "127.0.0.1:0", services: "risk,compliance", dataDir: t.TempDir(), databaseURL: url,
		leaseDuration: time.Second, stopTimeout: 5 * time.Second, factories: facs}
	s, err := startSuite(ctx, o, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	waitHealth := func(what string, want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		for {
			r, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: compliancev1.ComplianceService_ServiceDesc.ServiceName})
			if err == nil && r.GetStatus() == want {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("%s: health %v (%v), want %v", what, r.GetStatus(), err, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for {
		var n int
		// The leader's consumer has listed risk (its cursor is stored): the alert below
		// reaches it as an event to apply, not in a listing.
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM compliance.cursors WHERE name = 'risk'`).Scan(&n); err == nil && n == 1 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the compliance consumer never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	failing.Store(true)
	if _, err := riskv1.NewRiskServiceClient(conn).ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
		AlertId: "a-1", DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "Malicious file"}}); err != nil {
		t.Fatal(err)
	}
	waitHealth("leader with a stuck consumer", healthpb.HealthCheckResponse_NOT_SERVING)
	// Another holder takes the lease (as a replica would after a pause).
	if _, err := db.ExecContext(ctx, `UPDATE compliance.leases SET holder = 'another-replica', token = token + 1,
		expires_at = clock_timestamp() + interval '1 hour' WHERE name = $1`, complianceapp.ConsumerLease); err != nil {
		t.Fatal(err)
	}
	waitHealth("after losing the lease", healthpb.HealthCheckResponse_SERVING)
	if _, err := compliancev1.NewComplianceServiceClient(conn).ListDeviceCompliance(ctx, &compliancev1.ListDeviceComplianceRequest{}); err != nil {
		t.Fatalf("reads on the former leader: %v", err)
	}
}
