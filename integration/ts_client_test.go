package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/integration/harness"
)

// TestTypeScriptClient drives part of the flow from the generated TypeScript client
// (gen/ts, @connectrpc/connect-node over gRPC, run by tsx on Node.js): it enrolls a
// device and reports an alert; Go then checks that the flow went on to block access.
func TestTypeScriptClient(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: starts real processes")
	}
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the TypeScript client test needs Node.js and `bash .ci/tools.sh` (npm ci in .ci/node)")
	}
	modules := filepath.Join(root, ".ci", "node", "node_modules")
	tsx := filepath.Join(modules, "tsx", "dist", "cli.mjs")
	for _, need := range []string{filepath.Join(modules, "@connectrpc", "connect-node"), filepath.Join(modules, "@bufbuild", "protobuf"), tsx} {
		if _, err := os.Stat(need); err != nil {
			t.Skipf("%s is missing: run `bash .ci/tools.sh` (npm ci in .ci/node) to install the TypeScript client's runtime", need)
		}
	}
	dir := tsWorkspace(t, root, modules)

	s := harness.StartSuite(t, harness.Options{})
	s.Setup(t)
	const dev, alert = "dev-ts", "a-ts"

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, tsx, filepath.Join(dir, "integration", "ts", "client.ts"),
		s.Addr("risk"), s.Addr("compliance"), dev, alert, harness.ManualGroup)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("TypeScript client: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	var got struct {
		EnrolledPlatform string   `json:"enrolledPlatform"`
		Created          bool     `json:"created"`
		CreatedAgain     bool     `json:"createdAgain"`
		ReportedRisk     string   `json:"reportedRisk"`
		RiskLevel        string   `json:"riskLevel"`
		ActiveAlertIDs   []string `json:"activeAlertIds"`
		InvalidCode      string   `json:"invalidCode"`
		NotFoundCode     string   `json:"notFoundCode"`
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &got); err != nil {
		t.Fatalf("TypeScript client printed no JSON result: %v\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	want := got
	want.EnrolledPlatform, want.Created, want.CreatedAgain = "MACOS", true, false
	want.ReportedRisk, want.RiskLevel, want.ActiveAlertIDs = "HIGH", "HIGH", []string{alert}
	want.InvalidCode, want.NotFoundCode = "InvalidArgument", "NotFound"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("what the TypeScript client saw (-want +got):\n%s", diff)
	}

	// The alert reported from TypeScript flows on through the Go services.
	s.WaitCompliance(t, dev, commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT)
	s.WaitDecision(t, dev, accessv1.Decision_DECISION_BLOCK)
}

// tsWorkspace lays out a folder that mirrors the repository for the TypeScript
// client: gen/ts (with protovalidate's generated descriptor, which the generated code
// imports), integration/ts, and node_modules (a link to .ci/node/node_modules).
func tsWorkspace(t *testing.T, root, modules string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(filepath.Join(dir, "gen", "ts"), os.DirFS(filepath.Join(root, "gen", "ts"))); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(filepath.Join(dir, "integration", "ts"), os.DirFS(filepath.Join(root, "integration", "ts"))); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(modules, filepath.Join(dir, "node_modules")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "package.json"), []byte(`{"type":"module","private":true}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}
