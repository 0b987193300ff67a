// Package apierr builds and reads gRPC status errors that carry AIP-193 error details.
package apierr

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
)

// Domain is the ErrorInfo domain of every error condaccess returns.
const Domain = "condaccess.dev"

// ReasonInvalidArgument is the ErrorInfo reason of a request that failed validation.
const ReasonInvalidArgument = "INVALID_ARGUMENT"

// New returns a status error with code, message msg and an ErrorInfo carrying reason.
func New(code codes.Code, reason, msg string) error {
	return WithMetadata(code, reason, msg, nil)
}

// WithMetadata is New with ErrorInfo metadata md.
func WithMetadata(code codes.Code, reason, msg string, md map[string]string) error {
	return withDetails(status.New(code, msg), &errdetails.ErrorInfo{Reason: reason, Domain: Domain, Metadata: md})
}

// FieldViolation describes one bad request field; field is the snake_case proto path.
func FieldViolation(field, desc string) *errdetails.BadRequest_FieldViolation {
	return &errdetails.BadRequest_FieldViolation{Field: field, Description: desc}
}

// InvalidArgument returns an INVALID_ARGUMENT error with ErrorInfo{reason} and a
// BadRequest listing violations; the message names the fields. An empty reason
// becomes ReasonInvalidArgument.
func InvalidArgument(reason string, violations ...*errdetails.BadRequest_FieldViolation) error {
	if reason == "" {
		reason = ReasonInvalidArgument
	}
	var b strings.Builder
	b.WriteString("invalid argument")
	for i, v := range violations {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(v.GetField())
		if d := v.GetDescription(); d != "" {
			b.WriteString(": ")
			b.WriteString(d)
		}
	}
	return withDetails(status.New(codes.InvalidArgument, b.String()),
		&errdetails.ErrorInfo{Reason: reason, Domain: Domain},
		&errdetails.BadRequest{FieldViolations: violations})
}

func withDetails(st *status.Status, details ...protoadapt.MessageV1) error {
	ds, err := st.WithDetails(details...)
	if err != nil {
		// Only fails for an OK status or unmarshalable details; neither happens here.
		return st.Err()
	}
	return ds.Err()
}

// FromContext maps a context error to CANCELED or DEADLINE_EXCEEDED; any other
// error, including nil, is returned unchanged.
func FromContext(err error) error {
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	default:
		return err
	}
}

// Reason returns the ErrorInfo reason carried by err, or "" when there is none.
func Reason(err error) string {
	if info := errorInfo(err); info != nil {
		return info.GetReason()
	}
	return ""
}

// Metadata returns the ErrorInfo metadata carried by err, or nil.
func Metadata(err error) map[string]string {
	return errorInfo(err).GetMetadata()
}

func errorInfo(err error) *errdetails.ErrorInfo {
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	return nil
}

// Violations returns the BadRequest field violations carried by err, or nil.
func Violations(err error) []*errdetails.BadRequest_FieldViolation {
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	var out []*errdetails.BadRequest_FieldViolation
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			out = append(out, br.GetFieldViolations()...)
		}
	}
	return out
}
