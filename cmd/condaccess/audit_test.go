package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	auditv1 "github.com/condaccess/condaccess/gen/go/condaccess/audit/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/pgtest"
)

// dialCert dials addr over mutual TLS with the dev-certs certificate <name>.pem.
func dialCert(t *testing.T, dir, addr, name string) *grpc.ClientConn {
	t.Helper()
	opt, err := auth.DialOption(auth.ClientConfig{CAFile: filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, name+".pem"), KeyFile: filepath.Join(dir, name+"-key.pem"), ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func mentions(v *structpb.Value, s string) bool {
	if v == nil {
		return false
	}
	b, _ := protojson.Marshal(v)
	return strings.Contains(string(b), s)
}

// TestAuditOverMutualTLS: admin changes made with the admin certificate are each
// recorded once, with the certificate's identity as actor (never a request field) and
// the resource before and after; ListAuditEvents serves them merged across the four
// services of the process, to the roles allowed and to no one else.
func TestAuditOverMutualTLS(t *testing.T) { auditOverMutualTLS(t, "") }

// TestAuditOverMutualTLSOnPostgres: the same with every store on PostgreSQL; and a
// second replica on the database lists the very events written through the first.
func TestAuditOverMutualTLSOnPostgres(t *testing.T) {
	url := pgtest.URL(t)
	dir, want := auditOverMutualTLS(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b := startAuditSuite(ctx, t, dir, url)
	resp, err := auditv1.NewAuditServiceClient(dialCert(t, dir, b.GRPCAddr(), "admin")).ListAuditEvents(ctx,
		&auditv1.ListAuditEventsRequest{Actor: adminSubject, PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	key := func(e *auditv1.AuditEvent) string {
		return fmt.Sprintf("%s/%d %s", e.GetService(), e.GetId(), e.GetMethod())
	}
	var got, wantKeys []string
	for _, e := range resp.GetEvents() {
		got = append(got, key(e))
	}
	for _, e := range want {
		wantKeys = append(wantKeys, key(e))
	}
	if fmt.Sprint(got) != fmt.Sprint(wantKeys) {
		t.Errorf("admin events on replica B = %v, want those listed on replica A %v", got, wantKeys)
	}
}

// adminSubject is the subject of the dev-certs admin certificate.
const adminSubject = "condaccess-admin"

// startAuditSuite starts the four services over mutual TLS with the dev-certs of dir,
// on the stores of databaseURL ("": embedded SQLite).
func startAuditSuite(ctx context.Context, t *testing.T, dir, databaseURL string) *runningSuite {
	t.Helper()
	s, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", dataDir: t.TempDir(), databaseURL: databaseURL,
		services: "risk,compliance,access,remediation", stopTimeout: 5 * time.Second,
		tlsCert: filepath.Join(dir, "service.pem"), tlsKey: filepath.Join(dir, "service-key.pem"), tlsClientCA: filepath.Join(dir, "ca.pem"),
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	return s
}

// auditOverMutualTLS runs the test on the stores of databaseURL ("": embedded
// SQLite); it returns the dev-certs folder and the admin's events, newest first.
func auditOverMutualTLS(t *testing.T, databaseURL string) (string, []*auditv1.AuditEvent) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	if _, _, err := runCLI(t, "dev-certs", "--out", dir); err != nil {
		t.Fatal(err)
	}
	s := startAuditSuite(ctx, t, dir, databaseURL)
	admin := dialCert(t, dir, s.GRPCAddr(), "admin")

	// Set-up: a device in a SEMI-automated group and a HIGH alert with file evidence,
	// so that the investigation proposes an action that waits for approval.
	if _, err := compliancev1.NewDeviceServiceClient(admin).EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
		DeviceId: "dev-1", DisplayName: "Laptop 1", Platform: commonv1.Platform_PLATFORM_WINDOWS, OsVersion: "10.0.22631", OwnerUserId: "u-1", Groups: []string{"finance"},
	}}); err != nil {
		t.Fatal(err)
	}
	rem := remediationv1.NewRemediationServiceClient(admin)
	if _, err := rem.SetAutomationLevel(ctx, &remediationv1.SetAutomationLevelRequest{Setting: &remediationv1.AutomationLevelSetting{
		DeviceGroup: "finance", Level: remediationv1.AutomationLevel_AUTOMATION_LEVEL_SEMI}}); err != nil {
		t.Fatal(err)
	}
	sensor := riskv1.NewRiskServiceClient(dialCert(t, dir, s.GRPCAddr(), "sensor"))
	if _, err := sensor.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
		AlertId: "a-1", DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "Malicious file",
		Evidence: []*commonv1.Evidence{{Kind: &commonv1.Evidence_File{File: &commonv1.FileEvidence{
			Path: `C:\Users\ada\Downloads\eicar.com`, Sha256: strings.Repeat("ab", 32), SizeBytes: 68}}}},
	}}); err != nil {
		t.Fatal(err)
	}
	var pending *remediationv1.Action
	var last *remediationv1.ListActionsResponse
	var err error
	for pending == nil {
		if ctx.Err() != nil {
			t.Fatalf("no action pending approval for dev-1; last listing: %v", last)
		}
		last, err = rem.ListActions(ctx, &remediationv1.ListActionsRequest{DeviceId: "dev-1"})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range last.GetActions() {
			if a.GetState() == remediationv1.ActionState_ACTION_STATE_PENDING_APPROVAL {
				pending = a
			}
		}
		if pending == nil {
			time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation: the loop waits on the condition
		}
	}

	// The five audited changes, by the admin certificate.
	ca := accessv1.NewConditionalAccessPolicyServiceClient(admin)
	if _, err := ca.CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: &accessv1.ConditionalAccessPolicy{
		PolicyId: "payroll-compliant", DisplayName: "Payroll requires a compliant device", State: accessv1.PolicyState_POLICY_STATE_ENABLED,
		Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{Include: []string{"payroll"}},
		GrantControls: &accessv1.GrantControls{Require: []accessv1.GrantControl{accessv1.GrantControl_GRANT_CONTROL_COMPLIANT_DEVICE}},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.DeletePolicy(ctx, &accessv1.DeletePolicyRequest{PolicyId: "payroll-compliant"}); err != nil {
		t.Fatal(err)
	}
	if _, err := compliancev1.NewComplianceServiceClient(admin).ExcludeDevice(ctx, &compliancev1.ExcludeDeviceRequest{DeviceId: "dev-1", Reason: "ticket 42"}); err != nil {
		t.Fatal(err)
	}
	res, err := riskv1.NewRiskServiceClient(admin).ResolveAlert(ctx, &riskv1.ResolveAlertRequest{AlertId: "a-1",
		Classification: riskv1.AlertClassification_ALERT_CLASSIFICATION_TRUE_POSITIVE, Comment: "cleaned", ResolvedBy: "carol-the-ciso"})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.GetAlert().GetResolvedBy(); got != adminSubject {
		t.Errorf("resolved_by = %q, want the caller %q (the request's carol-the-ciso is ignored)", got, adminSubject)
	}
	if _, err := rem.ApproveAction(ctx, &remediationv1.ApproveActionRequest{ActionId: pending.GetActionId(), Comment: "go"}); err != nil {
		t.Fatal(err)
	}

	auditClient := auditv1.NewAuditServiceClient(admin)
	tests := []struct {
		method, resourceType, resourceID string
		before, after                    string // a string the before / after JSON contains; "" = absent
	}{
		{"/condaccess.access.v1.ConditionalAccessPolicyService/CreatePolicy", "conditional_access_policy", "payroll-compliant", "", "Payroll requires a compliant device"},
		{"/condaccess.access.v1.ConditionalAccessPolicyService/DeletePolicy", "conditional_access_policy", "payroll-compliant", "Payroll requires a compliant device", ""},
		{"/condaccess.compliance.v1.ComplianceService/ExcludeDevice", "compliance_exclusion", "", "", "ticket 42"},
		{"/condaccess.risk.v1.RiskService/ResolveAlert", "alert", "a-1", `"status":`, `"resolved_by":"` + adminSubject + `"`},
		{"/condaccess.remediation.v1.RemediationService/ApproveAction", "remediation_action", pending.GetActionId(), `"id":"` + pending.GetActionId() + `"`, `"decided_by":"` + adminSubject + `"`},
	}
	for _, tt := range tests {
		t.Run(tt.method[strings.LastIndex(tt.method, "/")+1:], func(t *testing.T) {
			resp, err := auditClient.ListAuditEvents(ctx, &auditv1.ListAuditEventsRequest{Method: tt.method})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.GetEvents()) != 1 {
				t.Fatalf("%d events for %s, want 1: %v", len(resp.GetEvents()), tt.method, resp.GetEvents())
			}
			e := resp.GetEvents()[0]
			if e.GetActor().GetSubject() != adminSubject || e.GetActor().GetPeer() == "" || !strings.Contains(strings.Join(e.GetActor().GetRoles(), ","), "secops-admin") {
				t.Errorf("actor = %v, want %s with its roles and peer", e.GetActor(), adminSubject)
			}
			if e.GetResourceType() != tt.resourceType || (tt.resourceID != "" && e.GetResourceId() != tt.resourceID) || e.GetTime() == nil {
				t.Errorf("resource = %s %s at %v, want %s %s", e.GetResourceType(), e.GetResourceId(), e.GetTime(), tt.resourceType, tt.resourceID)
			}
			if (tt.before == "") != (e.GetBefore() == nil) || (tt.before != "" && !mentions(e.GetBefore(), tt.before)) {
				t.Errorf("before = %v, want it to contain %q", e.GetBefore(), tt.before)
			}
			if (tt.after == "") != (e.GetAfter() == nil) || (tt.after != "" && !mentions(e.GetAfter(), tt.after)) {
				t.Errorf("after = %v, want it to contain %q", e.GetAfter(), tt.after)
			}
		})
	}

	// Merged across services and paged: every admin event, newest first, once.
	var all []*auditv1.AuditEvent
	tok := ""
	for {
		resp, err := auditClient.ListAuditEvents(ctx, &auditv1.ListAuditEventsRequest{Actor: adminSubject, PageSize: 2, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, resp.GetEvents()...)
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
	services := map[string]bool{}
	for i, e := range all {
		services[e.GetService()] = true
		if i > 0 && e.GetTime().AsTime().After(all[i-1].GetTime().AsTime()) {
			t.Errorf("event %d is newer than event %d", i, i-1)
		}
	}
	// enroll, automation level, the five changes above.
	if len(all) != 7 || len(services) != 4 {
		t.Errorf("admin events = %d from %d services, want 7 from 4: %v", len(all), len(services), all)
	}

	// Who may list: the admin and reader roles; not a sensor, not without a certificate.
	for _, tt := range []struct {
		name string
		conn *grpc.ClientConn
		want codes.Code
	}{
		{"reader", dialCert(t, dir, s.GRPCAddr(), "reader"), codes.OK},
		{"sensor", dialCert(t, dir, s.GRPCAddr(), "sensor"), codes.PermissionDenied},
		{"enforcement point", dialCert(t, dir, s.GRPCAddr(), "enforcement-point"), codes.PermissionDenied},
	} {
		t.Run("list as "+tt.name, func(t *testing.T) {
			_, err := auditv1.NewAuditServiceClient(tt.conn).ListAuditEvents(ctx, &auditv1.ListAuditEventsRequest{})
			if status.Code(err) != tt.want {
				t.Errorf("ListAuditEvents as %s = %v, want %v", tt.name, err, tt.want)
			}
		})
	}
	// A page token made for other filters is refused.
	first, err := auditClient.ListAuditEvents(ctx, &auditv1.ListAuditEventsRequest{PageSize: 1})
	if err != nil || first.GetNextPageToken() == "" {
		t.Fatalf("first page: %v", err)
	}
	if _, err := auditClient.ListAuditEvents(ctx, &auditv1.ListAuditEventsRequest{PageSize: 1, PageToken: first.GetNextPageToken(), Actor: "someone-else"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("page token with other filters = %v, want InvalidArgument", err)
	}
	return dir, all
}

func TestCLIAuditList(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", dataDir: t.TempDir(), services: "access,compliance,risk", stopTimeout: 5 * time.Second},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dir := accessv1.NewDirectoryServiceClient(conn)
	for _, id := range []string{"u-1", "u-2"} {
		if _, err := dir.CreateUser(ctx, &accessv1.CreateUserRequest{User: &accessv1.User{UserId: id, DisplayName: "User " + id}}); err != nil {
			t.Fatal(err)
		}
	}
	addr := s.GRPCAddr()

	out, _, err := runCLI(t, "audit", "list", "--server", addr, "--resource-type", "user")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "ACTOR") || !strings.Contains(lines[1], "user/u-2") || !strings.Contains(lines[2], "user/u-1") ||
		!strings.Contains(lines[1], "dev") || !strings.Contains(lines[1], "CreateUser") || !strings.Contains(lines[1], "CREATE") {
		t.Errorf("table:\n%s", out)
	}

	out, _, err = runCLI(t, "audit", "list", "--server", addr, "-o", "json", "--resource-id", "u-1", "--since", "1h")
	if err != nil {
		t.Fatal(err)
	}
	got := &auditv1.ListAuditEventsResponse{}
	if err := protojson.Unmarshal([]byte(out), got); err != nil {
		t.Fatalf("not a ListAuditEventsResponse: %v\n%s", err, out)
	}
	if len(got.GetEvents()) != 1 || got.GetEvents()[0].GetResourceId() != "u-1" || got.GetEvents()[0].GetService() != "access" ||
		got.GetEvents()[0].GetAction() != auditv1.AuditAction_AUDIT_ACTION_CREATE {
		t.Errorf("json: %v", got)
	}

	for _, tt := range []struct {
		name string
		args []string
	}{
		{"bad since", []string{"--since", "yesterday"}},
		{"negative since", []string{"--since", "-1h"}},
		{"argument", []string{"extra"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := runCLI(t, append([]string{"audit", "list", "--server", addr}, tt.args...)...); err == nil {
				t.Errorf("audit list %v succeeded", tt.args)
			}
		})
	}
	// An empty window: until before since.
	if _, _, err := runCLI(t, "audit", "list", "--server", addr, "--since", "1h", "--until", "2h"); err == nil || !strings.Contains(err.Error(), "end_time") {
		t.Errorf("until before since = %v, want INVALID_ARGUMENT on end_time", err)
	}
}
