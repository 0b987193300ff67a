package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/internal/suite"
	"github.com/condaccess/condaccess/services/access"
	"github.com/condaccess/condaccess/services/access/accessstore"
)

// sessionEvents returns a store's session events after start up to its head.
func sessionEvents(t *testing.T, st access.Store, start int64) []string {
	t.Helper()
	head := st.SessionRevision()
	var out []string
	if head <= start {
		return out
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := st.WatchSessionEvents(ctx, start, func(e *access.SessionEvent) error {
		out = append(out, fmt.Sprintf("%d %d %s %s %s", e.Revision, e.Kind, e.Session.ID, e.Session.DeviceID, e.ReasonCode))
		if e.Revision >= head {
			cancel()
		}
		return nil
	}, func(int64) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("watch session events: %v", err)
	}
	return out
}

// TestMigrateAccess: the README flow's access state (directory, policies, device
// compliance, sessions, sign-ins, session events) moves from the embedded store
// to PostgreSQL with the same revisions; a watcher resuming at an old revision gets
// exactly the events it missed; the flow then continues with access on PostgreSQL
// (resolve -> ALLOW); a second migrate into the same schema is refused.
func TestMigrateAccess(t *testing.T) {
	url := pgtest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	logger := slog.New(slog.DiscardHandler)
	dir := t.TempDir()
	s, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", services: "risk,compliance,access", dataDir: dir, stopTimeout: 5 * time.Second}, logger)
	if err != nil {
		t.Fatal(err)
	}
	conn := dialReplica(t, s)
	rep := accessReplica{accessv1.NewDirectoryServiceClient(conn), accessv1.NewConditionalAccessPolicyServiceClient(conn), accessv1.NewAccessServiceClient(conn)}
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	_, err = compliancev1.NewDeviceServiceClient(conn).EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
		DeviceId: "dev-1", DisplayName: "Laptop", Platform: commonv1.Platform_PLATFORM_WINDOWS, OsVersion: "10.0.22631", OwnerUserId: "u-1", Groups: []string{"finance"}}})
	must("enroll", err)
	_, err = compliancev1.NewCompliancePolicyServiceClient(conn).CreateCompliancePolicy(ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
		PolicyId: "max-medium", DisplayName: "Max medium", MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_MEDIUM, Assignment: &compliancev1.PolicyAssignment{AllDevices: true}}})
	must("compliance policy", err)
	_, err = rep.dir.CreateUser(ctx, &accessv1.CreateUserRequest{User: &accessv1.User{UserId: "u-1", DisplayName: "Ada"}})
	must("user", err)
	_, err = rep.dir.CreateApplication(ctx, &accessv1.CreateApplicationRequest{Application: &accessv1.Application{ApplicationId: "payroll", DisplayName: "Payroll"}})
	must("application", err)
	_, err = rep.pol.CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: &accessv1.ConditionalAccessPolicy{PolicyId: "payroll-compliant", DisplayName: "Payroll needs a compliant device",
		State: accessv1.PolicyState_POLICY_STATE_ENABLED, Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{Include: []string{"payroll"}},
		GrantControls: &accessv1.GrantControls{Require: []accessv1.GrantControl{accessv1.GrantControl_GRANT_CONTROL_COMPLIANT_DEVICE}}}})
	must("access policy", err)
	waitReplicaDecision(ctx, t, rep, "embedded", "u-1", "dev-1", "payroll", accessv1.Decision_DECISION_ALLOW) // opens a session
	_, err = riskv1.NewRiskServiceClient(conn).ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{AlertId: "a-1", DeviceId: "dev-1",
		Severity: commonv1.Severity_SEVERITY_HIGH, Title: "Malicious file"}})
	must("alert", err)
	waitReplicaDecision(ctx, t, rep, "embedded", "u-1", "dev-1", "payroll", accessv1.Decision_DECISION_BLOCK) // revokes it
	must("stop", s.Stop())

	src, err := accessstore.Open(ctx, accessstore.Options{Path: filepath.Join(dir, "access", "access.db")})
	must("open embedded access store", err)
	head := src.SessionRevision()
	wantEvents := sessionEvents(t, src, 0)
	wantSignIns, _, err := src.ListSignIns(ctx, access.SignInFilter{}, "", 100)
	must("list sign-ins", err)
	src.Close()
	if head < 2 || len(wantSignIns) < 2 {
		t.Fatalf("embedded flow left %d session events and %d sign-ins, want an opened and revoked session and at least two decisions", head, len(wantSignIns))
	}

	var out bytes.Buffer
	if err := run(ctx, []string{"migrate", "--from-data-dir", dir, "--to", url}, &out, &out); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "access: copied 1 users") || !strings.Contains(out.String(), "verified") {
		t.Fatalf("output: %s", out.String())
	}
	pg, err := accessstore.OpenPG(ctx, accessstore.PGOptions{URL: url})
	must("open PostgreSQL access store", err)
	if got := pg.SessionRevision(); got != head {
		t.Fatalf("session revision on PostgreSQL = %d, want %d", got, head)
	}
	if diff := cmp.Diff(wantEvents, sessionEvents(t, pg, 0)); diff != "" {
		t.Fatalf("session events (-embedded +PostgreSQL):\n%s", diff)
	}
	if diff := cmp.Diff(wantEvents[1:], sessionEvents(t, pg, 1)); diff != "" {
		t.Fatalf("a watcher resuming at revision 1 (-want +got):\n%s", diff)
	}
	gotSignIns, _, err := pg.ListSignIns(ctx, access.SignInFilter{}, "", 100)
	must("list sign-ins on PostgreSQL", err)
	if diff := cmp.Diff(wantSignIns, gotSignIns); diff != "" {
		t.Fatalf("sign-ins (-embedded +PostgreSQL):\n%s", diff)
	}
	d, err := pg.LoadDevice(ctx, "dev-1")
	if err != nil || d.State != access.ComplianceNoncompliant {
		t.Fatalf("device compliance on PostgreSQL = %+v (%v), want NONCOMPLIANT", d, err)
	}
	// A second copy into the same schema is refused and changes nothing.
	src, err = accessstore.Open(ctx, accessstore.Options{Path: filepath.Join(dir, "access", "access.db")})
	must("open embedded access store", err)
	if _, err := accessstore.CopyToPG(ctx, src, pg); !errors.Is(err, accessstore.ErrTargetNotEmpty) {
		t.Fatalf("second copy = %v, want ErrTargetNotEmpty", err)
	}
	src.Close()
	if diff := cmp.Diff(wantEvents, sessionEvents(t, pg, 0)); diff != "" {
		t.Fatalf("a refused copy changed the session events (-want +got):\n%s", diff)
	}
	pg.Close()

	// The flow goes on: risk and compliance embedded as before, access on PostgreSQL.
	cs, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", services: "risk,compliance", dataDir: dir, stopTimeout: 5 * time.Second}, logger)
	must("restart risk and compliance", err)
	t.Cleanup(func() { cs.Stop() })
	as, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", services: "access", dataDir: t.TempDir(), databaseURL: url,
		peers: suite.Peers{Compliance: cs.GRPCAddr()}, stopTimeout: 5 * time.Second}, logger)
	must("start access on PostgreSQL", err)
	t.Cleanup(func() { as.Stop() })
	aconn := dialReplica(t, as)
	pgRep := accessReplica{accessv1.NewDirectoryServiceClient(aconn), accessv1.NewConditionalAccessPolicyServiceClient(aconn), accessv1.NewAccessServiceClient(aconn)}
	waitReplicaDecision(ctx, t, pgRep, "PostgreSQL", "u-1", "dev-1", "payroll", accessv1.Decision_DECISION_BLOCK)
	_, err = riskv1.NewRiskServiceClient(dialReplica(t, cs)).ResolveAlert(ctx, &riskv1.ResolveAlertRequest{AlertId: "a-1",
		Classification: riskv1.AlertClassification_ALERT_CLASSIFICATION_TRUE_POSITIVE, Comment: "cleaned"})
	must("resolve", err)
	waitReplicaDecision(ctx, t, pgRep, "PostgreSQL", "u-1", "dev-1", "payroll", accessv1.Decision_DECISION_ALLOW)
}
