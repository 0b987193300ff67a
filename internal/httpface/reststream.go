package httpface

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/condaccess/condaccess/internal/apierr"
)

// NDJSONContentType is the Content-Type of a REST server stream: one JSON message a
// line (newline-delimited JSON).
const NDJSONContentType = "application/x-ndjson"

// The REST face of the server streams (the Watch… RPCs). Vanguard v0.4.0 streams over
// Connect, gRPC-Web and gRPC but answers 415 to a REST call of a server stream (it
// streams REST responses only for google.api.HttpBody). restStreams serves the GET
// mappings of every server stream itself: it reads the request message from the path
// and the query, hands the call to the transcoder as a Connect server stream (the
// same transcoder, grpc.Server and interceptors as every other call, the caller's
// identity in the request context and TLS state exactly as for Connect), and writes
// each response message as a line of protojson, flushed, to the REST client. An error
// before the first message is the google.rpc.Status JSON with the HTTP code of its
// gRPC code, as for unary REST calls; an error after it is a last line
// {"error": google.rpc.Status} (no response message has a top-level "error" field:
// TestStreamResponsesHaveNoErrorField).

// ReasonCrossSiteRequest is the ErrorInfo reason of a REST stream a browser was asked
// to open by a page of another origin (Sec-Fetch-Site cross-site or same-site).
const ReasonCrossSiteRequest = "CROSS_SITE_REQUEST"

// streamWriteTimeout is how long a line of a REST stream may wait for the client to
// read it (a variable for tests).
var streamWriteTimeout = 30 * time.Second

// restStreamRoute is one REST binding (google.api.http GET) of a server stream.
type restStreamRoute struct {
	rpc      string // /package.Service/Method
	method   protoreflect.MethodDescriptor
	input    protoreflect.MessageType
	template pathTemplate
}

// pathTemplate is a google.api.http path template of the forms this face serves:
// literal segments and single-segment variables ({field} or {field=*}), with an
// optional :verb.
type pathTemplate struct {
	raw      string
	segments []templateSegment
	verb     string
}

// templateSegment is a literal, or (fields non-nil) a variable bound to a field path.
type templateSegment struct {
	literal string
	fields  []protoreflect.FieldDescriptor
}

// restStreamRoutes returns the REST bindings of the server streams of the named
// services, from their descriptors: every GET mapping (and additional binding) of
// every method that streams responses but not requests. A server stream mapped to
// another HTTP method, or with a path template this face cannot serve, is an error:
// a Watch RPC added to the contracts is served over REST, or the build's tests fail.
func restStreamRoutes(services []string) ([]restStreamRoute, error) {
	var routes []restStreamRoute
	for _, name := range services {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			return nil, fmt.Errorf("httpface: service %s: %w", name, err)
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			return nil, fmt.Errorf("httpface: %s is not a service", name)
		}
		for i := 0; i < sd.Methods().Len(); i++ {
			md := sd.Methods().Get(i)
			if !md.IsStreamingServer() || md.IsStreamingClient() {
				continue
			}
			rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
			if rule == nil {
				continue // TestEveryRPCHasRESTMapping requires one
			}
			input, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
			if err != nil {
				return nil, fmt.Errorf("httpface: %s: request type: %w", md.FullName(), err)
			}
			for _, b := range append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...) {
				path := b.GetGet()
				if path == "" {
					return nil, fmt.Errorf("httpface: %s: a server stream's REST mapping must be a GET", md.FullName())
				}
				tmpl, err := parsePathTemplate(path, md.Input())
				if err != nil {
					return nil, fmt.Errorf("httpface: %s: %w", md.FullName(), err)
				}
				routes = append(routes, restStreamRoute{
					rpc:    "/" + string(sd.FullName()) + "/" + string(md.Name()),
					method: md, input: input, template: tmpl,
				})
			}
		}
	}
	return routes, nil
}

// parsePathTemplate parses a google.api.http path template against the request
// message md. Multi-segment variables ({name=a/*}, **) are refused.
func parsePathTemplate(path string, md protoreflect.MessageDescriptor) (pathTemplate, error) {
	t := pathTemplate{raw: path}
	if !strings.HasPrefix(path, "/") {
		return t, fmt.Errorf("path template %q does not start with /", path)
	}
	rest := path[1:]
	// The verb follows the last ':' that is not inside a variable.
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && !strings.Contains(rest[i:], "}") {
		rest, t.verb = rest[:i], rest[i+1:]
		if t.verb == "" {
			return t, fmt.Errorf("path template %q has an empty verb", path)
		}
	}
	for _, seg := range strings.Split(rest, "/") {
		switch {
		case seg == "":
			return t, fmt.Errorf("path template %q has an empty segment", path)
		case strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}"):
			name, pattern, hasPattern := strings.Cut(seg[1:len(seg)-1], "=")
			if hasPattern && pattern != "*" {
				return t, fmt.Errorf("path template %q: variable %s: only single-segment variables ({field} or {field=*}) are served for streams", path, seg)
			}
			fields, err := resolveFieldPath(md, name)
			if err != nil {
				return t, fmt.Errorf("path template %q: %w", path, err)
			}
			if !isParameterField(fields[len(fields)-1]) || fields[len(fields)-1].IsList() {
				return t, fmt.Errorf("path template %q: variable %s is not a singular scalar field", path, name)
			}
			t.segments = append(t.segments, templateSegment{fields: fields})
		case strings.ContainsAny(seg, "{}*"):
			return t, fmt.Errorf("path template %q: segment %q is not served for streams", path, seg)
		default:
			t.segments = append(t.segments, templateSegment{literal: seg})
		}
	}
	return t, nil
}

// match reports whether the escaped request path matches t, and the value of each
// variable (unescaped) in template order.
func (t pathTemplate) match(escaped string) ([]string, bool) {
	rest, ok := strings.CutPrefix(escaped, "/")
	if !ok {
		return nil, false
	}
	if t.verb != "" {
		if rest, ok = strings.CutSuffix(rest, ":"+t.verb); !ok {
			return nil, false
		}
	}
	parts := strings.Split(rest, "/")
	if len(parts) != len(t.segments) {
		return nil, false
	}
	var vars []string
	for i, seg := range t.segments {
		v, err := url.PathUnescape(parts[i])
		if err != nil {
			return nil, false
		}
		if seg.fields == nil {
			if v != seg.literal {
				return nil, false
			}
			continue
		}
		if v == "" {
			return nil, false
		}
		vars = append(vars, v)
	}
	return vars, true
}

// restStreams serves the REST bindings in routes (GET only) and passes every other
// request to next, which is also what serves the Connect call each binding becomes.
func restStreams(routes []restStreamRoute, next http.Handler) http.Handler {
	if len(routes) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			next.ServeHTTP(w, r)
			return
		}
		for _, route := range routes {
			if vars, ok := route.template.match(r.URL.EscapedPath()); ok {
				if site := r.Header.Get("Sec-Fetch-Site"); site == "cross-site" || site == "same-site" {
					// A page of another origin cannot read the stream (no CORS), but it
					// could make a visitor's browser open watches with the visitor's
					// certificate or session until their watch cap is spent. Browsers
					// send Sec-Fetch-Site; curl and programs do not.
					writeRESTStatus(w, status.Convert(apierr.New(codes.PermissionDenied, ReasonCrossSiteRequest,
						"a REST stream may not be opened from a page of another origin")))
					return
				}
				route.serve(w, r, vars, next)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// serve reads the request message from the path variables and the query, calls the
// RPC as a Connect server stream through next, and relays its messages as NDJSON.
func (rt restStreamRoute) serve(w http.ResponseWriter, r *http.Request, vars []string, next http.Handler) {
	msg := rt.input.New()
	if err := rt.readRequest(msg, vars, r.URL.Query()); err != nil {
		writeRESTStatus(w, status.Convert(err))
		return
	}
	b, err := protojson.Marshal(msg.Interface())
	if err != nil {
		writeRESTStatus(w, status.New(codes.Internal, "encode request: "+err.Error()))
		return
	}
	var body bytes.Buffer
	body.Grow(5 + len(b))
	body.Write([]byte{0, 0, 0, 0, 0})
	binary.BigEndian.PutUint32(body.Bytes()[1:5], uint32(len(b)))
	body.Write(b)

	// The same request (context with the caller's identity, TLS state, remote
	// address, headers such as traceparent) as a Connect server-stream call.
	in := r.Clone(r.Context())
	in.Method = http.MethodPost
	in.URL.Path, in.URL.RawPath, in.URL.RawQuery = rt.rpc, "", ""
	in.RequestURI = rt.rpc
	for _, h := range []string{"Content-Encoding", "Accept-Encoding", "Connect-Content-Encoding", "Connect-Accept-Encoding", "Content-Length", "Transfer-Encoding"} {
		in.Header.Del(h)
	}
	in.Header.Set("Content-Type", "application/connect+json")
	in.Header.Set("Connect-Protocol-Version", "1")
	in.Body = http.NoBody
	if body.Len() > 0 {
		in.Body = readCloser{&body}
	}
	in.ContentLength = int64(body.Len())
	in.TransferEncoding = nil

	sw := &ndjsonWriter{out: w, header: http.Header{}}
	// The connection may serve other requests after the stream: no write deadline left.
	defer func() { _ = http.NewResponseController(w).SetWriteDeadline(time.Time{}) }()
	next.ServeHTTP(sw, in)
	sw.finish()
}

type readCloser struct{ *bytes.Buffer }

func (readCloser) Close() error { return nil }
