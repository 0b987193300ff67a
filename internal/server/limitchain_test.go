package server_test

import (
	"maps"
	"math"
	"slices"
	"strings"
	"testing"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/eventlog"
	"github.com/condaccess/condaccess/internal/server"
)

// files are the condaccess contracts the limit chain covers.
var files = []protoreflect.FileDescriptor{
	riskv1.File_condaccess_risk_v1_risk_proto,
	compliancev1.File_condaccess_compliance_v1_compliance_proto,
	accessv1.File_condaccess_access_v1_access_proto,
	remediationv1.File_condaccess_remediation_v1_remediation_proto,
}

// Wire overheads used by the bound: a field tag is at most 5 bytes (field numbers
// below 2^29), a length prefix at most 5 (lengths below 4 GiB), a scalar at most 10.
const (
	tagBytes    = 5
	lenBytes    = 5
	scalarBytes = 10
	// utf8Max: protovalidate's max_len counts characters, each at most 4 bytes.
	utf8Max = 4
)

// fixedWKT are well-known messages of bounded size (a few scalars each).
var fixedWKT = map[protoreflect.FullName]int64{
	"google.protobuf.Timestamp": 2 * (tagBytes + scalarBytes),
	"google.protobuf.Duration":  2 * (tagBytes + scalarBytes),
}

// sizer computes an upper bound of a message's encoded size from its buf.validate
// caps; an uncapped string, bytes, list or map, or a recursive message, is unbounded
// and recorded in missing.
type sizer struct {
	missing map[string]bool
	stack   []protoreflect.FullName
}

func rules(fd protoreflect.FieldDescriptor) *validate.FieldRules {
	r, _ := proto.GetExtension(fd.Options(), validate.E_Field).(*validate.FieldRules)
	return r
}

// scalar bounds one value of fd's kind under the rules r (nil: no rules).
func (s *sizer) scalar(fd protoreflect.FieldDescriptor, name string, r *validate.FieldRules) int64 {
	switch fd.Kind() {
	case protoreflect.StringKind:
		sr := r.GetString()
		switch {
		case sr.HasMaxBytes():
			return lenBytes + int64(sr.GetMaxBytes())
		case sr.HasMaxLen():
			return lenBytes + utf8Max*int64(sr.GetMaxLen())
		case sr.HasLen():
			return lenBytes + utf8Max*int64(sr.GetLen())
		case sr.GetUuid():
			return lenBytes + 36
		case sr.GetIpPrefix() || sr.GetIpWithPrefixlen() || sr.GetIpv6Prefix() || sr.GetIpv4Prefix():
			return lenBytes + 43 // the longest IPv6 prefix, "ffff:...:ffff/128"
		case len(sr.GetIn()) > 0:
			return lenBytes + int64(slices.Max(lens(sr.GetIn())))
		}
		s.missing[name] = true
		return math.MaxInt64 / 4
	case protoreflect.BytesKind:
		br := r.GetBytes()
		switch {
		case br.HasMaxLen():
			return lenBytes + int64(br.GetMaxLen())
		case br.HasLen():
			return lenBytes + int64(br.GetLen())
		}
		s.missing[name] = true
		return math.MaxInt64 / 4
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return lenBytes + s.message(fd.Message())
	default:
		return scalarBytes
	}
}

func lens(ss []string) []int {
	out := make([]int, len(ss))
	for i, v := range ss {
		out[i] = len(v)
	}
	return out
}

// field bounds all of fd's values, tags included.
func (s *sizer) field(fd protoreflect.FieldDescriptor) int64 {
	name := string(fd.FullName())
	r := rules(fd)
	switch {
	case fd.IsMap():
		mr := r.GetMap()
		if !mr.HasMaxPairs() {
			s.missing[name] = true
			return math.MaxInt64 / 4
		}
		k := s.scalar(fd.MapKey(), name+"[key]", mr.GetKeys())
		v := s.scalar(fd.MapValue(), name+"[value]", mr.GetValues())
		return sat(int64(mr.GetMaxPairs()), tagBytes+lenBytes+2*tagBytes+k+v)
	case fd.IsList():
		rr := r.GetRepeated()
		if !rr.HasMaxItems() {
			s.missing[name] = true
			return math.MaxInt64 / 4
		}
		return sat(int64(rr.GetMaxItems()), tagBytes+s.scalar(fd, name+"[]", rr.GetItems()))
	default:
		return tagBytes + s.scalar(fd, name, r)
	}
}

// sat multiplies without overflowing past a bound that is "unbounded" anyway.
func sat(n, each int64) int64 {
	if each > 0 && n > (math.MaxInt64/4)/each {
		return math.MaxInt64 / 4
	}
	return n * each
}

// message bounds one message: the sum of its fields, the largest member of each oneof.
func (s *sizer) message(md protoreflect.MessageDescriptor) int64 {
	if n, ok := fixedWKT[md.FullName()]; ok {
		return n
	}
	if slices.Contains(s.stack, md.FullName()) {
		s.missing[string(md.FullName())+" (recursive)"] = true
		return math.MaxInt64 / 4
	}
	s.stack = append(s.stack, md.FullName())
	defer func() { s.stack = s.stack[:len(s.stack)-1] }()
	var total int64
	oneofs := map[protoreflect.FullName]int64{}
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		n := s.field(fd)
		if o := fd.ContainingOneof(); o != nil && !o.IsSynthetic() {
			oneofs[o.FullName()] = max(oneofs[o.FullName()], n)
			continue
		}
		total = min(total+n, math.MaxInt64/4)
	}
	for _, n := range oneofs {
		total = min(total+n, math.MaxInt64/4)
	}
	return total
}

// methods calls fn for every RPC of the covered contracts.
func methods(fn func(protoreflect.MethodDescriptor)) {
	for _, f := range files {
		for i := range f.Services().Len() {
			ms := f.Services().Get(i).Methods()
			for j := range ms.Len() {
				fn(ms.Get(j))
			}
		}
	}
}

// uncappedByDesign are fields bounded only by the server's receive limit, and why.
var uncappedByDesign = map[string]string{
	// update_mask: handlers accept only the documented paths and refuse the rest, so
	// a long mask is refused, never stored or emitted.
	"google.protobuf.FieldMask.paths": "handlers accept only documented paths",
}

// TestRequestCaps checks that every string, bytes, list and map field reachable from
// every request message of every contract has a buf.validate cap.
func TestRequestCaps(t *testing.T) {
	s := &sizer{missing: map[string]bool{}}
	methods(func(m protoreflect.MethodDescriptor) { s.message(m.Input()) })
	for f := range uncappedByDesign {
		delete(s.missing, f)
	}
	if len(s.missing) > 0 {
		t.Errorf("%d request fields have no size cap:\n%s", len(s.missing), strings.Join(slices.Sorted(maps.Keys(s.missing)), "\n"))
	}
}

// TestLimitChain is the invariant between the caps and the configured limits: every
// event a service can emit on its watch stream (the largest message one service reads
// from another) fits in what a condaccess client receives. The bound of an event is
// derived from the descriptors: every field reachable from it, multiplied by its caps.
// Raising a cap (e.g. an alert's comment count) past what a reader accepts fails here.
func TestLimitChain(t *testing.T) {
	methods(func(m protoreflect.MethodDescriptor) {
		if !m.IsStreamingServer() || !strings.HasPrefix(string(m.Name()), "Watch") {
			return
		}
		t.Run(string(m.FullName()), func(t *testing.T) {
			s := &sizer{missing: map[string]bool{}}
			bound := s.message(m.Output())
			if len(s.missing) > 0 {
				t.Fatalf("%s is unbounded: no cap on\n%s", m.Output().FullName(), strings.Join(slices.Sorted(maps.Keys(s.missing)), "\n"))
			}
			t.Logf("largest %s: %d bytes (%.1f MiB); client receive limit %d MiB", m.Output().FullName(), bound, float64(bound)/(1<<20), server.DefaultClientMaxRecvMsgSize>>20)
			if bound > server.DefaultClientMaxRecvMsgSize {
				t.Errorf("%s may be %d bytes, over the client receive limit of %d: lower a cap or raise server.DefaultClientMaxRecvMsgSize",
					m.Output().FullName(), bound, server.DefaultClientMaxRecvMsgSize)
			}
		})
	})
	// The event log refuses, at the writer, any event payload over its cap; a watch
	// response is that payload plus an envelope (revision, oneof tags: under 1 KiB).
	if envelope := int64(1 << 10); eventlog.DefaultMaxPayloadBytes+envelope > server.DefaultClientMaxRecvMsgSize {
		t.Errorf("event log payload cap %d plus envelope over the client receive limit %d", eventlog.DefaultMaxPayloadBytes, server.DefaultClientMaxRecvMsgSize)
	}
	// The server accepts requests up to its limit; a client must receive at least as
	// much, or a resource written in one request could not be read back.
	if server.DefaultMaxRecvMsgSize > server.DefaultClientMaxRecvMsgSize {
		t.Errorf("server receive limit %d over the client receive limit %d", server.DefaultMaxRecvMsgSize, server.DefaultClientMaxRecvMsgSize)
	}
}
