package httpface

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"

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

// maxQueryViolations bounds the field violations one refused request reports.
const maxQueryViolations = 16

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

// readRequest sets msg's fields from the path variables and the query parameters
// (field paths by JSON or proto name, nested by '.', a repeated field by repeating
// the parameter). An unknown parameter or a value that does not parse is an
// INVALID_ARGUMENT naming it, as an unknown JSON field is.
func (rt restStreamRoute) readRequest(msg protoreflect.Message, vars []string, query map[string][]string) error {
	var violations []*errdetails.BadRequest_FieldViolation
	i := 0
	for _, seg := range rt.template.segments {
		if seg.fields == nil {
			continue
		}
		if err := setField(msg, seg.fields, vars[i]); err != nil {
			violations = append(violations, apierr.FieldViolation(protoPath(seg.fields), err.Error()))
		}
		i++
	}
	keys := make([]string, 0, len(query))
	for k := range query {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if len(violations) >= maxQueryViolations {
			break
		}
		fields, err := resolveFieldPath(msg.Descriptor(), k)
		if err == nil && (!isParameterField(fields[len(fields)-1]) || fields[len(fields)-1].IsMap()) {
			err = errors.New("this field cannot be given as a query parameter")
		}
		if err == nil && rt.boundByPath(fields) {
			err = errors.New("this field is given by the path")
		}
		if err != nil {
			violations = append(violations, apierr.FieldViolation(k, err.Error()))
			continue
		}
		vals := query[k]
		if !fields[len(fields)-1].IsList() && len(vals) > 1 {
			violations = append(violations, apierr.FieldViolation(protoPath(fields), "given more than once"))
			continue
		}
		for _, v := range vals {
			if err := setField(msg, fields, v); err != nil {
				violations = append(violations, apierr.FieldViolation(protoPath(fields), err.Error()))
				break
			}
		}
	}
	if len(violations) > 0 {
		return apierr.InvalidArgument("", violations...)
	}
	return nil
}

func (rt restStreamRoute) boundByPath(fields []protoreflect.FieldDescriptor) bool {
	for _, seg := range rt.template.segments {
		if seg.fields != nil && protoPath(seg.fields) == protoPath(fields) {
			return true
		}
	}
	return false
}

// resolveFieldPath resolves a dotted field path (JSON names, else proto names) in md;
// every element but the last is a singular message field.
func resolveFieldPath(md protoreflect.MessageDescriptor, path string) ([]protoreflect.FieldDescriptor, error) {
	var out []protoreflect.FieldDescriptor
	for i, part := range strings.Split(path, ".") {
		if md == nil {
			return nil, fmt.Errorf("unknown field: %s is not a message", out[i-1].Name())
		}
		fd := md.Fields().ByJSONName(part)
		if fd == nil {
			fd = md.Fields().ByName(protoreflect.Name(part))
		}
		if fd == nil {
			return nil, errors.New("unknown field: the request message has no such field")
		}
		if len(out) > 0 && out[len(out)-1].IsList() {
			return nil, fmt.Errorf("unknown field: %s is repeated", out[len(out)-1].Name())
		}
		out = append(out, fd)
		md = fd.Message()
		if md != nil && isScalarWKT(md) {
			md = nil
		}
	}
	return out, nil
}

func protoPath(fields []protoreflect.FieldDescriptor) string {
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = string(f.Name())
	}
	return strings.Join(names, ".")
}

// isParameterField reports whether fd's values can be written as a query parameter or
// path segment: a scalar, an enum, or a well-known type whose JSON is a scalar.
func isParameterField(fd protoreflect.FieldDescriptor) bool {
	if fd.Kind() == protoreflect.GroupKind {
		return false
	}
	return fd.Kind() != protoreflect.MessageKind || isScalarWKT(fd.Message())
}

func isScalarWKT(md protoreflect.MessageDescriptor) bool {
	if md.ParentFile().Package() != "google.protobuf" {
		return false
	}
	switch md.Name() {
	case "BoolValue", "BytesValue", "DoubleValue", "FloatValue", "Int32Value", "Int64Value",
		"UInt32Value", "UInt64Value", "StringValue", "Duration", "Timestamp", "FieldMask":
		return true
	}
	return false
}

// setField sets (or, for a repeated field, appends) the field at the end of fields
// from its text form: the JSON value of the field, unquoted. The text is decoded by
// protojson, as a JSON body's value would be.
func setField(msg protoreflect.Message, fields []protoreflect.FieldDescriptor, text string) error {
	leaf := msg
	for _, f := range fields[:len(fields)-1] {
		leaf = leaf.Mutable(f).Message()
	}
	fd := fields[len(fields)-1]
	var value []byte
	switch {
	case fd.Kind() == protoreflect.BoolKind,
		fd.Kind() == protoreflect.MessageKind && fd.Message().Name() == "BoolValue":
		b, err := strconv.ParseBool(text)
		if err != nil {
			return fmt.Errorf("%q is not a boolean", text)
		}
		value = []byte(strconv.FormatBool(b))
	case fd.Kind() == protoreflect.EnumKind:
		if n, err := strconv.ParseInt(text, 10, 32); err == nil {
			if fd.Enum().Values().ByNumber(protoreflect.EnumNumber(n)) == nil {
				return fmt.Errorf("%d is not a value of %s", n, fd.Enum().FullName())
			}
			value = []byte(text)
		} else {
			if fd.Enum().Values().ByName(protoreflect.Name(text)) == nil {
				return fmt.Errorf("%q is not a value of %s", text, fd.Enum().FullName())
			}
			value, _ = json.Marshal(text)
		}
	default:
		value, _ = json.Marshal(text) // numbers, bytes (base64) and the scalar WKTs accept strings
	}
	// Decode {"<field>": value} into a fresh message of leaf's type and copy the field.
	if fd.IsList() {
		value = append(append([]byte("["), value...), ']')
	}
	name, _ := json.Marshal(fd.JSONName())
	doc := append(append(append([]byte("{"), name...), ':'), value...)
	doc = append(doc, '}')
	tmp := leaf.New()
	if err := protojson.Unmarshal(doc, tmp.Interface()); err != nil {
		return fmt.Errorf("%q is not a valid %s", text, kindName(fd))
	}
	if fd.IsList() {
		src := tmp.Get(fd).List()
		dst := leaf.Mutable(fd).List()
		for i := 0; i < src.Len(); i++ {
			dst.Append(src.Get(i))
		}
		return nil
	}
	leaf.Set(fd, tmp.Get(fd))
	return nil
}

func kindName(fd protoreflect.FieldDescriptor) string {
	if fd.Kind() == protoreflect.MessageKind {
		return string(fd.Message().FullName())
	}
	return fd.Kind().String()
}

// ndjsonWriter receives the transcoder's Connect server-stream response and writes
// it to out as NDJSON. The HTTP status is committed with the first message (200) or
// with an end of stream before any (the error's HTTP code).
type ndjsonWriter struct {
	out       http.ResponseWriter
	header    http.Header
	mu        sync.Mutex
	status    int // the transcoder's HTTP status
	buf       bytes.Buffer
	committed bool
	ended     bool
	failed    bool
	passthru  bool // a non-Connect answer (not 200 with application/connect+json): copied as is
}

func (s *ndjsonWriter) Header() http.Header { return s.header }

func (s *ndjsonWriter) WriteHeader(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.status != 0 {
		return
	}
	s.status = code
	if code != http.StatusOK || !strings.HasPrefix(s.header.Get("Content-Type"), "application/connect+") {
		// Not a Connect stream (a transcoder refusal before the call): relay it.
		s.passthru = true
		for k, v := range s.header {
			s.out.Header()[k] = v
		}
		s.out.WriteHeader(code)
		s.committed = true
	}
}

func (s *ndjsonWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.WriteHeader(http.StatusOK)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.passthru {
		return s.out.Write(p)
	}
	if s.failed || s.ended {
		return len(p), nil
	}
	s.buf.Write(p)
	for s.buf.Len() >= 5 {
		head := s.buf.Bytes()[:5]
		n := binary.BigEndian.Uint32(head[1:5])
		if uint64(s.buf.Len()) < 5+uint64(n) {
			break
		}
		flags := head[0]
		payload := make([]byte, n)
		copy(payload, s.buf.Bytes()[5:5+n])
		s.buf.Next(5 + int(n))
		if err := s.envelope(flags, payload); err != nil {
			s.failed = true
			return 0, err
		}
	}
	return len(p), nil
}

// Flush is a no-op: each line is flushed to the client as it is written.
func (s *ndjsonWriter) Flush() {}

// envelope handles one Connect envelope: a message (a line) or the end of stream.
func (s *ndjsonWriter) envelope(flags byte, payload []byte) error {
	const compressed, endStream = 0x01, 0x02
	if flags&compressed != 0 {
		s.endWith(status.New(codes.Internal, "compressed stream message"))
		return fmt.Errorf("httpface: compressed stream message")
	}
	if flags&endStream != 0 {
		s.endWith(connectEndStatus(payload))
		return nil
	}
	if !s.committed {
		h := s.out.Header()
		h.Set("Content-Type", NDJSONContentType)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-store")
		s.out.WriteHeader(http.StatusOK)
		s.committed = true
	}
	line := bytes.TrimSpace(payload)
	if bytes.IndexByte(line, '\n') >= 0 { // protojson writes one line unless asked not to
		line = bytes.ReplaceAll(line, []byte("\n"), nil)
	}
	return s.writeLine(line)
}

// writeLine writes line and a newline to the client and flushes them. A client that
// stops reading ends its stream (and frees its watch slot) once a line has waited
// streamWriteTimeout, rather than holding it for ever.
func (s *ndjsonWriter) writeLine(line []byte) error {
	rc := http.NewResponseController(s.out)
	_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	if _, err := s.out.Write(append(line, '\n')); err != nil {
		return err
	}
	return rc.Flush()
}

// endWith ends the REST stream with st: nothing more when OK; before any message the
// google.rpc.Status body with st's HTTP code; after one a last {"error": status} line.
func (s *ndjsonWriter) endWith(st *status.Status) {
	s.ended = true
	if !s.committed {
		if st.Code() == codes.OK {
			h := s.out.Header()
			h.Set("Content-Type", NDJSONContentType)
			h.Set("Cache-Control", "no-store")
			s.out.WriteHeader(http.StatusOK)
			s.committed = true
			return
		}
		writeRESTStatus(s.out, st)
		s.committed = true
		return
	}
	if st.Code() == codes.OK {
		return
	}
	b, _ := protojson.Marshal(st.Proto())
	_ = s.writeLine(append(append([]byte(`{"error":`), b...), '}'))
}

// finish ends a stream the transcoder left without an end-of-stream message.
func (s *ndjsonWriter) finish() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.passthru || s.ended {
		return
	}
	msg := "the stream ended without a status"
	if s.buf.Len() > 0 {
		msg = "the stream ended in the middle of a message"
	}
	s.endWith(status.New(codes.Internal, msg))
}

// connectEndStatus reads a Connect end-of-stream message
// ({"error":{"code","message","details":[{"type","value"}]}}) into a status.
func connectEndStatus(payload []byte) *status.Status {
	var end struct {
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Details []struct {
				Type  string `json:"type"`
				Value string `json:"value"`
			} `json:"details"`
		} `json:"error"`
	}
	if err := json.Unmarshal(payload, &end); err != nil {
		return status.New(codes.Internal, "undecodable end of stream")
	}
	if end.Error == nil {
		return status.New(codes.OK, "")
	}
	var code connect.Code
	if err := code.UnmarshalText([]byte(end.Error.Code)); err != nil {
		code = connect.CodeUnknown
	}
	sp := status.New(codes.Code(code), end.Error.Message).Proto()
	for _, d := range end.Error.Details {
		v, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(d.Value, "="))
		if err != nil {
			continue
		}
		sp.Details = append(sp.Details, &anypb.Any{TypeUrl: "type.googleapis.com/" + d.Type, Value: v})
	}
	return status.FromProto(sp)
}

// writeRESTStatus writes st as a unary REST error: the google.rpc.Status JSON body
// with the HTTP code of st's gRPC code.
func writeRESTStatus(w http.ResponseWriter, st *status.Status) {
	b, _ := protojson.Marshal(st.Proto())
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			w.Header().Set("Retry-After", fmt.Sprint(int(math.Ceil(ri.GetRetryDelay().AsDuration().Seconds()))))
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(httpStatusOf(st.Code()))
	_, _ = w.Write(b)
}

// httpStatusOf is the HTTP code of a gRPC code (google.rpc.Code's documented mapping,
// the one the transcoder uses for unary REST errors).
func httpStatusOf(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.Canceled:
		return 499
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	default: // Unknown, Internal, DataLoss
		return http.StatusInternalServerError
	}
}
