package httpface

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
)

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
