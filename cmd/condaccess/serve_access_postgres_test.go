package main

import (
	"context"
	"database/sql"
	"log/slog"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	auditv1 "github.com/condaccess/condaccess/gen/go/condaccess/audit/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/internal/suite"
	"github.com/condaccess/condaccess/services/access"
	"github.com/condaccess/condaccess/services/access/accessapp"
)

// accessReplica is the clients of one access replica.
type accessReplica struct {
	dir    accessv1.DirectoryServiceClient
	pol    accessv1.ConditionalAccessPolicyServiceClient
	access accessv1.AccessServiceClient
}

func dialReplica(t *testing.T, s *runningSuite) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// waitReplicaDecision evaluates (user, device, app) on r until the decision is want, and
// returns when it was; it fails the test at ctx's deadline.
func waitReplicaDecision(ctx context.Context, t *testing.T, r accessReplica, name, user, device, app string, want accessv1.Decision) time.Time {
	t.Helper()
	var last *accessv1.EvaluateAccessResponse
	var err error
	for {
		last, err = r.access.EvaluateAccess(ctx, &accessv1.EvaluateAccessRequest{UserId: user, DeviceId: device, ApplicationId: app})
		if err == nil && last.GetDecision() == want {
			return time.Now()
		}
		if ctx.Err() != nil {
			t.Fatalf("replica %s: %s/%s/%s: decision %v (err %v), want %v before the deadline", name, user, device, app, last.GetDecision(), err, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func replicaQuantiles(d []time.Duration) (p50, max time.Duration) {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)-1]
}

// TestServeAccessReplicasOnPostgres: two access replicas on one PostgreSQL database
// (a risk and compliance suite on SQLite beside them). A policy written on one
// replica decides on the other (and the other way round), a write validated
// against a model the other replica has since changed is refused, and the
// compliance state the consumer leader applies (alert -> noncompliant -> BLOCK,
// resolve -> ALLOW) decides on both.
func TestServeAccessReplicasOnPostgres(t *testing.T) {
	url := pgtest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	logger := slog.New(slog.DiscardHandler)
	cs, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", services: "risk,compliance", dataDir: t.TempDir(), stopTimeout: 5 * time.Second}, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Stop() })
	var reps []accessReplica
	var conns []*grpc.ClientConn
	for range 2 {
		o := serveOptions{grpcAddr: "127.0.0.1:0", services: "access", dataDir: t.TempDir(), databaseURL: url,
			leaseDuration: time.Second, peers: suite.Peers{Compliance: cs.GRPCAddr()}, stopTimeout: 5 * time.Second}
		s, err := startSuite(ctx, o, logger)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Stop() })
		conn := dialReplica(t, s)
		conns = append(conns, conn)
		reps = append(reps, accessReplica{accessv1.NewDirectoryServiceClient(conn), accessv1.NewConditionalAccessPolicyServiceClient(conn), accessv1.NewAccessServiceClient(conn)})
	}
	a, b := reps[0], reps[1]
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	// The directory written on A reaches B.
	_, err = a.dir.CreateUser(ctx, &accessv1.CreateUserRequest{User: &accessv1.User{UserId: "u-1", DisplayName: "Ada"}})
	must("create user on A", err)
	for _, app := range []string{"wiki", "payroll"} {
		_, err = a.dir.CreateApplication(ctx, &accessv1.CreateApplicationRequest{Application: &accessv1.Application{ApplicationId: app, DisplayName: app}})
		must("create application on A", err)
	}
	waitReplicaDecision(ctx, t, b, "B", "u-1", "dev-1", "wiki", accessv1.Decision_DECISION_ALLOW)
	// AuditService answers (its PostgreSQL listing: TestAuditOverMutualTLSOnPostgres).
	if _, err := auditv1.NewAuditServiceClient(conns[0]).ListAuditEvents(ctx, &auditv1.ListAuditEventsRequest{}); err != nil {
		t.Fatalf("ListAuditEvents on a PostgreSQL access replica: %v", err)
	}

	// A policy written on one replica decides on the other: enabled on A -> B blocks,
	// disabled on B -> A allows; twenty times each way.
	block := &accessv1.ConditionalAccessPolicy{PolicyId: "wiki-block", DisplayName: "Block wiki", State: accessv1.PolicyState_POLICY_STATE_ENABLED,
		Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{Include: []string{"wiki"}},
		GrantControls: &accessv1.GrantControls{Block: true}}
	t0 := time.Now()
	_, err = a.pol.CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: block})
	must("create policy on A", err)
	lat := []time.Duration{waitReplicaDecision(ctx, t, b, "B", "u-1", "dev-1", "wiki", accessv1.Decision_DECISION_BLOCK).Sub(t0)}
	for i := range 20 {
		from, to, fromName, toName := b, a, "B", "A"
		state, want := accessv1.PolicyState_POLICY_STATE_DISABLED, accessv1.Decision_DECISION_ALLOW
		if i%2 == 1 {
			from, to, fromName, toName = a, b, "A", "B"
			state, want = accessv1.PolicyState_POLICY_STATE_ENABLED, accessv1.Decision_DECISION_BLOCK
		}
		p := proto.Clone(block).(*accessv1.ConditionalAccessPolicy)
		p.State = state
		t0 := time.Now()
		_, err := from.pol.UpdatePolicy(ctx, &accessv1.UpdatePolicyRequest{Policy: p})
		must("update policy on "+fromName, err)
		lat = append(lat, waitReplicaDecision(ctx, t, to, toName, "u-1", "dev-1", "wiki", want).Sub(t0))
	}
	p50, mx := replicaQuantiles(lat)
	t.Logf("policy written on one replica -> decision on the other: p50 %v, max %v over %d changes", p50, mx, len(lat))

	// The compliance feed, applied by the consumer leader, decides on both replicas.
	conn := dialReplica(t, cs)
	_, err = compliancev1.NewDeviceServiceClient(conn).EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
		DeviceId: "dev-1", DisplayName: "Laptop", Platform: commonv1.Platform_PLATFORM_WINDOWS, OsVersion: "10.0.22631", OwnerUserId: "u-1"}})
	must("enroll", err)
	_, err = compliancev1.NewCompliancePolicyServiceClient(conn).CreateCompliancePolicy(ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
		PolicyId: "max-medium", DisplayName: "Max medium", MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_MEDIUM, Assignment: &compliancev1.PolicyAssignment{AllDevices: true}}})
	must("compliance policy", err)
	_, err = b.pol.CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: &accessv1.ConditionalAccessPolicy{PolicyId: "payroll-compliant", DisplayName: "Payroll needs a compliant device",
		State: accessv1.PolicyState_POLICY_STATE_ENABLED, Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{Include: []string{"payroll"}},
		GrantControls: &accessv1.GrantControls{Require: []accessv1.GrantControl{accessv1.GrantControl_GRANT_CONTROL_COMPLIANT_DEVICE}}}})
	must("create policy on B", err)
	for i, r := range reps {
		waitReplicaDecision(ctx, t, r, string(rune('A'+i)), "u-1", "dev-1", "payroll", accessv1.Decision_DECISION_ALLOW)
	}
	risk := riskv1.NewRiskServiceClient(conn)
	_, err = risk.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{AlertId: "a-1", DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "Malicious file"}})
	must("report alert", err)
	for i, r := range reps {
		waitReplicaDecision(ctx, t, r, string(rune('A'+i)), "u-1", "dev-1", "payroll", accessv1.Decision_DECISION_BLOCK)
	}
	_, err = risk.ResolveAlert(ctx, &riskv1.ResolveAlertRequest{AlertId: "a-1", Classification: riskv1.AlertClassification_ALERT_CLASSIFICATION_TRUE_POSITIVE, Comment: "cleaned"})
	must("resolve alert", err)
	for i, r := range reps {
		waitReplicaDecision(ctx, t, r, string(rune('A'+i)), "u-1", "dev-1", "payroll", accessv1.Decision_DECISION_ALLOW)
	}

	// Disabling the user on A revokes the session B's decision opened (once stored).
	resp, err := b.access.EvaluateAccess(ctx, &accessv1.EvaluateAccessRequest{UserId: "u-1", DeviceId: "dev-1", ApplicationId: "payroll"})
	must("evaluate on B", err)
	db, err := sql.Open("pgx", url)
	must("open database", err)
	defer db.Close()
	sessionState := func(want int, what string) {
		t.Helper()
		for {
			var st int
			err := db.QueryRowContext(ctx, `SELECT state FROM access.sessions WHERE id = $1`, resp.GetSessionId()).Scan(&st)
			if err == nil && st == want {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("session %q opened on B: state %d (%v), want %s", resp.GetSessionId(), st, err, what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	sessionState(int(access.SessionActive), "stored ACTIVE")
	_, err = a.dir.UpdateUser(ctx, &accessv1.UpdateUserRequest{User: &accessv1.User{UserId: "u-1", DisplayName: "Ada", Disabled: true}})
	must("disable the user on A", err)
	sessionState(int(access.SessionRevoked), "REVOKED")
	waitReplicaDecision(ctx, t, b, "B", "u-1", "dev-1", "payroll", accessv1.Decision_DECISION_BLOCK)
}

// TestServeAccessConsumerFailsOver: of two access replicas, the first started
// consumes the compliance feed (lease token 1). When it stops, the other takes
// the lease over (token 2) and goes on from the stored cursor: the next
// compliance changes (alert -> BLOCK, resolve -> ALLOW) decide on it, the session
// the stopped replica had opened is revoked, and the cursor passes the revision
// the first leader had stored.
func TestServeAccessConsumerFailsOver(t *testing.T) {
	url := pgtest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	logger := slog.New(slog.DiscardHandler)
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	state := func() (token, cursor int64) {
		t.Helper()
		db.QueryRowContext(ctx, `SELECT token FROM access.leases WHERE name = $1`, accessapp.ConsumerLease).Scan(&token)
		db.QueryRowContext(ctx, `SELECT revision FROM access.feed_cursor WHERE id = 1`).Scan(&cursor)
		return token, cursor
	}
	waitToken := func(want int64) {
		t.Helper()
		for {
			if tok, _ := state(); tok == want {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("timeout waiting for lease token %d", want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	cs, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", services: "risk,compliance", dataDir: t.TempDir(), stopTimeout: 5 * time.Second}, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Stop() })
	start := func() (*runningSuite, accessReplica) {
		t.Helper()
		o := serveOptions{grpcAddr: "127.0.0.1:0", services: "access", dataDir: t.TempDir(), databaseURL: url,
			leaseDuration: 500 * time.Millisecond, peers: suite.Peers{Compliance: cs.GRPCAddr()}, stopTimeout: 5 * time.Second}
		s, err := startSuite(ctx, o, logger)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Stop() })
		conn := dialReplica(t, s)
		return s, accessReplica{accessv1.NewDirectoryServiceClient(conn), accessv1.NewConditionalAccessPolicyServiceClient(conn), accessv1.NewAccessServiceClient(conn)}
	}
	first, a := start()
	waitToken(1)
	_, b := start()

	conn := dialReplica(t, cs)
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	_, err = compliancev1.NewDeviceServiceClient(conn).EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
		DeviceId: "dev-1", DisplayName: "Laptop", Platform: commonv1.Platform_PLATFORM_WINDOWS, OsVersion: "10.0.22631", OwnerUserId: "u-1"}})
	must("enroll", err)
	_, err = compliancev1.NewCompliancePolicyServiceClient(conn).CreateCompliancePolicy(ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
		PolicyId: "max-medium", DisplayName: "Max medium", MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_MEDIUM, Assignment: &compliancev1.PolicyAssignment{AllDevices: true}}})
	must("compliance policy", err)
	_, err = a.dir.CreateUser(ctx, &accessv1.CreateUserRequest{User: &accessv1.User{UserId: "u-1", DisplayName: "Ada"}})
	must("user", err)
	_, err = a.dir.CreateApplication(ctx, &accessv1.CreateApplicationRequest{Application: &accessv1.Application{ApplicationId: "payroll", DisplayName: "Payroll"}})
	must("application", err)
	_, err = a.pol.CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: &accessv1.ConditionalAccessPolicy{PolicyId: "payroll-compliant", DisplayName: "Payroll needs a compliant device",
		State: accessv1.PolicyState_POLICY_STATE_ENABLED, Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{Include: []string{"payroll"}},
		GrantControls: &accessv1.GrantControls{Require: []accessv1.GrantControl{accessv1.GrantControl_GRANT_CONTROL_COMPLIANT_DEVICE}}}})
	must("access policy", err)
	// A session opened by the first leader's decision; then the first leader stops.
	waitReplicaDecision(ctx, t, a, "A", "u-1", "dev-1", "payroll", accessv1.Decision_DECISION_ALLOW)
	r, err := a.access.EvaluateAccess(ctx, &accessv1.EvaluateAccessRequest{UserId: "u-1", DeviceId: "dev-1", ApplicationId: "payroll"})
	must("evaluate on A", err)
	sid := r.GetSessionId()
	_, before := state()
	stopped := time.Now()
	must("stop the leader", first.Stop())
	waitToken(2)
	t.Logf("lease taken over %v after the leader stopped", time.Since(stopped))

	// The new leader applies the next compliance change, and revokes the session
	// the stopped replica opened (stored, in no live replica's memory).
	risk := riskv1.NewRiskServiceClient(conn)
	_, err = risk.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{AlertId: "a-1", DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "Malicious file"}})
	must("alert", err)
	waitReplicaDecision(ctx, t, b, "B", "u-1", "dev-1", "payroll", accessv1.Decision_DECISION_BLOCK)
	for {
		var st int
		err := db.QueryRowContext(ctx, `SELECT state FROM access.sessions WHERE id = $1`, sid).Scan(&st)
		if err == nil && st == int(access.SessionRevoked) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("session %q opened on the stopped replica: state %d (%v), want REVOKED", sid, st, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, err = risk.ResolveAlert(ctx, &riskv1.ResolveAlertRequest{AlertId: "a-1", Classification: riskv1.AlertClassification_ALERT_CLASSIFICATION_TRUE_POSITIVE, Comment: "cleaned"})
	must("resolve", err)
	waitReplicaDecision(ctx, t, b, "B", "u-1", "dev-1", "payroll", accessv1.Decision_DECISION_ALLOW)
	if _, after := state(); after <= before {
		t.Fatalf("compliance cursor %d after the takeover, want past %d (the first leader's)", after, before)
	}
}

// TestServeAccessLeaderFencedAfterTakeover: the access consumer leader whose lease
// another holder took over (as when it was paused past its lease) does not apply
// the next compliance event: its fenced write is refused, the cursor and the
// device's stored state stay as they were, and its consumer reports itself stuck
// (NOT_SERVING) until it notices the loss, after which the replica reports SERVING
// again (it no longer consumes). When the other holder's lease ends, it leads again
// (next token) and applies the event.
func TestServeAccessLeaderFencedAfterTakeover(t *testing.T) {
	url := pgtest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	logger := slog.New(slog.DiscardHandler)
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	cs, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", services: "risk,compliance", dataDir: t.TempDir(), stopTimeout: 5 * time.Second}, logger)
	must("start risk and compliance", err)
	t.Cleanup(func() { cs.Stop() })
	as, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", services: "access", dataDir: t.TempDir(), databaseURL: url,
		leaseDuration: 3 * time.Second, peers: suite.Peers{Compliance: cs.GRPCAddr()}, stopTimeout: 5 * time.Second}, logger)
	must("start access", err)
	t.Cleanup(func() { as.Stop() })
	aconn := dialReplica(t, as)
	a := accessReplica{accessv1.NewDirectoryServiceClient(aconn), accessv1.NewConditionalAccessPolicyServiceClient(aconn), accessv1.NewAccessServiceClient(aconn)}
	health := healthpb.NewHealthClient(aconn)
	conn := dialReplica(t, cs)
	_, err = compliancev1.NewDeviceServiceClient(conn).EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
		DeviceId: "dev-1", DisplayName: "Laptop", Platform: commonv1.Platform_PLATFORM_WINDOWS, OsVersion: "10.0.22631", OwnerUserId: "u-1"}})
	must("enroll", err)
	_, err = compliancev1.NewCompliancePolicyServiceClient(conn).CreateCompliancePolicy(ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
		PolicyId: "max-medium", DisplayName: "Max medium", MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_MEDIUM, Assignment: &compliancev1.PolicyAssignment{AllDevices: true}}})
	must("compliance policy", err)
	_, err = a.dir.CreateUser(ctx, &accessv1.CreateUserRequest{User: &accessv1.User{UserId: "u-1", DisplayName: "Ada"}})
	must("user", err)
	_, err = a.dir.CreateApplication(ctx, &accessv1.CreateApplicationRequest{Application: &accessv1.Application{ApplicationId: "payroll", DisplayName: "Payroll"}})
	must("application", err)
	_, err = a.pol.CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: &accessv1.ConditionalAccessPolicy{PolicyId: "payroll-compliant", DisplayName: "Payroll needs a compliant device",
		State: accessv1.PolicyState_POLICY_STATE_ENABLED, Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{Include: []string{"payroll"}},
		GrantControls: &accessv1.GrantControls{Require: []accessv1.GrantControl{accessv1.GrantControl_GRANT_CONTROL_COMPLIANT_DEVICE}}}})
	must("access policy", err)
	waitReplicaDecision(ctx, t, a, "A", "u-1", "dev-1", "payroll", accessv1.Decision_DECISION_ALLOW)

	stored := func() (token, cursor int64, state int) {
		t.Helper()
		must("read the lease", db.QueryRowContext(ctx, `SELECT token FROM access.leases WHERE name = $1`, accessapp.ConsumerLease).Scan(&token))
		must("read the cursor", db.QueryRowContext(ctx, `SELECT revision FROM access.feed_cursor WHERE id = 1`).Scan(&cursor))
		must("read the device", db.QueryRowContext(ctx, `SELECT state FROM access.device_compliance WHERE device_id = 'dev-1'`).Scan(&state))
		return token, cursor, state
	}
	waitHealth := func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		for {
			r, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: accessv1.AccessService_ServiceDesc.ServiceName})
			if err == nil && r.GetStatus() == want {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("access health %v (%v), want %v", r.GetStatus(), err, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	tok0, cur0, state0 := stored()
	// Another holder takes the lease over (the leader was paused past it).
	if _, err := db.ExecContext(ctx, `UPDATE access.leases SET holder = 'intruder', token = token + 1, expires_at = clock_timestamp() + interval '1 hour' WHERE name = $1`,
		accessapp.ConsumerLease); err != nil {
		t.Fatal(err)
	}
	_, err = riskv1.NewRiskServiceClient(conn).ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{AlertId: "a-1", DeviceId: "dev-1",
		Severity: commonv1.Severity_SEVERITY_HIGH, Title: "Malicious file"}})
	must("alert", err)
	waitHealth(healthpb.HealthCheckResponse_NOT_SERVING) // the event's fenced write was refused
	if tok, cur, state := stored(); tok != tok0+1 || cur != cur0 || state != state0 {
		t.Fatalf("after the fenced apply: token %d, cursor %d, device state %d; want %d, %d, %d (nothing applied)", tok, cur, state, tok0+1, cur0, state0)
	}
	waitHealth(healthpb.HealthCheckResponse_SERVING) // the replica noticed the loss and stopped consuming
	if _, cur, state := stored(); cur != cur0 || state != state0 {
		t.Fatalf("after the lease loss: cursor %d, device state %d; want %d, %d", cur, state, cur0, state0)
	}

	// The other holder's lease ends: the replica leads again and applies the event.
	if _, err := db.ExecContext(ctx, `UPDATE access.leases SET expires_at = clock_timestamp() WHERE name = $1`, accessapp.ConsumerLease); err != nil {
		t.Fatal(err)
	}
	waitReplicaDecision(ctx, t, a, "A", "u-1", "dev-1", "payroll", accessv1.Decision_DECISION_BLOCK)
	if tok, cur, _ := stored(); tok != tok0+2 || cur <= cur0 {
		t.Fatalf("after leading again: token %d, cursor %d; want %d and past %d", tok, cur, tok0+2, cur0)
	}
}
