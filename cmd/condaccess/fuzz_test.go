package main

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	auditv1 "github.com/condaccess/condaccess/gen/go/condaccess/audit/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
)

// fuzzedServices are the services whose every unary RPC FuzzUnaryRPCs drives (risk has
// its own FuzzRequests in riskgrpc, and is here too: the suite serves it).
var fuzzedServices = []string{
	"condaccess.access.v1.AccessService",
	"condaccess.access.v1.ConditionalAccessPolicyService",
	"condaccess.access.v1.DirectoryService",
	"condaccess.audit.v1.AuditService",
	"condaccess.compliance.v1.CompliancePolicyService",
	"condaccess.compliance.v1.ComplianceService",
	"condaccess.compliance.v1.DeviceIdentityService",
	"condaccess.compliance.v1.DeviceService",
	"condaccess.remediation.v1.RemediationService",
	"condaccess.risk.v1.RiskService",
}

// unaryMethod is one unary RPC with its request and response types.
type unaryMethod struct {
	name     string // full method, /pkg.Service/Method
	req, res protoreflect.MessageType
}

// unaryMethods lists every unary RPC of fuzzedServices, from the descriptors: a new
// RPC is fuzzed without a change here.
func unaryMethods(tb testing.TB) []unaryMethod {
	tb.Helper()
	var out []unaryMethod
	for _, svc := range fuzzedServices {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
		if err != nil {
			tb.Fatalf("%s: %v", svc, err)
		}
		ms := d.(protoreflect.ServiceDescriptor).Methods()
		for i := range ms.Len() {
			m := ms.Get(i)
			if m.IsStreamingClient() || m.IsStreamingServer() {
				continue
			}
			req, err := protoregistry.GlobalTypes.FindMessageByName(m.Input().FullName())
			if err != nil {
				tb.Fatal(err)
			}
			res, err := protoregistry.GlobalTypes.FindMessageByName(m.Output().FullName())
			if err != nil {
				tb.Fatal(err)
			}
			out = append(out, unaryMethod{name: "/" + svc + "/" + string(m.Name()), req: req, res: res})
		}
	}
	return out
}

// pick returns the method named name, or (for names the fuzzer made up) one chosen by
// the name's hash, so that every input reaches some RPC.
func pick(methods []unaryMethod, name string) unaryMethod {
	if i := slices.IndexFunc(methods, func(m unaryMethod) bool { return m.name == name }); i >= 0 {
		return methods[i]
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	return methods[int(h.Sum32()%uint32(len(methods)))]
}

// clientCodes are the answers a well-behaved service gives to bad or conflicting input.
var clientCodes = []codes.Code{codes.OK, codes.InvalidArgument, codes.NotFound, codes.AlreadyExists,
	codes.FailedPrecondition, codes.Aborted, codes.OutOfRange}

// FuzzUnaryRPCs sends arbitrary requests to every unary RPC of the compliance, access,
// remediation, audit (and risk) services of one `serve` process, through the
// production server and interceptor chain: no input may panic a service (the recovery
// interceptor would answer INTERNAL), hang it, or fail it with anything but a client
// error. Seed corpus: testdata/fuzz/FuzzUnaryRPCs (TestWriteFuzzSeeds).
func FuzzUnaryRPCs(f *testing.F) {
	methods := unaryMethods(f)
	for _, m := range methods {
		f.Add(m.name, []byte{})
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.Cleanup(cancel)
	s, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", dataDir: f.TempDir(),
		services: "risk,compliance,access,remediation", stopTimeout: 2 * time.Second}, slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Stop() })
	conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { conn.Close() })
	f.Fuzz(func(t *testing.T, method string, data []byte) {
		m := pick(methods, method)
		req := m.req.New().Interface()
		if err := proto.Unmarshal(data, req); err != nil {
			t.Skip()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := conn.Invoke(ctx, m.name, req, m.res.New().Interface())
		if c := status.Code(err); !slices.Contains(clientCodes, c) {
			t.Fatalf("%s %v: %v", m.name, req, err)
		}
	})
}

// FuzzParseManifests feeds arbitrary YAML to the loader of `policies apply`: it must
// answer with documents or an error, never panic, and every document it accepts must
// have a kind and a spec.
func FuzzParseManifests(f *testing.F) {
	for _, s := range []string{
		"kind: User\nspec: {userId: u-1, displayName: Ada}\n",
		"- kind: Application\n  spec: {applicationId: payroll, displayName: Payroll}\n---\nkind: CompliancePolicy\nspec:\n  policyId: max-medium\n  displayName: x\n  maxDeviceRisk: RISK_LEVEL_MEDIUM\n  assignment: {allDevices: true}\n",
		"kind: ConditionalAccessPolicy\nspec:\n  policyId: p\n  displayName: P\n  state: POLICY_STATE_ENABLED\n  users: {all: true}\n  applications: {include: [payroll]}\n  grantControls: {require: [GRANT_CONTROL_COMPLIANT_DEVICE]}\n",
		"kind: Device\nspec: {deviceId: dev-1, platform: PLATFORM_WINDOWS, groups: [a, b]}\n",
		"a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n",
		"---\n---\nnull\n",
		"kind: User\nspec: {userId: u, nope: 1}\n",
		"[1, 2]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, err := parseManifests(data)
		if err != nil {
			return
		}
		for _, d := range docs {
			if d.Kind == "" || len(d.Spec) == 0 {
				t.Fatalf("accepted a document without kind or spec: %+v", d)
			}
			msg, err := decodeManifest(d)
			if err != nil {
				continue
			}
			if msg == nil {
				t.Fatalf("decodeManifest(%+v) = nil, nil", d)
			}
		}
	})
}

// TestWriteFuzzSeeds regenerates the committed seed corpus of FuzzUnaryRPCs:
// CONDACCESS_WRITE_FUZZ_SEEDS=1 go test -run TestWriteFuzzSeeds ./cmd/condaccess
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("CONDACCESS_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set CONDACCESS_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz/FuzzUnaryRPCs")
	}
	file := func(p string) *commonv1.Evidence {
		return &commonv1.Evidence{Kind: &commonv1.Evidence_File{File: &commonv1.FileEvidence{Path: p, Sha256: strings.Repeat("ab", 32), SizeBytes: 68}}}
	}
	const junkToken = "eyJ0IjoxLCJzIjoiYSIsImkiOjEsImYiOiJ4In0"
	seeds := map[string]struct {
		method string
		m      proto.Message
	}{
		"enroll": {"/condaccess.compliance.v1.DeviceService/EnrollDevice", &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
			DeviceId: "dev-1", DisplayName: "Laptop 1", Platform: commonv1.Platform_PLATFORM_WINDOWS, OsVersion: "10.0.22631", OwnerUserId: "u-1", Groups: []string{"finance"}}}},
		"update-device": {"/condaccess.compliance.v1.DeviceService/UpdateDevice", &compliancev1.UpdateDeviceRequest{Device: &compliancev1.Device{DeviceId: "dev-1", OsVersion: "11"},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"os_version", "bogus"}}}},
		"retire":       {"/condaccess.compliance.v1.DeviceService/RetireDevice", &compliancev1.RetireDeviceRequest{DeviceId: "dev-1"}},
		"list-devices": {"/condaccess.compliance.v1.DeviceService/ListDevices", &compliancev1.ListDevicesRequest{PageSize: 1, PageToken: "!!not-a-token"}},
		"compliance-policy": {"/condaccess.compliance.v1.CompliancePolicyService/CreateCompliancePolicy", &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
			PolicyId: "max-medium", DisplayName: "x", MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_MEDIUM, MinOsVersion: "10.0.1",
			Assignment: &compliancev1.PolicyAssignment{IncludeGroups: []string{"finance"}, ExcludeGroups: []string{"lab"}},
			Actions:    &compliancev1.NoncomplianceActions{GracePeriod: durationpb.New(time.Hour)}}}},
		"update-compliance-policy": {"/condaccess.compliance.v1.CompliancePolicyService/UpdateCompliancePolicy", &compliancev1.UpdateCompliancePolicyRequest{
			Policy: &compliancev1.CompliancePolicy{PolicyId: "max-medium", MinOsVersion: "not.a.version"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"min_os_version", "assignment"}}}},
		"list-compliance-policies": {"/condaccess.compliance.v1.CompliancePolicyService/ListCompliancePolicies", &compliancev1.ListCompliancePoliciesRequest{PageSize: 1000, PageToken: junkToken}},
		"exclude": {"/condaccess.compliance.v1.ComplianceService/ExcludeDevice", &compliancev1.ExcludeDeviceRequest{DeviceId: "dev-1", Reason: "ticket 42",
			ExpireTime: timestamppb.New(time.Unix(1<<40, 0))}},
		"exclude-past":     {"/condaccess.compliance.v1.ComplianceService/ExcludeDevice", &compliancev1.ExcludeDeviceRequest{DeviceId: "dev-1", Reason: "x", ExpireTime: timestamppb.New(time.Unix(-1<<40, 0))}},
		"remove-exclusion": {"/condaccess.compliance.v1.ComplianceService/RemoveExclusion", &compliancev1.RemoveExclusionRequest{DeviceId: "dev-1"}},
		"list-compliance":  {"/condaccess.compliance.v1.ComplianceService/ListDeviceCompliance", &compliancev1.ListDeviceComplianceRequest{PageSize: 2, PageToken: "eyJhIjoxfQ"}},
		"settings": {"/condaccess.compliance.v1.ComplianceService/UpdateComplianceSettings", &compliancev1.UpdateComplianceSettingsRequest{
			Settings: &compliancev1.ComplianceSettings{DevicesWithoutPolicyCompliant: true}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"devices_without_policy_compliant"}}}},
		"user":       {"/condaccess.access.v1.DirectoryService/CreateUser", &accessv1.CreateUserRequest{User: &accessv1.User{UserId: "u-1", DisplayName: "Ada"}}},
		"group":      {"/condaccess.access.v1.DirectoryService/CreateGroup", &accessv1.CreateGroupRequest{Group: &accessv1.Group{GroupId: "g-1", DisplayName: "G", MemberUserIds: []string{"u-1", "nobody"}, MemberGroupIds: []string{"g-1"}}}},
		"app":        {"/condaccess.access.v1.DirectoryService/CreateApplication", &accessv1.CreateApplicationRequest{Application: &accessv1.Application{ApplicationId: "payroll", DisplayName: "Payroll"}}},
		"list-users": {"/condaccess.access.v1.DirectoryService/ListUsers", &accessv1.ListUsersRequest{PageSize: 1, PageToken: junkToken}},
		"ca-policy": {"/condaccess.access.v1.ConditionalAccessPolicyService/CreatePolicy", &accessv1.CreatePolicyRequest{Policy: &accessv1.ConditionalAccessPolicy{
			PolicyId: "p-1", DisplayName: "P", State: accessv1.PolicyState_POLICY_STATE_ENABLED, Users: &accessv1.UserAssignment{All: true, ExcludeUsers: []string{"u-9"}},
			Applications:  &accessv1.ApplicationAssignment{Include: []string{"payroll"}},
			GrantControls: &accessv1.GrantControls{Require: []accessv1.GrantControl{accessv1.GrantControl_GRANT_CONTROL_COMPLIANT_DEVICE}}}}},
		"ca-block-all": {"/condaccess.access.v1.ConditionalAccessPolicyService/CreatePolicy", &accessv1.CreatePolicyRequest{Policy: &accessv1.ConditionalAccessPolicy{
			PolicyId: "p-2", DisplayName: "Block", State: accessv1.PolicyState_POLICY_STATE_ENABLED, Users: &accessv1.UserAssignment{All: true},
			Applications: &accessv1.ApplicationAssignment{All: true}, GrantControls: &accessv1.GrantControls{Block: true}}}},
		"delete-ca-policy": {"/condaccess.access.v1.ConditionalAccessPolicyService/DeletePolicy", &accessv1.DeletePolicyRequest{PolicyId: "p-1", Etag: "stale"}},
		"list-ca-policies": {"/condaccess.access.v1.ConditionalAccessPolicyService/ListPolicies", &accessv1.ListPoliciesRequest{PageSize: 1, PageToken: "////"}},
		"evaluate":         {"/condaccess.access.v1.AccessService/EvaluateAccess", &accessv1.EvaluateAccessRequest{UserId: "u-1", DeviceId: "dev-1", ApplicationId: "payroll"}},
		"whatif":           {"/condaccess.access.v1.AccessService/WhatIf", &accessv1.WhatIfRequest{Request: &accessv1.EvaluateAccessRequest{UserId: "u-1", DeviceId: "dev-1", ApplicationId: "payroll"}}},
		"signins":          {"/condaccess.access.v1.AccessService/ListSignIns", &accessv1.ListSignInsRequest{PageSize: 1, PageToken: junkToken}},
		"sessions":         {"/condaccess.access.v1.AccessService/ListSessions", &accessv1.ListSessionsRequest{PageSize: 1, PageToken: junkToken}},
		"alert": {"/condaccess.risk.v1.RiskService/ReportAlert", &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
			AlertId: "a-1", DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "Malicious file", Evidence: []*commonv1.Evidence{file(`C:\x\eicar.com`)}}}},
		"automation": {"/condaccess.remediation.v1.RemediationService/SetAutomationLevel", &remediationv1.SetAutomationLevelRequest{Setting: &remediationv1.AutomationLevelSetting{
			DeviceGroup: "finance", Level: remediationv1.AutomationLevel_AUTOMATION_LEVEL_SEMI}}},
		"start-investigation": {"/condaccess.remediation.v1.RemediationService/StartInvestigation", &remediationv1.StartInvestigationRequest{DeviceId: "dev-1", AlertIds: []string{"a-1", "a-404"}}},
		"submit": {"/condaccess.remediation.v1.RemediationService/SubmitAction", &remediationv1.SubmitActionRequest{DeviceId: "dev-1",
			Type: remediationv1.ActionType_ACTION_TYPE_QUARANTINE_FILE, Target: file("/tmp/x")}},
		"submit-kill":         {"/condaccess.remediation.v1.RemediationService/SubmitAction", &remediationv1.SubmitActionRequest{DeviceId: "dev-1", Type: remediationv1.ActionType_ACTION_TYPE_KILL_PROCESS}},
		"approve":             {"/condaccess.remediation.v1.RemediationService/ApproveAction", &remediationv1.ApproveActionRequest{ActionId: "act-1", Comment: "go"}},
		"undo":                {"/condaccess.remediation.v1.RemediationService/UndoAction", &remediationv1.UndoActionRequest{ActionId: "act-1"}},
		"list-actions":        {"/condaccess.remediation.v1.RemediationService/ListActions", &remediationv1.ListActionsRequest{PageSize: 1, PageToken: junkToken}},
		"list-investigations": {"/condaccess.remediation.v1.RemediationService/ListInvestigations", &remediationv1.ListInvestigationsRequest{PageSize: 1, PageToken: "AAAA"}},
		"list-agents":         {"/condaccess.remediation.v1.RemediationService/ListAgents", &remediationv1.ListAgentsRequest{PageSize: 1, PageToken: junkToken}},
		"audit": {"/condaccess.audit.v1.AuditService/ListAuditEvents", &auditv1.ListAuditEventsRequest{PageSize: 1, Actor: "dev",
			StartTime: timestamppb.New(time.Unix(-1<<40, 0)), EndTime: timestamppb.New(time.Unix(1<<40, 0))}},
		"audit-token": {"/condaccess.audit.v1.AuditService/ListAuditEvents", &auditv1.ListAuditEventsRequest{PageToken: junkToken}},
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzUnaryRPCs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, s := range seeds {
		b, err := proto.Marshal(s.m)
		if err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf("go test fuzz v1\nstring(%q)\n[]byte(%q)\n", s.method, b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
