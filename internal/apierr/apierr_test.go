package apierr_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/condaccess/condaccess/internal/apierr"
)

func TestNew(t *testing.T) {
	err := apierr.WithMetadata(codes.NotFound, "DEVICE_NOT_FOUND", "device d1 not found", map[string]string{"device_id": "d1"})
	st := status.Convert(err)
	if st.Code() != codes.NotFound || st.Message() != "device d1 not found" {
		t.Fatalf("status = %v %q", st.Code(), st.Message())
	}
	if got := apierr.Reason(err); got != "DEVICE_NOT_FOUND" {
		t.Errorf("Reason = %q", got)
	}
	want := &errdetails.ErrorInfo{Reason: "DEVICE_NOT_FOUND", Domain: apierr.Domain, Metadata: map[string]string{"device_id": "d1"}}
	if diff := cmp.Diff([]any{want}, st.Details(), protocmp.Transform()); diff != "" {
		t.Errorf("details (-want +got):\n%s", diff)
	}
	if got := apierr.Reason(apierr.New(codes.Aborted, "ETAG_MISMATCH", "stale")); got != "ETAG_MISMATCH" {
		t.Errorf("Reason = %q", got)
	}
}

func TestInvalidArgument(t *testing.T) {
	vs := []*errdetails.BadRequest_FieldViolation{
		apierr.FieldViolation("device_id", "must not be empty"),
		apierr.FieldViolation("alert.alert_id", "must be a UUID"),
	}
	err := apierr.InvalidArgument("", vs...)
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("code = %v", st.Code())
	}
	if want := "invalid argument: device_id: must not be empty; alert.alert_id: must be a UUID"; st.Message() != want {
		t.Errorf("message = %q, want %q", st.Message(), want)
	}
	if got := apierr.Reason(err); got != apierr.ReasonInvalidArgument {
		t.Errorf("Reason = %q", got)
	}
	if diff := cmp.Diff(vs, apierr.Violations(err), protocmp.Transform()); diff != "" {
		t.Errorf("violations (-want +got):\n%s", diff)
	}
}

func TestNoDetails(t *testing.T) {
	for _, err := range []error{nil, errors.New("plain"), status.Error(codes.Internal, "x")} {
		if r := apierr.Reason(err); r != "" {
			t.Errorf("Reason(%v) = %q", err, r)
		}
		if v := apierr.Violations(err); v != nil {
			t.Errorf("Violations(%v) = %v", err, v)
		}
	}
}

func TestFromContext(t *testing.T) {
	plain := errors.New("plain")
	tests := []struct {
		name string
		err  error
		want codes.Code
	}{
		{"canceled", context.Canceled, codes.Canceled},
		{"wrapped deadline", fmt.Errorf("store: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{"other", plain, codes.Unknown},
		{"nil", nil, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := status.Code(apierr.FromContext(tt.err)); got != tt.want {
				t.Errorf("code = %v, want %v", got, tt.want)
			}
		})
	}
	if apierr.FromContext(plain) != plain {
		t.Error("non-context error not returned unchanged")
	}
}
