package integration

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/integration/harness"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/peers"
	"github.com/condaccess/condaccess/internal/pgtest"
)

// TestComplianceFollowsRiskReplicaList runs two risk replicas (`serve --services
// risk --database-url`) on one PostgreSQL and a compliance process given both as
// `--risk-addr r0,r1`. The admin client dials the same list. Each replica is
// SIGKILLed in turn (the second kill certainly breaks compliance's risk watch,
// which then fails over to the restarted replica): alerts reported and resolved
// through the list keep reaching a live replica, and compliance keeps following
// the risk state, NONCOMPLIANT on a HIGH alert and COMPLIANT once it is resolved.
// With mutual TLS the list names one replica by IP and the other as localhost: each
// replica's certificate is verified for its own entry.
func TestComplianceFollowsRiskReplicaList(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: starts real processes")
	}
	for _, mode := range []string{"plaintext", "mutual TLS"} {
		t.Run(mode, func(t *testing.T) { complianceFollowsRiskReplicaList(t, mode == "mutual TLS") })
	}
}

func complianceFollowsRiskReplicaList(t *testing.T, tlsOn bool) {
	url := pgtest.URL(t)
	bin, err := harness.Build()
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	dir := t.TempDir()
	addrs, err := harness.FreeAddrs(3)
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none"}
	riskList := addrs[0] + "," + addrs[1]
	admin := grpc.WithTransportCredentials(insecure.NewCredentials())
	sensor := admin
	var cliTLS []string
	tlsArgs := func(string) []string { return nil }
	if tlsOn {
		certs := filepath.Join(dir, "certs")
		if out, err := exec.Command(bin.Condaccess, "dev-certs", "--out", certs).CombinedOutput(); err != nil {
			t.Fatalf("dev-certs: %v: %s", err, out)
		}
		pem := func(name string) string { return filepath.Join(certs, name+".pem") }
		key := func(name string) string { return filepath.Join(certs, name+"-key.pem") }
		tlsArgs = func(svc string) []string {
			a := []string{"--tls-cert", pem(svc), "--tls-key", key(svc), "--tls-client-ca", pem("ca"), "--device-ca-cert", pem("device-ca")}
			if svc == "compliance" {
				a = append(a, "--device-ca-key", key("device-ca"))
			}
			return a
		}
		dial := func(role string) grpc.DialOption {
			o, err := auth.DialOption(auth.ClientConfig{CAFile: pem("ca"), CertFile: pem(role), KeyFile: key(role)})
			if err != nil {
				t.Fatal(err)
			}
			return o
		}
		admin, sensor = dial("admin"), dial("sensor")
		cliTLS = []string{"--tls-ca", pem("ca"), "--tls-cert", pem("admin"), "--tls-key", key("admin")}
		// One replica by IP, the other by name: each certificate is checked for its entry.
		_, port, _ := net.SplitHostPort(addrs[1])
		riskList = addrs[0] + ",localhost:" + port
	}
	var risks []*harness.Process
	for i := range 2 {
		risks = append(risks, &harness.Process{
			Name: fmt.Sprint("risk-", i), Path: bin.Condaccess, GRPCAddr: addrs[i], HealthService: "condaccess.risk.v1.RiskService", Creds: admin,
			Env:     append([]string{"CONDACCESS_DATABASE_URL=" + url}, env...),
			LogPath: filepath.Join(dir, fmt.Sprint("risk-", i, ".log")),
			Args: append([]string{"serve", "--services", "risk", "--grpc-addr", addrs[i], "--http-addr", "",
				"--data-dir", filepath.Join(dir, fmt.Sprint("risk-data-", i)), "--stop-timeout", "2s", "--risk-progress-interval", "100ms"},
				tlsArgs("risk")...),
		})
	}
	comp := &harness.Process{
		Name: "compliance", Path: bin.Condaccess, GRPCAddr: addrs[2], HealthService: "condaccess.compliance.v1.ComplianceService", Creds: admin,
		Env: env, LogPath: filepath.Join(dir, "compliance.log"),
		Args: append([]string{"serve", "--services", "compliance", "--grpc-addr", addrs[2], "--http-addr", "",
			"--data-dir", filepath.Join(dir, "compliance-data"), "--stop-timeout", "2s", "--risk-addr", riskList},
			tlsArgs("compliance")...),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for _, p := range append(risks, comp) {
		t.Cleanup(func() {
			_ = p.Stop(5 * time.Second)
			if t.Failed() {
				t.Logf("%s log:\n%s", p.Name, p.Logs(8<<10))
			}
		})
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		if err := p.WaitHealthy(ctx); err != nil {
			t.Fatal(err)
		}
	}

	riskConn, err := peers.Dial(riskList, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer riskConn.Close()
	rc := riskv1.NewRiskServiceClient(riskConn)
	sensorConn, err := peers.Dial(riskList, sensor)
	if err != nil {
		t.Fatal(err)
	}
	defer sensorConn.Close()
	reporter := riskv1.NewRiskServiceClient(sensorConn)
	compConn, err := grpc.NewClient(addrs[2], admin)
	if err != nil {
		t.Fatal(err)
	}
	defer compConn.Close()
	if _, err := compliancev1.NewCompliancePolicyServiceClient(compConn).CreateCompliancePolicy(ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
		PolicyId: "max-medium", DisplayName: "max medium", MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_MEDIUM,
		Assignment: &compliancev1.PolicyAssignment{AllDevices: true}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := compliancev1.NewDeviceServiceClient(compConn).EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
		DeviceId: "dev-1", DisplayName: "laptop", Platform: commonv1.Platform_PLATFORM_WINDOWS, OsVersion: "10.0.22631", OwnerUserId: "u-1"}}); err != nil {
		t.Fatal(err)
	}
	cc := compliancev1.NewComplianceServiceClient(compConn)
	waitState := func(step string, want commonv1.ComplianceState) {
		t.Helper()
		var last commonv1.ComplianceState
		for ctx.Err() == nil {
			r, err := cc.GetDeviceCompliance(ctx, &compliancev1.GetDeviceComplianceRequest{DeviceId: "dev-1"})
			if err != nil {
				t.Fatalf("%s: GetDeviceCompliance: %v", step, err)
			}
			if last = r.GetDeviceCompliance().GetState(); last == want {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("%s: compliance state %v, want %v", step, last, want)
	}
	// through retries one call on UNAVAILABLE: a replica that has just died can be
	// picked once before the client has seen its connection close.
	through := func(step string, call func() error) {
		t.Helper()
		for {
			err := call()
			if err == nil {
				return
			}
			if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
				t.Fatalf("%s: %v", step, err)
			}
			t.Logf("%s: %v; again", step, err)
		}
	}
	alert := func(id string) {
		through("report "+id, func() error {
			_, err := reporter.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{AlertId: id, DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "malicious file"}})
			return err
		})
		waitState("after "+id, commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT)
	}
	resolve := func(id string) {
		through("resolve "+id, func() error {
			_, err := rc.ResolveAlert(ctx, &riskv1.ResolveAlertRequest{AlertId: id, Classification: riskv1.AlertClassification_ALERT_CLASSIFICATION_TRUE_POSITIVE, Comment: "cleaned"})
			return err
		})
		waitState("after resolving "+id, commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT)
	}

	waitState("enrolled", commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT)
	alert("a-1")
	for i, victim := range risks {
		if err := victim.Kill(); err != nil {
			t.Fatal(err)
		}
		resolve(fmt.Sprintf("a-%d", i+1))
		alert(fmt.Sprintf("a-%d", i+2))
		if err := victim.Start(); err != nil {
			t.Fatal(err)
		}
		if err := victim.WaitHealthy(ctx); err != nil {
			t.Fatal(err)
		}
	}
	resolve("a-3")

	// The CLI binary with the same list, one replica down: it reads from the other.
	if err := risks[0].Kill(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, bin.Condaccess, append([]string{"alerts", "get", "a-3", "--risk-addr", riskList, "-o", "json"}, cliTLS...)...).CombinedOutput()
	got := &riskv1.Alert{}
	if err == nil {
		err = protojson.Unmarshal(out, got)
	}
	if err != nil || got.GetAlertId() != "a-3" || got.GetStatus() != riskv1.AlertStatus_ALERT_STATUS_RESOLVED {
		t.Fatalf("condaccess alerts get --risk-addr %s with %s down: %v\n%q", riskList, addrs[0], err, out)
	}
	if logs := comp.Logs(64 << 10); !strings.Contains(logs, "event feed broken, reconnecting") {
		t.Errorf("compliance never reconnected its risk watch, so no failover was exercised:\n%s", logs)
	}
}
