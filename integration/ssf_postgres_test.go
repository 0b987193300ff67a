package integration

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/condaccess/condaccess/integration/harness"
	"github.com/condaccess/condaccess/internal/pgtest"
)

// TestSharedSignalsReplicasOnPostgresSurviveSIGKILL runs two serve processes on one
// database, each serving the Shared Signals endpoints from the schema ssf, with a push
// stream to a flaky receiver, and SIGKILLs the holder of the "ssf" lease twice along the
// way (restarting it): the other replica takes over delivery, and every compliance and
// risk change still arrives as exactly one SET, a redelivered one under the same jti
// and bytes.
func TestSharedSignalsReplicasOnPostgresSurviveSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: starts real processes")
	}
	url := pgtest.URL(t)
	bin, err := harness.Build()
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var procs []*harness.Process
	var grpcAddrs, httpAddrs []string
	for i := range 2 {
		grpcAddr, _ := harness.FreeAddr()
		httpAddr, _ := harness.FreeAddr()
		p := &harness.Process{
			Name: fmt.Sprint("serve-", i), Path: bin.Condaccess, Env: []string{"OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none"},
			GRPCAddr: grpcAddr, HealthService: "condaccess.compliance.v1.ComplianceService", LogPath: filepath.Join(dir, fmt.Sprintf("serve-%d.log", i)),
			Args: []string{"serve", "--grpc-addr", grpcAddr, "--http-addr", httpAddr, "--data-dir", filepath.Join(dir, fmt.Sprint("data-", i)),
				"--database-url", url, "--lease-duration", "1s", "--stop-timeout", "2s",
				"--ssf-push-allow-cidr", "127.0.0.0/8"}, // the test's receiver is on loopback
		}
		t.Cleanup(func() {
			_ = p.Stop(5 * time.Second)
			if t.Failed() {
				t.Logf("%s log:\n%s", p.Name, p.Logs(16<<10))
			}
		})
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		if err := p.WaitHealthy(ctx); err != nil {
			t.Fatal(err)
		}
		procs, grpcAddrs, httpAddrs = append(procs, p), append(grpcAddrs, grpcAddr), append(httpAddrs, httpAddr)
	}
	out, err := exec.Command(bin.Condaccess, "ssf", "receivers", "add", "--database-url", url, "https://idp.example/caep").Output()
	if err != nil {
		t.Fatalf("ssf receivers add: %v", err)
	}
	token := strings.TrimSpace(string(out))

	// The receiver reads the keys from replica 1; replica 0 creates the stream.
	rx := &flakyReceiver{t: t, jwksURL: "http://" + httpAddrs[1] + "/ssf/jwks.json", rnd: rand.New(rand.NewPCG(3, 4)),
		token: map[string]string{}, txnJTI: map[string]string{}, typeOf: map[string]string{}, accepts: map[string]int{}, tries: map[string]int{}}
	rxSrv := httptest.NewServer(rx)
	defer rxSrv.Close()
	body := `{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"` + rxSrv.URL + `"},"events_requested":["` +
		caepCompliance + `","` + caepRisk + `","` + caepSession + `"]}`
	req, _ := http.NewRequest("POST", "http://"+httpAddrs[0]+"/ssf/stream", bytes.NewBufferString(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create stream: %s", resp.Status)
	}

	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// The test's calls go to whichever replica is up (a killed one is restarted).
	conn, err := grpc.NewClient("passthrough:///"+grpcAddrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.WaitForReady(true)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	kills := 0
	driveAndCheckSETs(ctx, t, conn, rx, func() {
		var leader *harness.Process
		for leader == nil {
			p, err := leaderOf(ctx, db, "ssf", procs)
			if err != nil {
				t.Fatal(err)
			}
			leader = p
			if leader == nil {
				select {
				case <-ctx.Done():
					t.Fatal("no replica holds the ssf lease")
				case <-time.After(50 * time.Millisecond): // polling the leases table
				}
			}
		}
		if err := leader.Kill(); err != nil {
			t.Fatal(err)
		}
		kills++
		if err := leader.Start(); err != nil {
			t.Fatal(err)
		}
		if err := leader.WaitHealthy(ctx); err != nil {
			t.Fatal(err)
		}
	})
	if kills != 2 {
		t.Fatalf("%d lease holders killed, want 2", kills)
	}
}
