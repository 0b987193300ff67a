package httpface

import (
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	_ "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	_ "github.com/condaccess/condaccess/gen/go/condaccess/audit/v1"
	_ "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	_ "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	_ "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/auth"
)

// TestGuardOpenPaths: the guard lets a caller without an identity reach exactly the
// end user's blocked-status methods (open to the auth layer too), by their RPC path
// and by their REST mapping, and refuses it every other condaccess RPC and REST
// mapping (enrollment, health and reflection included: gRPC only) before reading
// the body.
func TestGuardOpenPaths(t *testing.T) {
	var open, closed int
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			if !hasPrefix(string(sd.FullName()), servicePrefix) {
				continue
			}
			for j := 0; j < sd.Methods().Len(); j++ {
				md := sd.Methods().Get(j)
				full := "/" + string(sd.FullName()) + "/" + string(md.Name())
				isOpen := httpOpenMethods[full] && auth.IsOpen(full)
				if got := needsIdentity(full); got == isOpen {
					t.Errorf("needsIdentity(%s) = %v, want %v", full, got, !isOpen)
				}
				rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
				path := rule.GetGet() + rule.GetPost() + rule.GetPatch() + rule.GetPut() + rule.GetDelete()
				if path == "" {
					continue
				}
				if got := needsIdentity(path); got == isOpen {
					t.Errorf("needsIdentity(REST %s of %s) = %v, want %v", path, full, got, !isOpen)
				}
				if isOpen {
					open++
				} else {
					closed++
				}
			}
		}
		return true
	})
	if open < 2 || closed < 50 {
		t.Fatalf("checked %d open and %d closed REST mappings; the descriptors were not all found", open, closed)
	}
	for _, p := range []string{"/", "/devices/dev-1", "/openapi.yaml", "/assets/index.js"} {
		if needsIdentity(p) {
			t.Errorf("needsIdentity(%s) = true: console pages and assets carry no data", p)
		}
	}
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }
