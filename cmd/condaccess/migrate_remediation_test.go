package main

import (
	"bytes"
	"context"
	"database/sql"
	"log/slog"
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
	"github.com/condaccess/condaccess/services/remediation/remediationgrpc"
	"github.com/condaccess/condaccess/services/remediation/remediationstore"
)

// TestMigrateRemediation: an embedded install (risk and remediation on SQLite) that
// opened an investigation is migrated with `condaccess migrate`; on PostgreSQL the
// service continues: the investigation, the risk event cursor and the event log
// with its revisions are there, the next alert opens the next investigation at the
// next revisions (gap-free from 1), and the first alert is not investigated again.
// A second migrate into the same database is refused.
func TestMigrateRemediation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	url := pgtest.URL(t)
	type clients struct {
		risk riskv1.RiskServiceClient
		rem  remediationv1.RemediationServiceClient
	}
	start := func(databaseURL string) (*runningSuite, clients) {
		t.Helper()
		o := serveOptions{grpcAddr: "127.0.0.1:0", services: "risk,remediation", dataDir: dir, databaseURL: databaseURL, stopTimeout: 5 * time.Second}
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
		return s, clients{riskv1.NewRiskServiceClient(conn), remediationv1.NewRemediationServiceClient(conn)}
	}
	report := func(c clients, alertID, device string) {
		t.Helper()
		if _, err := c.risk.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{AlertId: alertID, DeviceId: device,
			Severity: commonv1.Severity_SEVERITY_HIGH, Title: "Malicious file",
			Evidence: []*commonv1.Evidence{{Kind: &commonv1.Evidence_File{File: &commonv1.FileEvidence{
				Path: "/watch/" + alertID, Sha256: strings.Repeat("cd", 32), SizeBytes: 68}}}}}}); err != nil {
			t.Fatal(err)
		}
	}
	// investigations waits until the listing has n investigations and returns them.
	investigations := func(c clients, n int) []*remediationv1.Investigation {
		t.Helper()
		for {
			resp, err := c.rem.ListInvestigations(ctx, &remediationv1.ListInvestigationsRequest{})
			if err == nil && len(resp.GetInvestigations()) == n {
				return resp.GetInvestigations()
			}
			if ctx.Err() != nil {
				t.Fatalf("timeout waiting for %d investigations (%v, %v)", n, resp.GetInvestigations(), err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// revisions reads the investigation events from revision 0 up to the head.
	revisions := func(c clients) []int64 {
		t.Helper()
		wctx, wcancel := context.WithCancel(ctx)
		defer wcancel()
		st, err := c.rem.WatchInvestigationEvents(wctx, &remediationv1.WatchInvestigationEventsRequest{StartRevision: 0})
		if err != nil {
			t.Fatal(err)
		}
		var revs []int64
		for {
			m, err := st.Recv()
			if err != nil {
				t.Fatalf("watch: %v", err)
			}
			if p := m.GetProgress(); p != nil {
				if len(revs) > 0 && p.GetRevision() == revs[len(revs)-1] {
					return revs
				}
				continue
			}
			revs = append(revs, m.GetEvent().GetRevision())
		}
	}

	sqlite, c := start("")
	report(c, "a-1", "dev-1")
	before := investigations(c, 1)
	beforeRevs := revisions(c)
	if err := sqlite.Stop(); err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	if err := run(ctx, []string{"migrate", "--from-data-dir", dir, "--to", url}, &out, &out); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "remediation: copied 1 investigations, 1 actions") {
		t.Fatalf("output: %s", out.String())
	}
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cursor := func() int64 {
		t.Helper()
		var rev int64
		if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(revision), -1) FROM remediation.consumer_cursor`).Scan(&rev); err != nil {
			t.Fatal(err)
		}
		return rev
	}
	// The cursor as the embedded store kept it (the consumer may have stopped before
	// its first one: then there is none, on both sides).
	src, err := remediationstore.Open(ctx, remediationstore.Options{Path: filepath.Join(dir, "remediation", "remediation.db"), Encode: remediationgrpc.EncodeEvent})
	if err != nil {
		t.Fatal(err)
	}
	want, ok, err := src.Cursor(ctx)
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		want = -1
	}
	copied := cursor()
	if copied != want {
		t.Fatalf("copied risk event cursor = %d, want the embedded store's %d", copied, want)
	}

	_, c = start(url)
	if got := revisions(c); len(got) != len(beforeRevs) || got[len(got)-1] != beforeRevs[len(beforeRevs)-1] {
		t.Fatalf("revisions on PostgreSQL = %v, want those of SQLite %v", got, beforeRevs)
	}
	report(c, "a-2", "dev-2")
	after := investigations(c, 2)
	if after[1].GetInvestigationId() != before[0].GetInvestigationId() || after[0].GetDeviceId() != "dev-2" {
		t.Fatalf("investigations after the flow continued = %v; want dev-2's, then the migrated %s", after, before[0].GetInvestigationId())
	}
	revs := revisions(c)
	for i, r := range revs {
		if r != int64(i+1) {
			t.Fatalf("revisions = %v, want 1..%d without gaps", revs, len(revs))
		}
	}
	if len(revs) <= len(beforeRevs) {
		t.Fatalf("revisions = %v, want more than the migrated %v", revs, beforeRevs)
	}
	for cursor() <= copied {
		if ctx.Err() != nil {
			t.Fatalf("the consumer did not advance the migrated cursor %d", copied)
		}
		time.Sleep(10 * time.Millisecond)
	}

	if err := run(ctx, []string{"migrate", "--from-data-dir", dir, "--to", url}, &out, &out); err == nil {
		t.Fatal("a second migrate into the same database succeeded")
	}
	// (risk's copy refuses first; remediation's own refusal is TestCopyToPG's.)
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM remediation.investigations`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("investigations after a refused migrate = %d, %v; want 2", n, err)
	}
}
