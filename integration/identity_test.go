package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/integration/harness"
	"github.com/condaccess/condaccess/internal/agent"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/auth"
)

// enrollAgent creates an enrollment token for deviceID and runs
// `condaccess-agent enroll` against the compliance service; it returns the state
// folder.
func enrollAgent(t *testing.T, s *harness.Suite, deviceID string) string {
	t.Helper()
	tok, err := s.Identities.CreateEnrollmentToken(t.Context(), &compliancev1.CreateEnrollmentTokenRequest{DeviceId: deviceID})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(s.Dir, "state-"+deviceID)
	out, err := exec.Command(s.Bin.Agent, "enroll", "--server", s.Addr("compliance"), "--ca", s.CertFile("ca"),
		"--token", tok.GetToken(), "--state-dir", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("condaccess-agent enroll: %v: %s", err, out)
	}
	fi, err := os.Stat(filepath.Join(dir, "device-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("device-key.pem mode %v, want 0600", fi.Mode().Perm())
	}
	// The token is single use.
	out, err = exec.Command(s.Bin.Agent, "enroll", "--server", s.Addr("compliance"), "--ca", s.CertFile("ca"),
		"--token", tok.GetToken(), "--state-dir", dir+"-again").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "ENROLLMENT_TOKEN_INVALID") && !strings.Contains(string(out), "Unauthenticated") {
		t.Errorf("second enrollment with the same token: %v: %s", err, out)
	}
	return dir
}

// deviceConn dials a service with the device certificate of state folder dir.
func deviceConn(t *testing.T, s *harness.Suite, dir, service string) *grpc.ClientConn {
	t.Helper()
	opt, err := auth.DialOption(auth.ClientConfig{CAFile: s.CertFile("ca"), CertFile: filepath.Join(dir, "device.pem"), KeyFile: filepath.Join(dir, "device-key.pem")})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(s.Addr(service), opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func lowAlert(id, deviceID string) *riskv1.Alert {
	return &riskv1.Alert{AlertId: id, DeviceId: deviceID, Severity: commonv1.Severity_SEVERITY_LOW, Title: "test " + id,
		Category: "Test", DetectionSource: "integration"}
}

func wantStatus(t *testing.T, what string, err error, code codes.Code, reason string) {
	t.Helper()
	if status.Code(err) != code || reason != "" && apierr.Reason(err) != reason {
		t.Errorf("%s: %v (reason %q), want %v %s", what, err, apierr.Reason(err), code, reason)
	}
}

// TestDeviceBoundAuthority plays the audit's attacks against the suite in mutual
// TLS, each service its own process with its own service certificate: the
// certificate of dev-1 reporting for dev-2, connecting as dev-2; a static sensor
// certificate connecting as a device. Each is refused and dev-2 is unchanged.
func TestDeviceBoundAuthority(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: starts real processes")
	}
	s := harness.StartSuite(t, harness.Options{TLS: true})
	s.Setup(t)
	s.Enroll(t, "dev-1", harness.AutoGroup)
	s.Enroll(t, "dev-2", harness.AutoGroup)
	dir := enrollAgent(t, s, "dev-1")
	ctx := t.Context()
	risk := riskv1.NewRiskServiceClient(deviceConn(t, s, dir, "risk"))

	t.Run("report for another device", func(t *testing.T) {
		_, err := risk.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{AlertId: "a-forged", DeviceId: "dev-2",
			Severity: commonv1.Severity_SEVERITY_HIGH, Title: "forged", Category: "Malware", DetectionSource: "attacker"}})
		wantStatus(t, "ReportAlert for dev-2", err, codes.PermissionDenied, auth.ReasonDeviceMismatch)
		_, err = risk.ReportAlerts(ctx, &riskv1.ReportAlertsRequest{Alerts: []*riskv1.Alert{lowAlert("a-own-1", "dev-1"), lowAlert("a-forged-2", "dev-2")}})
		wantStatus(t, "ReportAlerts with one alert for dev-2", err, codes.PermissionDenied, auth.ReasonDeviceMismatch)
		// Nothing changed: not even dev-1's alert of the refused batch.
		for _, id := range []string{"a-forged", "a-own-1", "a-forged-2"} {
			_, err := s.Risk.GetAlert(ctx, &riskv1.GetAlertRequest{AlertId: id})
			wantStatus(t, "GetAlert "+id, err, codes.NotFound, "")
		}
		r, err := s.Risk.GetDeviceRisk(ctx, &riskv1.GetDeviceRiskRequest{DeviceId: "dev-2"})
		if err == nil && r.GetDeviceRisk().GetLevel() > commonv1.RiskLevel_RISK_LEVEL_NONE {
			t.Errorf("dev-2 risk %v after refused reports", r.GetDeviceRisk())
		}
		c, err := s.Compliance.GetDeviceCompliance(ctx, &compliancev1.GetDeviceComplianceRequest{DeviceId: "dev-2"})
		if err != nil || c.GetDeviceCompliance().GetState() != commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT {
			t.Errorf("dev-2 compliance %v, %v; want COMPLIANT", c.GetDeviceCompliance(), err)
		}
		if d, err := s.Evaluate(ctx, "dev-2"); err != nil || d.GetDecision() != accessv1.Decision_DECISION_ALLOW {
			t.Errorf("dev-2 access %v, %v; want ALLOW", d.GetDecision(), err)
		}
	})
	t.Run("report for itself", func(t *testing.T) {
		if _, err := risk.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: lowAlert("a-own", "dev-1")}); err != nil {
			t.Fatalf("dev-1 reporting for itself: %v", err)
		}
	})
	t.Run("connect as another device", func(t *testing.T) {
		sensor, err := s.DialOption("sensor")
		if err != nil {
			t.Fatal(err)
		}
		sensorConn, err := grpc.NewClient(s.Addr("remediation"), sensor)
		if err != nil {
			t.Fatal(err)
		}
		defer sensorConn.Close()
		for _, tt := range []struct {
			name   string
			conn   *grpc.ClientConn
			device string
			want   codes.Code
		}{
			{"dev-1 certificate as dev-2", deviceConn(t, s, dir, "remediation"), "dev-2", codes.PermissionDenied},
			{"static sensor certificate as dev-2", sensorConn, "dev-2", codes.PermissionDenied},
			{"dev-1 certificate as dev-1", deviceConn(t, s, dir, "remediation"), "dev-1", codes.OK},
		} {
			t.Run(tt.name, func(t *testing.T) {
				err := connectOnce(ctx, remediationv1.NewAgentServiceClient(tt.conn), tt.device)
				wantStatus(t, "Connect", err, tt.want, map[codes.Code]string{codes.PermissionDenied: auth.ReasonDeviceMismatch}[tt.want])
			})
		}
	})
	t.Run("device may not enroll devices or change owners", func(t *testing.T) {
		devices := compliancev1.NewDeviceServiceClient(deviceConn(t, s, dir, "compliance"))
		_, err := devices.EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{DeviceId: "dev-9", Platform: commonv1.Platform_PLATFORM_LINUX}})
		wantStatus(t, "EnrollDevice by a device", err, codes.PermissionDenied, auth.ReasonRoleNotAllowed)
	})
	t.Run("static sensor's alert waits for approval under FULL automation", func(t *testing.T) {
		// dev-2 is in a FULL group. A static (non-device) sensor certificate may report
		// for any device, but what it names is not the device's own observation: the
		// action it proposes (a file outside any detection root, hash-pinned or not)
		// waits for an administrator whatever the automation level.
		sensor, err := s.DialOption("sensor")
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient(s.Addr("risk"), sensor)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = riskv1.NewRiskServiceClient(conn).ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
			AlertId: "a-siem", DeviceId: "dev-2", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "SIEM says malicious",
			Category: "Malware", DetectionSource: "siem",
			Evidence: []*commonv1.Evidence{{Kind: &commonv1.Evidence_File{File: &commonv1.FileEvidence{
				Path: "/home/ceo/important.docx", Sha256: strings.Repeat("ab", 32), SizeBytes: 10}}}},
		}})
		if err != nil {
			t.Fatalf("static sensor ReportAlert: %v", err)
		}
		harness.Eventually(t, "the SIEM's action pending approval", func(ctx context.Context) (bool, string) {
			r, err := s.Remediation.ListActions(ctx, &remediationv1.ListActionsRequest{DeviceId: "dev-2"})
			if err != nil {
				return false, err.Error()
			}
			for _, a := range r.GetActions() {
				if a.GetTarget().GetFile().GetPath() != "/home/ceo/important.docx" {
					continue
				}
				if a.GetState() != remediationv1.ActionState_ACTION_STATE_PENDING_APPROVAL {
					t.Fatalf("action on the SIEM's evidence is %v (%q), want PENDING_APPROVAL", a.GetState(), a.GetApprovalReason())
				}
				return true, ""
			}
			return false, fmt.Sprintf("actions %v", r.GetActions())
		})
	})
}

// connectOnce opens the agent channel as device and returns the status of the
// first answer (nil for the ack).
func connectOnce(ctx context.Context, c remediationv1.AgentServiceClient, device string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := c.Connect(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&remediationv1.ConnectRequest{Kind: &remediationv1.ConnectRequest_Hello{Hello: &remediationv1.AgentHello{DeviceId: device}}}); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	m, err := st.Recv()
	if err != nil {
		return err
	}
	if m.GetAck() == nil {
		return fmt.Errorf("first message %v, want an ack", m)
	}
	return nil
}

// TestRevocationReachesEveryService: after RevokeDeviceIdentity the device's next
// call fails on each service within a second (measured), its renewal fails, its
// agent exits non-zero, its sessions are revoked and access blocks it with
// DEVICE_IDENTITY_REVOKED.
func TestRevocationReachesEveryService(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: starts real processes")
	}
	s := harness.StartSuite(t, harness.Options{TLS: true})
	s.Setup(t)
	const dev = "dev-r"
	s.Enroll(t, dev, harness.AutoGroup) // the allowed decision opens a session
	dir := enrollAgent(t, s, dev)
	ag := s.StartAgent(t, harness.AgentOptions{DeviceID: dev, StateDir: dir,
		WatchDir: filepath.Join(s.Dir, "watch"), QuarantineDir: filepath.Join(s.Dir, "quarantine")})
	harness.Eventually(t, "agent connected", func(ctx context.Context) (bool, string) {
		r, err := s.Remediation.ListAgents(ctx, &remediationv1.ListAgentsRequest{})
		if err != nil {
			return false, err.Error()
		}
		for _, a := range r.GetAgents() {
			if a.GetDeviceId() == dev && a.GetHealth() == remediationv1.AgentHealth_AGENT_HEALTH_HEALTHY {
				return true, ""
			}
		}
		return false, fmt.Sprintf("agents %v", r.GetAgents())
	})
	ctx := t.Context()
	sessions, err := s.Access.WatchSessionEvents(ctx, &accessv1.WatchSessionEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// One call per service with the device's certificate, each on its own
	// connection, as the device would make them.
	risk := riskv1.NewRiskServiceClient(deviceConn(t, s, dir, "risk"))
	ids := compliancev1.NewDeviceIdentityServiceClient(deviceConn(t, s, dir, "compliance"))
	acc := accessv1.NewAccessServiceClient(deviceConn(t, s, dir, "access"))
	rem := remediationv1.NewAgentServiceClient(deviceConn(t, s, dir, "remediation"))
	calls := map[string]func(context.Context) error{
		"risk": func(ctx context.Context) error {
			_, err := risk.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: lowAlert("a-probe", dev)})
			return err
		},
		"compliance": func(ctx context.Context) error {
			_, err := ids.ListDeviceIdentities(ctx, &compliancev1.ListDeviceIdentitiesRequest{})
			return err
		},
		"access": func(ctx context.Context) error {
			_, err := acc.EvaluateAccess(ctx, &accessv1.EvaluateAccessRequest{UserId: harness.User, DeviceId: dev, ApplicationId: harness.App})
			return err
		},
		"remediation": func(ctx context.Context) error { return connectOnce(ctx, rem, dev) },
	}
	// Before: the certificate is accepted (the call may still be refused for its
	// role, but never as revoked).
	for name, call := range calls {
		if err := call(ctx); apierr.Reason(err) == auth.ReasonCertificateRevoked {
			t.Fatalf("%s refuses the certificate before the revocation: %v", name, err)
		}
	}

	if _, err := s.Identities.RevokeDeviceIdentity(ctx, &compliancev1.RevokeDeviceIdentityRequest{DeviceId: dev, Reason: "stolen laptop"}); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	// Every service is probed at once, each measured from the revocation's answer.
	type took struct {
		name string
		d    time.Duration
		err  error
	}
	results := make(chan took, len(calls))
	for name, call := range calls {
		go func() {
			for {
				err := call(ctx)
				if status.Code(err) == codes.Unauthenticated && apierr.Reason(err) == auth.ReasonCertificateRevoked {
					results <- took{name: name, d: time.Since(revoked)}
					return
				}
				if time.Since(revoked) > 5*time.Second {
					results <- took{name: name, d: time.Since(revoked), err: err}
					return
				}
				time.Sleep(5 * time.Millisecond) // probe cadence of the measurement, not synchronisation
			}
		}()
	}
	for range calls {
		r := <-results
		if r.err != nil {
			t.Errorf("%s still answers the revoked device after %v: %v", r.name, r.d, r.err)
			continue
		}
		t.Logf("revocation reached %s in %v", r.name, r.d)
		if r.d > time.Second {
			t.Errorf("revocation reached %s in %v, want under 1s", r.name, r.d)
		}
	}
	t.Run("renewal fails", func(t *testing.T) {
		_, err := ids.RenewDeviceCertificate(ctx, &compliancev1.RenewDeviceCertificateRequest{CsrPem: "x"})
		wantStatus(t, "RenewDeviceCertificate", err, codes.Unauthenticated, auth.ReasonCertificateRevoked)
	})
	t.Run("access blocks", func(t *testing.T) {
		r := s.WaitDecision(t, dev, accessv1.Decision_DECISION_BLOCK)
		if !harness.HasReason(r, "DEVICE_IDENTITY_REVOKED") {
			t.Errorf("reasons %v, want DEVICE_IDENTITY_REVOKED", r.GetReasons())
		}
	})
	t.Run("sessions revoked", func(t *testing.T) {
		for {
			m, err := sessions.Recv()
			if err != nil {
				t.Fatalf("no session_revoked for %s: %v", dev, err)
			}
			if r := m.GetEvent().GetSessionRevoked(); r != nil && r.GetSession().GetDeviceId() == dev {
				if r.GetReasonCode() != "DEVICE_IDENTITY_REVOKED" {
					t.Errorf("session revoked with %q, want DEVICE_IDENTITY_REVOKED", r.GetReasonCode())
				}
				return
			}
		}
	})
	t.Run("agent exits non-zero", func(t *testing.T) {
		exited, exitErr := ag.Exited()
		select {
		case <-exited:
		case <-time.After(harness.Wait):
			t.Fatalf("the agent still runs after its identity was revoked:\n%s", s.Logs(4000))
		}
		if exitErr() == nil {
			t.Errorf("agent exited with status 0")
		}
		if !strings.Contains(ag.Logs(4000), "revoked") {
			t.Errorf("agent log does not say it was revoked:\n%s", ag.Logs(4000))
		}
	})
}

// TestAgentRenewsWithoutRestart: with --device-cert-ttl 10s the agent renews at two
// thirds of each lifetime and keeps working, in the same process, for a minute across
// at least five renewals: it stays connected, and a detection after the last renewal (when
// every earlier certificate has expired) still reaches the risk service.
func TestAgentRenewsWithoutRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: starts real processes")
	}
	s := harness.StartSuite(t, harness.Options{TLS: true, ServeArgs: []string{"--device-cert-ttl", "10s"}})
	s.Setup(t)
	const dev = "dev-renew"
	s.Enroll(t, dev, harness.ManualGroup)
	dir := enrollAgent(t, s, dev)
	watch := filepath.Join(s.Dir, "watch")
	ag := s.StartAgent(t, harness.AgentOptions{DeviceID: dev, StateDir: dir, WatchDir: watch, QuarantineDir: filepath.Join(s.Dir, "quarantine")})
	ctx := t.Context()
	serials := map[string]bool{}
	var first string
	// The bar: a minute of work across at least five renewals, one process.
	started := time.Now()
	deadline := started.Add(90 * time.Second)
	for len(serials) < 6 || time.Since(started) < time.Minute { // the enrolled certificate and five renewals, a minute
		if time.Now().After(deadline) {
			t.Fatalf("%d certificates in 90s, want at least 6:\n%s", len(serials), s.Logs(3000))
		}
		r, err := s.Identities.ListDeviceIdentities(ctx, &compliancev1.ListDeviceIdentitiesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range r.GetIdentities() {
			if id.GetDeviceId() == dev && !serials[id.GetSerialNumber()] {
				serials[id.GetSerialNumber()] = true
				if first == "" {
					first = id.GetSerialNumber()
				}
				t.Logf("certificate %d: serial %s, not after %s", len(serials), id.GetSerialNumber(), id.GetExpireTime().AsTime().Format(time.RFC3339))
			}
		}
		if !ag.Running() {
			t.Fatalf("the agent exited:\n%s", ag.Logs(3000))
		}
		time.Sleep(200 * time.Millisecond) // poll cadence
	}
	t.Logf("%d certificates (%d renewals) in %s, one agent process", len(serials), len(serials)-1, time.Since(started).Round(time.Second))
	// Still the first run of the agent, still connected, and detections still reach
	// the risk service with the newest certificate.
	harness.Eventually(t, "agent connected after the renewals", func(ctx context.Context) (bool, string) {
		r, err := s.Remediation.ListAgents(ctx, &remediationv1.ListAgentsRequest{})
		if err != nil {
			return false, err.Error()
		}
		for _, a := range r.GetAgents() {
			if a.GetDeviceId() == dev && a.GetHealth() == remediationv1.AgentHealth_AGENT_HEALTH_HEALTHY {
				return true, ""
			}
		}
		return false, fmt.Sprintf("agents %v", r.GetAgents())
	})
	if err := os.WriteFile(filepath.Join(watch, "eicar.com"), agent.EICAR(), 0o644); err != nil {
		t.Fatal(err)
	}
	s.WaitRisk(t, dev, commonv1.RiskLevel_RISK_LEVEL_HIGH)
	if n := strings.Count(ag.Logs(1<<20), "==== "); n != 1 {
		t.Errorf("the agent ran %d times, want 1 (no restart)", n)
	}
}
