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

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/internal/suite"
	"github.com/condaccess/condaccess/services/remediation/remediationapp"
)

// TestServeRemediationDatabaseDown: remediation with --database-url keeps its
// store there: a database that does not answer fails the start, and no embedded
// store is created.
func TestServeRemediationDatabaseDown(t *testing.T) {
	dir := t.TempDir()
	o := serveOptions{grpcAddr: "127.0.0.1:0", services: "remediation", dataDir: dir, peers: suite.Peers{Risk: "127.0.0.1:1"},
		databaseURL: "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2", stopTimeout: time.Second}
	s, err := startSuite(context.Background(), o, slog.New(slog.DiscardHandler))
	if err == nil {
		s.Stop()
		t.Fatal("started, want an error")
	}
	if !strings.Contains(err.Error(), "remediationstore: pgdb: connect") {
		t.Fatalf("err = %v, want the store's connection failure", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "remediation", "remediation.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("an embedded remediation store was created (%v)", err)
	}
}

// TestServeRemediationReplicasOnPostgres: two remediation replicas on one database
// (risk in a third process). The first started leads (lease token 1): its consumer
// opens the investigation of an alert. The agent is connected to the other replica:
// an action approved on the leader still reaches it (every replica watches the
// store's event log for its agents' actions), and its result, recorded there, wakes
// the leader's alert resolution (the risk drops to NONE). When the leader stops,
// the other replica takes the lease over (token 2) and its consumer opens the next
// alert's investigation from the stored cursor; no alert is investigated twice.
func TestServeRemediationReplicasOnPostgres(t *testing.T) {
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
			err := db.QueryRowContext(ctx, `SELECT token FROM remediation.leases WHERE name = $1 AND expires_at > clock_timestamp()`, remediationapp.LeaderLease).Scan(&tok)
			if err == nil && tok == want {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("timeout waiting for lease token %d (last %d, %v)", want, tok, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	dial := func(addr string) *grpc.ClientConn {
		t.Helper()
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	start := func(services string, peers suite.Peers) *runningSuite {
		t.Helper()
		o := serveOptions{grpcAddr: "127.0.0.1:0", services: services, dataDir: t.TempDir(), databaseURL: url, peers: peers,
			leaseDuration: 500 * time.Millisecond, stopTimeout: 5 * time.Second}
		s, err := startSuite(ctx, o, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Stop() })
		return s
	}
	riskSuite := start("risk", suite.Peers{})
	risk := riskv1.NewRiskServiceClient(dial(riskSuite.GRPCAddr()))
	leader := start("remediation", suite.Peers{Risk: riskSuite.GRPCAddr()})
	waitToken(1)
	other := start("remediation", suite.Peers{Risk: riskSuite.GRPCAddr()})
	remA := remediationv1.NewRemediationServiceClient(dial(leader.GRPCAddr()))
	remB := remediationv1.NewRemediationServiceClient(dial(other.GRPCAddr()))

	// The agent of dev-1 connects to the replica that does not lead.
	stream, err := remediationv1.NewAgentServiceClient(dial(other.GRPCAddr())).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&remediationv1.ConnectRequest{Kind: &remediationv1.ConnectRequest_Hello{Hello: &remediationv1.AgentHello{
		DeviceId: "dev-1", AgentVersion: "test", DetectionRoots: []string{"/watch"}}}}); err != nil {
		t.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.GetAck() == nil {
		t.Fatalf("first message = %v, %v; want the ack", m, err)
	}
	report := func(alertID, device string) {
		t.Helper()
		_, err := risk.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{AlertId: alertID, DeviceId: device,
			Severity: commonv1.Severity_SEVERITY_HIGH, Title: "Malicious file",
			Evidence: []*commonv1.Evidence{{Kind: &commonv1.Evidence_File{File: &commonv1.FileEvidence{
				Path: "/watch/" + alertID + ".exe", Sha256: strings.Repeat("ab", 32), SizeBytes: 68}}}}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	// waitAction waits for the device's one action in state st, listed on c.
	waitAction := func(c remediationv1.RemediationServiceClient, device string, st remediationv1.ActionState) *remediationv1.Action {
		t.Helper()
		for {
			resp, err := c.ListActions(ctx, &remediationv1.ListActionsRequest{DeviceId: device})
			if err == nil && len(resp.GetActions()) == 1 && resp.GetActions()[0].GetState() == st {
				return resp.GetActions()[0]
			}
			if ctx.Err() != nil {
				t.Fatalf("timeout waiting for %s's action in %v (last %v, %v)", device, st, resp.GetActions(), err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	report("a-1", "dev-1")
	// Reported in development mode, the alert is not the device's own: its action waits.
	act := waitAction(remA, "dev-1", remediationv1.ActionState_ACTION_STATE_PENDING_APPROVAL)
	if _, err := remA.ApproveAction(ctx, &remediationv1.ApproveActionRequest{ActionId: act.GetActionId(), Comment: "go"}); err != nil {
		t.Fatalf("approve on the leader: %v", err)
	}
	m, err := stream.Recv()
	if err != nil || m.GetCommand().GetActionId() != act.GetActionId() {
		t.Fatalf("agent on the other replica got %v, %v; want the command of %s", m, err, act.GetActionId())
	}
	if err := stream.Send(&remediationv1.ConnectRequest{Kind: &remediationv1.ConnectRequest_Result{Result: &remediationv1.ActionResult{
		ActionId: act.GetActionId(), Status: remediationv1.ActionResultStatus_ACTION_RESULT_STATUS_SUCCEEDED, Message: "quarantined", QuarantineId: "q-1"}}}); err != nil {
		t.Fatal(err)
	}
	waitAction(remA, "dev-1", remediationv1.ActionState_ACTION_STATE_SUCCEEDED)
	for {
		resp, err := risk.GetDeviceRisk(ctx, &riskv1.GetDeviceRiskRequest{DeviceId: "dev-1"})
		if err == nil && resp.GetDeviceRisk().GetLevel() == commonv1.RiskLevel_RISK_LEVEL_NONE {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("timeout waiting for the leader to resolve a-1 (risk %v, %v)", resp.GetDeviceRisk(), err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Failover: the leader stops; the other replica leads and consumes on.
	if err := leader.Stop(); err != nil {
		t.Fatalf("stop the leader: %v", err)
	}
	waitToken(2)
	report("a-2", "dev-2")
	waitAction(remB, "dev-2", remediationv1.ActionState_ACTION_STATE_PENDING_APPROVAL)
	resp, err := remB.ListInvestigations(ctx, &remediationv1.ListInvestigationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	perAlert := map[string]int{}
	for _, inv := range resp.GetInvestigations() {
		for _, a := range inv.GetAlertIds() {
			perAlert[a]++
		}
	}
	if len(resp.GetInvestigations()) != 2 || perAlert["a-1"] != 1 || perAlert["a-2"] != 1 {
		t.Fatalf("investigations = %v, want one for a-1 and one for a-2", resp.GetInvestigations())
	}
}
