package integration

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"

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
// client: gen/ts, integration/ts, node_modules (a link to .ci/node/node_modules), and
// gen/ts/buf/validate/validate_pb.ts. The generated code imports protovalidate's
// descriptor from there, but gen/ts does not hold it (buf.gen.yaml generates no
// imports); it is generated here from the descriptor the Go code embeds.
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
	validate := filepath.Join(dir, "gen", "ts", "buf", "validate", "validate_pb.ts")
	if _, err := os.Stat(validate); err == nil {
		return dir // generated after all
	}
	src, err := validateDescriptorTS()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(validate), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(validate, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// wktExports are the @bufbuild/protobuf/wkt exports of the well-known files
// protovalidate imports.
var wktExports = map[string]string{
	"google/protobuf/descriptor.proto": "file_google_protobuf_descriptor",
	"google/protobuf/duration.proto":   "file_google_protobuf_duration",
	"google/protobuf/timestamp.proto":  "file_google_protobuf_timestamp",
	"google/protobuf/field_mask.proto": "file_google_protobuf_field_mask",
	"google/protobuf/any.proto":        "file_google_protobuf_any",
	"google/protobuf/struct.proto":     "file_google_protobuf_struct",
	"google/protobuf/wrappers.proto":   "file_google_protobuf_wrappers",
	"google/protobuf/empty.proto":      "file_google_protobuf_empty",
}

func validateDescriptorTS() (string, error) {
	fd, err := protoregistry.GlobalFiles.FindFileByPath("buf/validate/validate.proto")
	if err != nil {
		return "", fmt.Errorf("protovalidate descriptor: %w", err)
	}
	b, err := proto.Marshal(protodesc.ToFileDescriptorProto(fd))
	if err != nil {
		return "", err
	}
	var deps []string
	for i := 0; i < fd.Imports().Len(); i++ {
		p := fd.Imports().Get(i).Path()
		e, ok := wktExports[p]
		if !ok {
			return "", fmt.Errorf("protovalidate imports %s, which is not a known well-known file", p)
		}
		deps = append(deps, e)
	}
	return fmt.Sprintf(`// Generated by integration/ts_client_test.go from the descriptor embedded in the Go code.
import type { GenFile } from "@bufbuild/protobuf/codegenv2";
import { fileDesc } from "@bufbuild/protobuf/codegenv2";
import { %s } from "@bufbuild/protobuf/wkt";

export const file_buf_validate_validate: GenFile = fileDesc(%q, [%s]);
`, strings.Join(deps, ", "), base64.StdEncoding.EncodeToString(b), strings.Join(deps, ", ")), nil
}
