package httpface

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/condaccess/condaccess/internal/apierr"
)

// maxQueryViolations bounds the field violations one refused request reports.
const maxQueryViolations = 16

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
