package httpface

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"sigs.k8s.io/yaml"

	"github.com/condaccess/condaccess"
	_ "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	_ "github.com/condaccess/condaccess/gen/go/condaccess/audit/v1"
	_ "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	_ "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	_ "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
)

// condaccessMethods returns every RPC of every condaccess service in the registry.
func condaccessMethods(t *testing.T) []protoreflect.MethodDescriptor {
	t.Helper()
	var ms []protoreflect.MethodDescriptor
	protoregistry.GlobalFiles.RangeFiles(func(f protoreflect.FileDescriptor) bool {
		if !strings.HasPrefix(string(f.Package()), servicePrefix) {
			return true
		}
		for i := 0; i < f.Services().Len(); i++ {
			s := f.Services().Get(i)
			for j := 0; j < s.Methods().Len(); j++ {
				ms = append(ms, s.Methods().Get(j))
			}
		}
		return true
	})
	if len(ms) < 70 {
		t.Fatalf("found %d condaccess RPCs; are the generated packages imported?", len(ms))
	}
	return ms
}

func httpRule(m protoreflect.MethodDescriptor) *annotations.HttpRule {
	r, _ := proto.GetExtension(m.Options(), annotations.E_Http).(*annotations.HttpRule)
	return r
}

func ruleVerbPath(r *annotations.HttpRule) (string, string) {
	switch p := r.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		return "get", p.Get
	case *annotations.HttpRule_Post:
		return "post", p.Post
	case *annotations.HttpRule_Put:
		return "put", p.Put
	case *annotations.HttpRule_Patch:
		return "patch", p.Patch
	case *annotations.HttpRule_Delete:
		return "delete", p.Delete
	}
	return "", ""
}

// TestEveryRPCHasRESTMapping: every unary and server-streaming RPC of the contracts has
// a google.api.http mapping under /v1/; client and bidirectional streams have none
// (REST cannot carry them); no two RPCs share a verb and path.
func TestEveryRPCHasRESTMapping(t *testing.T) {
	seen := map[string]protoreflect.FullName{}
	for _, m := range condaccessMethods(t) {
		r := httpRule(m)
		if m.IsStreamingClient() {
			if r != nil {
				t.Errorf("%s: a client stream has a REST mapping", m.FullName())
			}
			continue
		}
		if r == nil {
			t.Errorf("%s: no google.api.http mapping; add option (google.api.http) following AIP-127/AIP-136 and run bash .ci/gen", m.FullName())
			continue
		}
		verb, path := ruleVerbPath(r)
		if !strings.HasPrefix(path, "/v1/") {
			t.Errorf("%s: path %q is not under /v1/", m.FullName(), path)
		}
		if (verb == "get" || verb == "delete") && r.GetBody() != "" {
			t.Errorf("%s: %s with a body", m.FullName(), verb)
		}
		if (verb == "post" || verb == "patch" || verb == "put") && r.GetBody() == "" {
			t.Errorf("%s: %s without a body", m.FullName(), verb)
		}
		key := verb + " " + path
		if other, ok := seen[key]; ok {
			t.Errorf("%s and %s both map %s", m.FullName(), other, key)
		}
		seen[key] = m.FullName()
	}
}

var pathParam = regexp.MustCompile(`\{[^}]*\}`)

// TestOpenAPIDocumentsEveryMapping: the committed OpenAPI document (gen/openapi) names
// every REST mapping with its verb, and the handler serves it.
func TestOpenAPIDocumentsEveryMapping(t *testing.T) {
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := yaml.Unmarshal(condaccess.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi = %q, want 3.x", doc.OpenAPI)
	}
	// Path parameter names differ in case (the document uses JSON names): compare
	// paths with their parameters blanked.
	paths := map[string]map[string]any{}
	for p, ops := range doc.Paths {
		k := pathParam.ReplaceAllString(p, "{}")
		if paths[k] == nil {
			paths[k] = map[string]any{}
		}
		for verb, op := range ops {
			paths[k][verb] = op
		}
	}
	n := 0
	for _, m := range condaccessMethods(t) {
		r := httpRule(m)
		if r == nil {
			continue
		}
		verb, path := ruleVerbPath(r)
		if _, ok := paths[pathParam.ReplaceAllString(path, "{}")][verb]; !ok {
			t.Errorf("%s: %s %s missing from gen/openapi/openapi.yaml", m.FullName(), verb, path)
		}
		n++
	}
	if n == 0 {
		t.Fatal("no mappings checked")
	}

	h, err := Handler(Config{GRPC: grpc.NewServer(), Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		method string
		want   int
	}{
		{http.MethodGet, 200},
		{http.MethodHead, 200},
		{http.MethodPost, http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			w := httptest.NewRecorder()
			r := httptest.NewRequest(tt.method, OpenAPIPath, nil)
			r.Host = "127.0.0.1:7480"
			h.ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Fatalf("status = %d, want %d", w.Code, tt.want)
			}
			if tt.method == http.MethodGet && (w.Header().Get("Content-Type") != "application/yaml" || w.Body.String() != string(condaccess.OpenAPI)) {
				t.Errorf("Content-Type %q, body %d bytes, want application/yaml and the document", w.Header().Get("Content-Type"), w.Body.Len())
			}
		})
	}
}
