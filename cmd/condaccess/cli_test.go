package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/services/access/policyengine/w1gen"
)

// fakeSuite implements the few RPCs the CLI tests call, in memory.
type fakeSuite struct {
	compliancev1.UnimplementedDeviceServiceServer
	compliancev1.UnimplementedCompliancePolicyServiceServer
	accessv1.UnimplementedConditionalAccessPolicyServiceServer
	riskv1.UnimplementedRiskServiceServer

	mu         sync.Mutex
	devices    map[string]*compliancev1.Device
	compliance map[string]*compliancev1.CompliancePolicy
	ca         map[string]*accessv1.ConditionalAccessPolicy
	updates    []string // "kind/id etag" of each update call
	events     []*riskv1.RiskEvent
}

func (f *fakeSuite) GetDevice(_ context.Context, r *compliancev1.GetDeviceRequest) (*compliancev1.GetDeviceResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.devices[r.GetDeviceId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "device %q not found", r.GetDeviceId())
	}
	return &compliancev1.GetDeviceResponse{Device: d}, nil
}

func (f *fakeSuite) EnrollDevice(_ context.Context, r *compliancev1.EnrollDeviceRequest) (*compliancev1.EnrollDeviceResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.devices[r.GetDevice().GetDeviceId()]; ok {
		return nil, status.Error(codes.AlreadyExists, "enrolled")
	}
	d := proto.Clone(r.GetDevice()).(*compliancev1.Device)
	d.Etag = "e1"
	f.devices[d.GetDeviceId()] = d
	return &compliancev1.EnrollDeviceResponse{Device: d}, nil
}

func (f *fakeSuite) CreateCompliancePolicy(_ context.Context, r *compliancev1.CreateCompliancePolicyRequest) (*compliancev1.CreateCompliancePolicyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.compliance[r.GetPolicy().GetPolicyId()]; ok {
		return nil, status.Error(codes.AlreadyExists, "exists")
	}
	p := proto.Clone(r.GetPolicy()).(*compliancev1.CompliancePolicy)
	p.Etag = "c1"
	f.compliance[p.GetPolicyId()] = p
	return &compliancev1.CreateCompliancePolicyResponse{Policy: p}, nil
}

func (f *fakeSuite) GetCompliancePolicy(_ context.Context, r *compliancev1.GetCompliancePolicyRequest) (*compliancev1.GetCompliancePolicyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.compliance[r.GetPolicyId()]
	if !ok {
		return nil, status.Error(codes.NotFound, "no such policy")
	}
	return &compliancev1.GetCompliancePolicyResponse{Policy: p}, nil
}

func (f *fakeSuite) UpdateCompliancePolicy(_ context.Context, r *compliancev1.UpdateCompliancePolicyRequest) (*compliancev1.UpdateCompliancePolicyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, ok := f.compliance[r.GetPolicy().GetPolicyId()]
	if !ok {
		return nil, status.Error(codes.NotFound, "no such policy")
	}
	f.updates = append(f.updates, "compliance/"+cur.GetPolicyId()+" "+r.GetPolicy().GetEtag())
	if r.GetPolicy().GetEtag() != cur.GetEtag() {
		return nil, status.Error(codes.Aborted, "stale etag")
	}
	p := proto.Clone(r.GetPolicy()).(*compliancev1.CompliancePolicy)
	p.Etag = cur.GetEtag() + "+"
	f.compliance[p.GetPolicyId()] = p
	return &compliancev1.UpdateCompliancePolicyResponse{Policy: p}, nil
}

func (f *fakeSuite) ListCompliancePolicies(context.Context, *compliancev1.ListCompliancePoliciesRequest) (*compliancev1.ListCompliancePoliciesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &compliancev1.ListCompliancePoliciesResponse{}
	for _, p := range f.compliance {
		resp.Policies = append(resp.Policies, p)
	}
	return resp, nil
}

func (f *fakeSuite) CreatePolicy(_ context.Context, r *accessv1.CreatePolicyRequest) (*accessv1.CreatePolicyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.ca[r.GetPolicy().GetPolicyId()]; ok {
		return nil, status.Error(codes.AlreadyExists, "exists")
	}
	p := proto.Clone(r.GetPolicy()).(*accessv1.ConditionalAccessPolicy)
	p.Etag = "a1"
	f.ca[p.GetPolicyId()] = p
	return &accessv1.CreatePolicyResponse{Policy: p}, nil
}

func (f *fakeSuite) GetPolicy(_ context.Context, r *accessv1.GetPolicyRequest) (*accessv1.GetPolicyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.ca[r.GetPolicyId()]
	if !ok {
		return nil, status.Error(codes.NotFound, "no such policy")
	}
	return &accessv1.GetPolicyResponse{Policy: p}, nil
}

func (f *fakeSuite) UpdatePolicy(_ context.Context, r *accessv1.UpdatePolicyRequest) (*accessv1.UpdatePolicyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, ok := f.ca[r.GetPolicy().GetPolicyId()]
	if !ok {
		return nil, status.Error(codes.NotFound, "no such policy")
	}
	f.updates = append(f.updates, "ca/"+cur.GetPolicyId()+" "+r.GetPolicy().GetEtag())
	if r.GetPolicy().GetEtag() != cur.GetEtag() {
		return nil, status.Error(codes.Aborted, "stale etag")
	}
	p := proto.Clone(r.GetPolicy()).(*accessv1.ConditionalAccessPolicy)
	p.Etag = cur.GetEtag() + "+"
	f.ca[p.GetPolicyId()] = p
	return &accessv1.UpdatePolicyResponse{Policy: p}, nil
}

func (f *fakeSuite) DeletePolicy(_ context.Context, r *accessv1.DeletePolicyRequest) (*accessv1.DeletePolicyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, ok := f.ca[r.GetPolicyId()]
	if !ok {
		return nil, status.Error(codes.NotFound, "no such policy")
	}
	if r.GetEtag() != "" && r.GetEtag() != cur.GetEtag() {
		return nil, status.Error(codes.Aborted, "stale etag")
	}
	delete(f.ca, r.GetPolicyId())
	return &accessv1.DeletePolicyResponse{}, nil
}

func (f *fakeSuite) WatchRiskEvents(r *riskv1.WatchRiskEventsRequest, s grpc.ServerStreamingServer[riskv1.WatchRiskEventsResponse]) error {
	for _, e := range f.events {
		if e.GetRevision() <= r.GetStartRevision() {
			continue
		}
		if err := s.Send(&riskv1.WatchRiskEventsResponse{Kind: &riskv1.WatchRiskEventsResponse_Event{Event: e}}); err != nil {
			return err
		}
	}
	<-s.Context().Done()
	return nil
}

// startFake serves a fakeSuite on a loopback port and returns it with its address.
func startFake(t *testing.T) (*fakeSuite, string) {
	t.Helper()
	f := &fakeSuite{devices: map[string]*compliancev1.Device{}, compliance: map[string]*compliancev1.CompliancePolicy{}, ca: map[string]*accessv1.ConditionalAccessPolicy{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	compliancev1.RegisterDeviceServiceServer(s, f)
	compliancev1.RegisterCompliancePolicyServiceServer(s, f)
	accessv1.RegisterConditionalAccessPolicyServiceServer(s, f)
	riskv1.RegisterRiskServiceServer(s, f)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return f, lis.Addr().String()
}

func runCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	err = run(t.Context(), args, &o, &e)
	return o.String(), e.String(), err
}

func TestCLIDevices(t *testing.T) {
	f, addr := startFake(t)
	f.devices["dev-1"] = &compliancev1.Device{DeviceId: "dev-1", DisplayName: "Laptop 1", Platform: commonv1.Platform_PLATFORM_WINDOWS, Groups: []string{"finance"}, Etag: "e1"}

	t.Run("get json", func(t *testing.T) {
		out, _, err := runCLI(t, "devices", "get", "dev-1", "--server", addr, "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		got := &compliancev1.Device{}
		if err := protojson.Unmarshal([]byte(out), got); err != nil {
			t.Fatalf("output is not a protojson Device: %v\n%s", err, out)
		}
		if diff := cmp.Diff(f.devices["dev-1"], got, protocmp.Transform()); diff != "" {
			t.Errorf("device (-want +got):\n%s", diff)
		}
	})
	t.Run("get table, flags first", func(t *testing.T) {
		out, _, err := runCLI(t, "devices", "get", "--server", addr, "dev-1")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"device:", "dev-1", "WINDOWS", "finance"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("enroll", func(t *testing.T) {
		_, _, err := runCLI(t, "devices", "enroll", "dev-2", "--platform", "macos", "--group", "a", "--group", "b", "--server", addr)
		if err != nil {
			t.Fatal(err)
		}
		want := &compliancev1.Device{DeviceId: "dev-2", Platform: commonv1.Platform_PLATFORM_MACOS, Groups: []string{"a", "b"}, Etag: "e1"}
		if diff := cmp.Diff(want, f.devices["dev-2"], protocmp.Transform()); diff != "" {
			t.Errorf("enrolled device (-want +got):\n%s", diff)
		}
	})
	t.Run("not found names the code", func(t *testing.T) {
		_, _, err := runCLI(t, "devices", "get", "nope", "--server", addr)
		if err == nil || !strings.Contains(err.Error(), "NotFound") {
			t.Fatalf("err = %v, want NotFound", err)
		}
	})
	t.Run("bad platform is a usage error", func(t *testing.T) {
		_, _, err := runCLI(t, "devices", "enroll", "dev-3", "--platform", "beos", "--server", addr)
		if !errors.Is(err, errUsage) {
			t.Fatalf("err = %v, want a usage error", err)
		}
	})
	t.Run("non-loopback without TLS is refused", func(t *testing.T) {
		_, _, err := runCLI(t, "devices", "get", "dev-1", "--server", "192.0.2.1:7400")
		if !errors.Is(err, errUsage) {
			t.Fatalf("err = %v, want a usage error", err)
		}
	})
	t.Run("server from the environment", func(t *testing.T) {
		t.Setenv("CONDACCESS_SERVER", addr)
		if _, _, err := runCLI(t, "devices", "get", "dev-1"); err != nil {
			t.Fatal(err)
		}
	})
}

const applyYAML = `
kind: CompliancePolicy
spec:
  policyId: max-medium
  displayName: Device risk at or under medium
  maxDeviceRisk: RISK_LEVEL_MEDIUM
  assignment:
    allDevices: true
---
- kind: ConditionalAccessPolicy
  spec:
    policyId: payroll-compliant
    displayName: Payroll requires a compliant device
    state: POLICY_STATE_ENABLED
    users: {all: true}
    applications: {include: [payroll]}
    grantControls: {require: [GRANT_CONTROL_COMPLIANT_DEVICE]}
`

func TestCLIPoliciesApply(t *testing.T) {
	f, addr := startFake(t)
	file := filepath.Join(t.TempDir(), "policies.yaml")
	if err := os.WriteFile(file, []byte(applyYAML), 0o600); err != nil {
		t.Fatal(err)
	}

	out, _, err := runCLI(t, "policies", "apply", "-f", file, "--server", addr)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(out, "created") != 2 {
		t.Errorf("first apply should create both:\n%s", out)
	}
	wantCA := &accessv1.ConditionalAccessPolicy{
		PolicyId: "payroll-compliant", DisplayName: "Payroll requires a compliant device", State: accessv1.PolicyState_POLICY_STATE_ENABLED,
		Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{Include: []string{"payroll"}},
		GrantControls: &accessv1.GrantControls{Require: []accessv1.GrantControl{accessv1.GrantControl_GRANT_CONTROL_COMPLIANT_DEVICE}},
		Etag:          "a1",
	}
	if diff := cmp.Diff(wantCA, f.ca["payroll-compliant"], protocmp.Transform()); diff != "" {
		t.Errorf("CA policy (-want +got):\n%s", diff)
	}
	if got := f.compliance["max-medium"].GetMaxDeviceRisk(); got != commonv1.RiskLevel_RISK_LEVEL_MEDIUM {
		t.Errorf("compliance policy max risk = %v", got)
	}

	// Applying again updates, with the etag read.
	out, _, err = runCLI(t, "policies", "apply", "-f", file, "--server", addr)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(out, "updated") != 2 {
		t.Errorf("second apply should update both:\n%s", out)
	}
	if diff := cmp.Diff([]string{"compliance/max-medium c1", "ca/payroll-compliant a1"}, f.updates); diff != "" {
		t.Errorf("updates (-want +got):\n%s", diff)
	}

	// get finds the kind by itself; delete removes it.
	out, _, err = runCLI(t, "policies", "get", "payroll-compliant", "--server", addr)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "kind: ConditionalAccessPolicy") || !strings.Contains(out, "policyId: payroll-compliant") {
		t.Errorf("get prints the YAML apply takes:\n%s", out)
	}
	if _, _, err := runCLI(t, "policies", "delete", "payroll-compliant", "--server", addr); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.ca["payroll-compliant"]; ok {
		t.Error("policy still there after delete")
	}
}

func TestParseManifestsRejects(t *testing.T) {
	tests := []struct {
		name, yaml string
	}{
		{"unknown kind", "kind: Nope\nspec: {a: 1}\n"},
		{"unknown spec field", "kind: User\nspec: {userId: u, nope: 1}\n"},
		{"unknown top-level field", "kind: User\nspec: {userId: u}\nextra: 1\n"},
		{"no spec", "kind: User\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs, err := parseManifests([]byte(tt.yaml))
			if err == nil {
				for _, d := range docs {
					if _, err = decodeManifest(d); err != nil {
						break
					}
				}
			}
			if err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestCLIWatchJSON(t *testing.T) {
	f, addr := startFake(t)
	f.events = []*riskv1.RiskEvent{
		{Revision: 1, TraceContext: &commonv1.TraceContext{Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
			Payload: &riskv1.RiskEvent_AlertChanged{AlertChanged: &riskv1.AlertChanged{Type: riskv1.AlertChangeType_ALERT_CHANGE_TYPE_REPORTED, Alert: &riskv1.Alert{AlertId: "a-1"}}}},
		{Revision: 2, Payload: &riskv1.RiskEvent_DeviceRiskChanged{DeviceRiskChanged: &riskv1.DeviceRiskChanged{DeviceRisk: &riskv1.DeviceRisk{DeviceId: "dev-1", Level: commonv1.RiskLevel_RISK_LEVEL_HIGH}}}},
	}
	out, _, err := runCLI(t, "watch", "risk", "--from", "1", "-n", "1", "-o", "json", "--server", addr)
	if err != nil {
		t.Fatal(err)
	}
	got := &riskv1.RiskEvent{}
	if err := protojson.Unmarshal([]byte(strings.TrimSpace(out)), got); err != nil {
		t.Fatalf("not one protojson event: %v\n%s", err, out)
	}
	if diff := cmp.Diff(f.events[1], got, protocmp.Transform()); diff != "" {
		t.Errorf("event (-want +got):\n%s", diff)
	}

	out, _, err = runCLI(t, "watch", "risk", "-n", "2", "--server", addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"alert-reported", "a-1", "4bf92f3577b34da6a3ce929d0e0e4736", "device-risk-changed", "-> HIGH"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestParseEnum(t *testing.T) {
	tests := []struct {
		in   string
		want commonv1.Severity
	}{
		{"high", commonv1.Severity_SEVERITY_HIGH},
		{"SEVERITY_LOW", commonv1.Severity_SEVERITY_LOW},
		{"Informational", commonv1.Severity_SEVERITY_INFORMATIONAL},
		{"", commonv1.Severity_SEVERITY_UNSPECIFIED},
	}
	for _, tt := range tests {
		got, err := parseEnum(commonv1.Severity(0).Descriptor(), tt.in)
		if err != nil || commonv1.Severity(got) != tt.want {
			t.Errorf("parseEnum(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	if _, err := parseEnum(commonv1.ComplianceState(0).Descriptor(), "in-grace-period"); err != nil {
		t.Errorf("in-grace-period: %v", err)
	}
	if _, err := parseEnum(commonv1.Severity(0).Descriptor(), "extreme"); !errors.Is(err, errUsage) {
		t.Errorf("extreme: err = %v, want usage error", err)
	}
}

func TestW1DirectoryDeterministic(t *testing.T) {
	sc := w1gen.Scale{Users: 200, Groups: 20, Apps: 5}
	a := w1Directory(sc)
	b := w1Directory(sc)
	if diff := cmp.Diff(a, b, protocmp.Transform()); diff != "" {
		t.Fatalf("two generations differ:\n%s", diff)
	}
	members := map[string]int{}
	for _, g := range a.GetGroups() {
		for _, u := range g.GetMemberUserIds() {
			members[u]++
		}
	}
	for _, u := range a.GetUsers() {
		if n := members[u.GetUserId()]; n < 1 || n > 5 {
			t.Errorf("user %s is in %d groups, want 1..5", u.GetUserId(), n)
		}
	}
	chunks := importChunks(a, 50)
	var users, groups, apps int
	for _, c := range chunks {
		users += len(c.GetUsers())
		groups += len(c.GetGroups())
		apps += len(c.GetApplications())
	}
	if users != 200 || groups != 20 || apps != 5 {
		t.Errorf("chunks carry %d users, %d groups, %d apps", users, groups, apps)
	}
}

func TestDevCertsMutualTLSHealth(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := runCLI(t, "dev-certs", "--out", dir); err != nil {
		t.Fatal(err)
	}
	creds, err := auth.ServerTLS(auth.Config{CertFile: filepath.Join(dir, "service.pem"), KeyFile: filepath.Join(dir, "service-key.pem"), ClientCAFile: filepath.Join(dir, "ca.pem")})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.Creds(creds))
	hs := health.NewServer()
	grpc_health_v1.RegisterHealthServer(s, hs)
	go s.Serve(lis)
	t.Cleanup(s.Stop)

	tlsArgs := []string{"--server", lis.Addr().String(), "--tls-ca", filepath.Join(dir, "ca.pem"),
		"--tls-cert", filepath.Join(dir, "admin.pem"), "--tls-key", filepath.Join(dir, "admin-key.pem")}
	out, _, err := runCLI(t, append([]string{"health"}, tlsArgs...)...)
	if err != nil || !strings.Contains(out, "SERVING") {
		t.Fatalf("health over mutual TLS: %v %s", err, out)
	}
	hs.SetServingStatus("", grpc_health_v1.HealthCheckResponse_NOT_SERVING)
	if _, _, err := runCLI(t, append([]string{"health"}, tlsArgs...)...); err == nil {
		t.Fatal("health is fine while NOT_SERVING")
	}
	// Without a client certificate the server refuses the call.
	if _, _, err := runCLI(t, "health", "--server", lis.Addr().String(), "--timeout", "2s"); err == nil {
		t.Fatal("plaintext health call to a TLS server succeeded")
	}

	pemBytes, err := os.ReadFile(filepath.Join(dir, "admin.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pemBytes)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	want := []commonv1.Role{commonv1.Role_ROLE_SECOPS_ADMIN, commonv1.Role_ROLE_POLICY_ADMIN, commonv1.Role_ROLE_READER}
	if diff := cmp.Diff(want, auth.IdentityFromCert(cert).Roles); diff != "" {
		t.Errorf("admin roles (-want +got):\n%s", diff)
	}
}

func TestDevCertsNamesThePeersAddresses(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := runCLI(t, "dev-certs", "--out", dir, "--hosts", "10.0.0.7,condaccess.example.com"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "service.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	// Compose dials risk:7400, Kubernetes risk.condaccess.svc:7400 (deploy/).
	for _, host := range []string{"risk", "compliance.condaccess.svc", "access.condaccess.svc.cluster.local", "localhost", "127.0.0.1", "10.0.0.7", "condaccess.example.com"} {
		if err := cert.VerifyHostname(host); err != nil {
			t.Errorf("service certificate: %v", err)
		}
	}
	// A service's own certificate names that service only: the risk service's key
	// cannot pass for the compliance server to a peer that dials compliance:7400.
	b, err = os.ReadFile(filepath.Join(dir, "risk.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ = pem.Decode(b)
	risk, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		host string
		ok   bool
	}{
		{"risk", true}, {"risk.condaccess.svc.cluster.local", true}, {"localhost", true}, {"condaccess.example.com", true},
		{"compliance", false}, {"access.condaccess.svc", false}, {"condaccess-remediation", false}, {"condaccess", false},
		// The headless Service of its replicas (deploy/kubernetes), and not another's.
		{"risk-peers.condaccess.svc.cluster.local", true}, {"compliance-peers.condaccess.svc.cluster.local", false},
	} {
		if err := risk.VerifyHostname(tt.host); (err == nil) != tt.ok {
			t.Errorf("risk certificate for %s: %v, want ok=%v", tt.host, err, tt.ok)
		}
	}
}
