// Package httpface serves the browser-facing part of the HTTP address: the Connect,
// gRPC-Web and REST protocols for every condaccess RPC (connectrpc.com/vanguard over the
// suite's own grpc.Server, so the same interceptors apply) and the embedded console.
package httpface

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/condaccess/condaccess"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/server"
)

// servicePrefix selects the services the HTTP face exposes: the condaccess contracts.
// Health, reflection and Envoy's ext_authz stay gRPC-only.
const servicePrefix = "condaccess."

// Config configures Handler.
type Config struct {
	// GRPC is the server whose registered condaccess services are exposed. Every
	// service must be registered before Handler is called.
	GRPC *grpc.Server
	// Insecure is true in loopback development mode. The handler then accepts only
	// requests whose Host is a loopback name or address, so that a web page on another
	// origin cannot reach the development identity through DNS rebinding.
	Insecure bool
	// MaxMessageBytes caps each request and response message the transcoder buffers;
	// default server.DefaultMaxRecvMsgSize, the gRPC server's own cap.
	MaxMessageBytes uint32
	// HoldCall, when set, applies the per-identity cap on calls in flight before the
	// transcoder reads a request (server.Server.HoldCall); see holdCalls.
	HoldCall HoldCallFunc
}

// Handler returns the handler for the root of the HTTP address: RPC paths
// (/condaccess.<svc>.v1.<Service>/<Method>) and the REST paths of the contracts'
// google.api.http mappings (/v1/...) go to the transcoder; /openapi.yaml is the
// generated OpenAPI document; the console's routes and assets are served from the
// embedded build; anything else is 404.
// Cross-origin requests (an Origin header naming another host) are refused.
func Handler(cfg Config) (http.Handler, error) {
	if cfg.GRPC == nil {
		return nil, fmt.Errorf("httpface: no grpc.Server")
	}
	names := make([]string, 0)
	for name := range cfg.GRPC.GetServiceInfo() {
		if strings.HasPrefix(name, servicePrefix) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	services := make([]*vanguard.Service, len(names))
	for i, name := range names {
		services[i] = vanguard.NewService(name, cfg.GRPC)
	}
	codecs := []string{vanguard.CodecProto}
	if encoding.GetCodec(vanguard.CodecJSON) != nil {
		codecs = append(codecs, vanguard.CodecJSON)
	}
	limit := cfg.MaxMessageBytes
	if limit == 0 {
		limit = server.DefaultMaxRecvMsgSize
	}
	tc, err := vanguard.NewTranscoder(services,
		vanguard.WithDefaultServiceOptions(
			vanguard.WithTargetCodecs(codecs...),
			vanguard.WithTargetProtocols(vanguard.ProtocolGRPC),
			// Vanguard buffers whole messages; its default cap is 4 GB.
			vanguard.WithMaxMessageBufferBytes(limit),
		),
		vanguard.WithUnknownHandler(withOpenAPI(Console())),
		// A request body that does not decode is the caller's fault: INVALID_ARGUMENT,
		// not vanguard's default INTERNAL. Unknown JSON fields are refused, naming the
		// field (vanguard's default drops them silently: a misspelt field would be a
		// silent default).
		vanguard.WithCodec(func(r vanguard.TypeResolver) vanguard.Codec {
			c := vanguard.NewJSONCodec(r)
			c.UnmarshalOptions.DiscardUnknown = false
			return jsonCodec{c}
		}),
		vanguard.WithCodec(func(r vanguard.TypeResolver) vanguard.Codec { return protoCodec{vanguard.NewProtoCodec(r)} }),
	)
	if err != nil {
		return nil, fmt.Errorf("httpface: transcoder: %w", err)
	}
	// REST calls of the server streams, which the transcoder does not stream, become
	// Connect calls through the same chain (reststream.go).
	streams, err := restStreamRoutes(names)
	if err != nil {
		return nil, err
	}
	return guard(cfg.Insecure, restStreams(streams, holdCalls(cfg.HoldCall, tc))), nil
}

// Mount registers Handler at the root of mux; more specific patterns already on mux
// (/metrics, /authz, /access/status) keep precedence.
func Mount(mux *http.ServeMux, cfg Config) error {
	h, err := Handler(cfg)
	if err != nil {
		return err
	}
	mux.Handle("/", h)
	return nil
}

// OpenAPIPath is where the HTTP face serves the contracts' OpenAPI 3 document.
const OpenAPIPath = "/openapi.yaml"

// withOpenAPI serves condaccess.OpenAPI at OpenAPIPath and passes every other
// request to next.
func withOpenAPI(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != OpenAPIPath {
			next.ServeHTTP(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/yaml")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-cache")
		http.ServeContent(w, r, "openapi.yaml", time.Time{}, bytes.NewReader(condaccess.OpenAPI))
	})
}

// guard refuses cross-origin requests and, in development mode, requests addressed to
// a non-loopback host name. Outside development mode it refuses an RPC from a caller
// without a verified client certificate (UNAUTHENTICATED) before the transcoder reads
// its body: vanguard buffers a whole request message (up to MaxMessageBytes) before
// the gRPC interceptors can authenticate, so strangers could otherwise make the server
// hold megabytes per request. The end user's blocked-status lookups (httpOpenMethods)
// pass, and so does a console session, which Login.Wrap has put in the context
// before this guard runs.
func guard(insecure bool, next http.Handler) http.Handler {
	errw := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if insecure && !loopbackHost(r.Host) {
			http.Error(w, "development mode serves loopback host names only", http.StatusMisdirectedRequest)
			return
		}
		if o := r.Header.Get("Origin"); o != "" {
			u, err := url.Parse(o)
			if err != nil || !strings.EqualFold(u.Host, r.Host) {
				http.Error(w, "cross-origin request refused", http.StatusForbidden)
				return
			}
		}
		if !insecure && !authenticated(r) && needsIdentity(r.URL.Path) {
			err := connect.NewError(connect.CodeUnauthenticated, errors.New("a verified client certificate is required"))
			if d, derr := connect.NewErrorDetail(&errdetails.ErrorInfo{Reason: auth.ReasonUnauthenticated, Domain: apierr.Domain}); derr == nil {
				err.AddDetail(d)
			}
			if strings.HasPrefix(r.URL.Path, "/v1/") {
				// REST callers get the google.rpc.Status JSON body the transcoder gives
				// every other REST error.
				st := apierr.New(codes.Unauthenticated, auth.ReasonUnauthenticated, "a verified client certificate is required")
				b, _ := protojson.Marshal(status.Convert(st).Proto())
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				_, _ = w.Write(b)
				return
			}
			if errw.IsSupported(r) {
				_ = errw.Write(w, r, err)
				return
			}
			http.Error(w, "unauthenticated: "+err.Message(), http.StatusUnauthorized)
			return
		}
		if !insecure && !authenticated(r) {
			// A stranger reaches only pages and the end user's blocked-status lookups,
			// whose requests are a few kilobytes: the transcoder would otherwise buffer
			// up to MaxMessageBytes of whatever it sends.
			r.Body = http.MaxBytesReader(w, r.Body, StrangerBodyBytes)
		}
		next.ServeHTTP(w, r)
	})
}

// httpOpenMethods are the RPCs a caller without an identity may reach through the HTTP
// face: the end user's blocked-status lookups, which the browser of a person without
// a certificate makes. The other open methods (health, reflection, device enrollment)
// are for gRPC clients and are refused here before their body is read.
var httpOpenMethods = map[string]bool{
	"/condaccess.access.v1.AccessService/GetBlockedStatus":   true,
	"/condaccess.access.v1.AccessService/WatchBlockedStatus": true,
}

// StrangerBodyBytes caps the request body a caller without an identity may send
// through the HTTP face (GetBlockedStatusRequest holds a reference of at most 2 KiB).
const StrangerBodyBytes = 64 << 10

// needsIdentity reports whether the RPC or REST path may be called only by an
// authenticated caller: every condaccess RPC but httpOpenMethods (which must also be
// open to the auth layer), and every REST mapping but theirs (openREST).
func needsIdentity(path string) bool {
	switch {
	case strings.HasPrefix(path, "/"+servicePrefix):
		return !(httpOpenMethods[path] && auth.IsOpen(path))
	case strings.HasPrefix(path, "/v1/"):
		return !openREST()[path]
	}
	return false
}

// openREST is the set of REST paths (google.api.http) of httpOpenMethods, from the
// registered descriptors. A mapping with path variables never matches a request path
// exactly, so such a method would be refused here: closed, not open, by default.
var openREST = sync.OnceValue(func() map[string]bool {
	out := map[string]bool{}
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			for j := 0; j < sd.Methods().Len(); j++ {
				md := sd.Methods().Get(j)
				full := "/" + string(sd.FullName()) + "/" + string(md.Name())
				if !httpOpenMethods[full] || !auth.IsOpen(full) {
					continue
				}
				rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
				if p := rule.GetGet() + rule.GetPost() + rule.GetPatch() + rule.GetPut() + rule.GetDelete(); p != "" {
					out[p] = true
				}
			}
		}
		return true
	})
	return out
})

// authenticated reports whether r carries an identity (auth.HTTPIdentity) or a client
// certificate verified at the TLS handshake (what the gRPC server reads from it).
func authenticated(r *http.Request) bool {
	if _, ok := auth.FromContext(r.Context()); ok {
		return true
	}
	return r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0
}

func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// jsonCodec and protoCodec report undecodable request bodies as INVALID_ARGUMENT;
// jsonCodec names an unknown field in a BadRequest field violation.
type jsonCodec struct{ *vanguard.JSONCodec }

func (c jsonCodec) Unmarshal(b []byte, m proto.Message) error {
	err := c.JSONCodec.Unmarshal(b, m)
	if err != nil && c.isUnknownField(b, m) {
		return unknownField(unknownFieldPath(b, m.ProtoReflect().Descriptor(), ""), err)
	}
	return malformed(err)
}

// UnmarshalField decodes a REST body mapped to one field (google.api.http body:
// "field"): vanguard's own method would bypass Unmarshal above.
func (c jsonCodec) UnmarshalField(b []byte, m proto.Message, fd protoreflect.FieldDescriptor) error {
	err := c.JSONCodec.UnmarshalField(b, m, fd)
	if err != nil && fd.Message() != nil && !fd.IsList() && !fd.IsMap() {
		msg := m.ProtoReflect().NewField(fd).Message().Interface()
		if c.isUnknownField(b, msg) {
			return unknownField(unknownFieldPath(b, fd.Message(), ""), err)
		}
	}
	return malformed(err)
}

// isUnknownField reports whether b decodes into a fresh m once unknown fields are
// discarded: then an unknown field was the only fault.
func (c jsonCodec) isUnknownField(b []byte, m proto.Message) bool {
	o := c.UnmarshalOptions
	o.DiscardUnknown = true
	return o.Unmarshal(b, m.ProtoReflect().New().Interface()) == nil
}

// unknownField is the INVALID_ARGUMENT of a request body with a field its message does
// not have, in the shape of every validation failure (ErrorInfo INVALID_ARGUMENT and a
// BadRequest field violation naming the field).
func unknownField(path string, cause error) error {
	desc := "unknown field: the request message has no such field"
	if path == "" {
		desc = cause.Error()
	}
	err := connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("invalid request: unknown field %q", path))
	for _, d := range []proto.Message{
		&errdetails.ErrorInfo{Reason: apierr.ReasonInvalidArgument, Domain: apierr.Domain},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{apierr.FieldViolation(path, desc)}},
	} {
		if det, derr := connect.NewErrorDetail(d); derr == nil {
			err.AddDetail(det)
		}
	}
	return err
}

// unknownFieldPath returns the path (JSON names, e.g. "alert.evidence[0].nope") of the
// first member of the JSON object b that md has no field for, or "" when there is none
// it can find (then the caller reports protojson's message). Well-known types, whose
// JSON forms are not objects of their fields, are not entered.
func unknownFieldPath(b []byte, md protoreflect.MessageDescriptor, prefix string) string {
	var obj map[string]json.RawMessage
	if json.Unmarshal(b, &obj) != nil {
		return ""
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		path := k
		if prefix != "" {
			path = prefix + "." + k
		}
		if strings.HasPrefix(k, "[") {
			continue // an extension, resolved by protojson
		}
		fd := md.Fields().ByJSONName(k)
		if fd == nil {
			fd = md.Fields().ByTextName(k)
		}
		if fd == nil {
			return path
		}
		sub := fd.Message()
		if fd.IsMap() {
			sub = fd.MapValue().Message()
		}
		if sub == nil || strings.HasPrefix(string(sub.FullName()), "google.protobuf.") {
			continue
		}
		switch {
		case fd.IsList():
			var items []json.RawMessage
			if json.Unmarshal(obj[k], &items) == nil {
				for i, it := range items {
					if p := unknownFieldPath(it, sub, fmt.Sprintf("%s[%d]", path, i)); p != "" {
						return p
					}
				}
			}
		case fd.IsMap():
			var vals map[string]json.RawMessage
			if json.Unmarshal(obj[k], &vals) == nil {
				mk := make([]string, 0, len(vals))
				for v := range vals {
					mk = append(mk, v)
				}
				sort.Strings(mk)
				for _, v := range mk {
					if p := unknownFieldPath(vals[v], sub, fmt.Sprintf("%s[%q]", path, v)); p != "" {
						return p
					}
				}
			}
		default:
			if p := unknownFieldPath(obj[k], sub, path); p != "" {
				return p
			}
		}
	}
	return ""
}

type protoCodec struct{ *vanguard.ProtoCodec }

func (c protoCodec) Unmarshal(b []byte, m proto.Message) error {
	return malformed(c.ProtoCodec.Unmarshal(b, m))
}

func malformed(err error) error {
	if err == nil {
		return nil
	}
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("malformed request: %w", err))
}
