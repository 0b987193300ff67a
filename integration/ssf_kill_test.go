package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/integration/harness"
)

const (
	caepCompliance = "https://schemas.openid.net/secevent/caep/event-type/device-compliance-change"
	caepRisk       = "https://schemas.openid.net/secevent/caep/event-type/risk-level-change"
	caepSession    = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
)

// flakyReceiver verifies every pushed SET against the transmitter's JWKS with go-jose and
// refuses about a third of them with 503, so that retries and restarts overlap deliveries.
type flakyReceiver struct {
	t       *testing.T
	jwksURL string
	mu      sync.Mutex
	keys    *jose.JSONWebKeySet
	rnd     *rand.Rand
	token   map[string]string // jti -> token (every attempt must carry the same one)
	txnJTI  map[string]string // txn -> jti of the accepted SET
	typeOf  map[string]string // txn -> event type
	accepts map[string]int    // jti -> accepted deliveries
	tries   map[string]int    // jti -> delivery attempts
	errs    []string
}

func (r *flakyReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	fail := func(f string, a ...any) {
		r.errs = append(r.errs, fmt.Sprintf(f, a...))
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"err":"invalid_request"}`)
	}
	if r.keys == nil {
		resp, err := http.Get(r.jwksURL)
		if err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		defer resp.Body.Close()
		r.keys = &jose.JSONWebKeySet{}
		if err := json.NewDecoder(resp.Body).Decode(r.keys); err != nil {
			r.keys = nil
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
	}
	jws, err := jose.ParseSigned(string(b), []jose.SignatureAlgorithm{jose.RS256})
	if err != nil || jws.Signatures[0].Header.ExtraHeaders[jose.HeaderType] != "secevent+jwt" {
		fail("not a SET: %v", err)
		return
	}
	ks := r.keys.Key(jws.Signatures[0].Header.KeyID)
	if len(ks) != 1 {
		fail("unknown kid")
		return
	}
	payload, err := jws.Verify(ks[0])
	if err != nil {
		fail("signature: %v", err)
		return
	}
	var c struct {
		Jti    string                     `json:"jti"`
		Txn    string                     `json:"txn"`
		Events map[string]json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(payload, &c); err != nil || len(c.Events) != 1 {
		fail("claims %s", payload)
		return
	}
	if prev, ok := r.token[c.Jti]; ok && prev != string(b) {
		fail("jti %s resent with a different token", c.Jti)
		return
	}
	r.token[c.Jti] = string(b)
	r.tries[c.Jti]++
	if r.rnd.IntN(3) == 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	if j, ok := r.txnJTI[c.Txn]; ok && j != c.Jti {
		fail("txn %s delivered as two SETs (%s and %s)", c.Txn, j, c.Jti)
		return
	}
	r.txnJTI[c.Txn] = c.Jti
	for typ := range c.Events {
		r.typeOf[c.Txn] = typ
	}
	r.accepts[c.Jti]++
	w.WriteHeader(http.StatusAccepted)
}

// TestSharedSignalsSurviveSIGKILL runs serve as a process with a push stream to a flaky
// receiver, drives alerts on and off dev-1, and SIGKILLs and restarts serve twice along
// the way. Every compliance and risk change must arrive as exactly one SET (one jti per
// upstream event; a SET redelivered after a kill carries the same jti and bytes).
func TestSharedSignalsSurviveSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: starts real processes")
	}
	bin, err := harness.Build()
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	dir := t.TempDir()
	grpcAddr, _ := harness.FreeAddr()
	httpAddr, _ := harness.FreeAddr()
	p := &harness.Process{
		Name: "serve", Path: bin.Condaccess, Env: []string{"OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none"},
		GRPCAddr: grpcAddr, HealthService: "condaccess.compliance.v1.ComplianceService", LogPath: filepath.Join(dir, "serve.log"),
		Args: []string{"serve", "--grpc-addr", grpcAddr, "--http-addr", httpAddr, "--data-dir", filepath.Join(dir, "data"), "--stop-timeout", "2s",
			"--ssf-push-allow-cidr", "127.0.0.0/8"}, // the test's receiver is on loopback
	}
	t.Cleanup(func() {
		_ = p.Stop(5 * time.Second)
		if t.Failed() {
			t.Logf("serve log:\n%s", p.Logs(16<<10))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin.Condaccess, "ssf", "receivers", "add", "--data-dir", filepath.Join(dir, "data"), "https://idp.example/caep").Output()
	if err != nil {
		t.Fatalf("ssf receivers add: %v", err)
	}
	token := strings.TrimSpace(string(out))

	rx := &flakyReceiver{t: t, jwksURL: "http://" + httpAddr + "/ssf/jwks.json", rnd: rand.New(rand.NewPCG(1, 2)),
		token: map[string]string{}, txnJTI: map[string]string{}, typeOf: map[string]string{}, accepts: map[string]int{}, tries: map[string]int{}}
	rxSrv := httptest.NewServer(rx)
	defer rxSrv.Close()
	body := `{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"` + rxSrv.URL + `"},"events_requested":["` +
		caepCompliance + `","` + caepRisk + `","` + caepSession + `"]}`
	req, _ := http.NewRequest("POST", "http://"+httpAddr+"/ssf/stream", bytes.NewBufferString(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create stream: %s", resp.Status)
	}

	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	driveAndCheckSETs(ctx, t, conn, rx, func() {
		if err := p.Kill(); err != nil {
			t.Fatal(err)
		}
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		if err := p.WaitHealthy(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// driveAndCheckSETs puts dev-1 through six rounds of an alert and its resolution over
// conn, calling kill in the second and fifth, and then checks that rx received every
// compliance and risk change as exactly one SET (one jti per upstream event).
func driveAndCheckSETs(ctx context.Context, t *testing.T, conn *grpc.ClientConn, rx *flakyReceiver, kill func()) {
	t.Helper()
	risk := riskv1.NewRiskServiceClient(conn)
	comp := compliancev1.NewComplianceServiceClient(conn)
	if _, err := compliancev1.NewCompliancePolicyServiceClient(conn).CreateCompliancePolicy(ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
		PolicyId: "max-medium", DisplayName: "Device risk at or under medium",
		MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_MEDIUM, Assignment: &compliancev1.PolicyAssignment{AllDevices: true},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := compliancev1.NewDeviceServiceClient(conn).EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
		DeviceId: "dev-1", DisplayName: "Laptop 1", Platform: commonv1.Platform_PLATFORM_WINDOWS, OsVersion: "10.0.22631", OwnerUserId: "u-1",
	}}); err != nil {
		t.Fatal(err)
	}
	waitState := func(want commonv1.ComplianceState) {
		t.Helper()
		for {
			r, err := comp.GetDeviceCompliance(ctx, &compliancev1.GetDeviceComplianceRequest{DeviceId: "dev-1"})
			if err == nil && r.GetDeviceCompliance().GetState() == want {
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("dev-1 compliance: %v %v, want %v", r.GetDeviceCompliance().GetState(), err, want)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	const rounds = 6
	for i := range rounds {
		id := fmt.Sprintf("a-%d", i)
		if _, err := risk.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
			AlertId: id, DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "Malicious file"}}); err != nil {
			t.Fatal(err)
		}
		waitState(commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT)
		if i == 1 || i == 4 {
			kill()
		}
		if _, err := risk.ResolveAlert(ctx, &riskv1.ResolveAlertRequest{AlertId: id,
			Classification: riskv1.AlertClassification_ALERT_CLASSIFICATION_TRUE_POSITIVE}); err != nil {
			t.Fatal(err)
		}
		waitState(commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT)
	}

	// What should have been sent: every compliance change across compliant/not-compliant
	// and every risk change across LOW/MEDIUM/HIGH, read back from the event streams.
	want := map[string]string{}
	cs, err := comp.WatchComplianceEvents(ctx, &compliancev1.WatchComplianceEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	head, err := comp.ListDeviceCompliance(ctx, &compliancev1.ListDeviceComplianceRequest{})
	if err != nil {
		t.Fatal(err)
	}
	notCompliant := func(s commonv1.ComplianceState) bool {
		return s == commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT
	}
	for rev := int64(0); rev < head.GetRevision(); {
		m, err := cs.Recv()
		if err != nil {
			t.Fatal(err)
		}
		ev := m.GetEvent()
		if ev == nil {
			continue
		}
		rev = ev.GetRevision()
		if c := ev.GetDeviceComplianceChanged(); c != nil && c.GetDeviceCompliance().GetState() != commonv1.ComplianceState_COMPLIANCE_STATE_UNSPECIFIED &&
			notCompliant(c.GetDeviceCompliance().GetState()) != notCompliant(c.GetPreviousState()) {
			want[fmt.Sprintf("compliance:%d", rev)] = caepCompliance
		}
	}
	rs, err := risk.WatchRiskEvents(ctx, &riskv1.WatchRiskEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	rhead, err := risk.ListDeviceRisks(ctx, &riskv1.ListDeviceRisksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	low := func(l commonv1.RiskLevel) commonv1.RiskLevel { return max(l, commonv1.RiskLevel_RISK_LEVEL_LOW) }
	for rev := int64(0); rev < rhead.GetRevision(); {
		m, err := rs.Recv()
		if err != nil {
			t.Fatal(err)
		}
		ev := m.GetEvent()
		if ev == nil {
			continue
		}
		rev = ev.GetRevision()
		if c := ev.GetDeviceRiskChanged(); c != nil && low(c.GetDeviceRisk().GetLevel()) != low(c.GetPreviousLevel()) {
			want[fmt.Sprintf("risk:%d", rev)] = caepRisk
		}
	}
	if len(want) < 2*rounds*2 {
		t.Fatalf("only %d expected SETs from %d rounds", len(want), rounds)
	}
	for {
		rx.mu.Lock()
		missing := 0
		for txn := range want {
			if _, ok := rx.txnJTI[txn]; !ok {
				missing++
			}
		}
		errs := rx.errs
		rx.mu.Unlock()
		if len(errs) > 0 {
			t.Fatalf("receiver refused SETs: %v", errs)
		}
		if missing == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d of %d SETs never arrived", missing, len(want))
		case <-time.After(20 * time.Millisecond):
		}
	}
	rx.mu.Lock()
	defer rx.mu.Unlock()
	for txn, typ := range rx.typeOf {
		if strings.HasPrefix(txn, "access:") {
			if typ != caepSession {
				t.Errorf("%s is %s", txn, typ)
			}
			continue
		}
		if want[txn] != typ {
			t.Errorf("unexpected SET %s (%s)", txn, typ)
		}
	}
	retried := 0
	for _, n := range rx.tries {
		if n > 1 {
			retried++
		}
	}
	if retried == 0 {
		t.Error("no SET was refused and delivered again: the retry path was not exercised")
	}
	t.Logf("%d SETs expected and delivered (%d after a refused attempt), %d session-revoked, %d jtis seen", len(want), retried, len(rx.typeOf)-len(want), len(rx.token))
}
