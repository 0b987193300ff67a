package server

import (
	"testing"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"buf.build/go/protovalidate"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/condaccess/condaccess/internal/apierr"
)

func TestValidationStatus(t *testing.T) {
	path := &validate.FieldPath{}
	path.SetElements([]*validate.FieldPathElement{
		validate.FieldPathElement_builder{FieldName: proto.String("alert")}.Build(),
		validate.FieldPathElement_builder{FieldName: proto.String("tags"), Index: proto.Uint64(2)}.Build(),
	})
	verr := &protovalidate.ValidationError{Violations: []*protovalidate.Violation{{
		Proto: validate.Violation_builder{Field: path, RuleId: proto.String("string.min_len")}.Build(),
	}}}
	st, derr := status.New(codes.InvalidArgument, verr.Error()).WithDetails(verr.ToProto())
	if derr != nil {
		t.Fatal(derr)
	}
	// The library interceptor's shape becomes apierr's.
	err := toBadRequest(st.Err())
	if status.Code(err) != codes.InvalidArgument || apierr.Reason(err) != apierr.ReasonInvalidArgument {
		t.Fatalf("err = %v", err)
	}
	vs := apierr.Violations(err)
	if len(vs) != 1 || vs[0].GetField() != "alert.tags[2]" || vs[0].GetDescription() != "string.min_len" {
		t.Errorf("violations = %v", vs)
	}

	// Other errors pass unchanged.
	other := apierr.New(codes.InvalidArgument, "OTHER", "x")
	if got := toBadRequest(other); apierr.Reason(got) != "OTHER" {
		t.Errorf("other error became %v", got)
	}
	if toBadRequest(nil) != nil {
		t.Error("nil error not nil")
	}
}

func TestLevelFor(t *testing.T) {
	tests := []struct {
		code codes.Code
		want logging.Level
	}{
		{codes.OK, logging.LevelInfo},
		{codes.InvalidArgument, logging.LevelWarn},
		{codes.PermissionDenied, logging.LevelWarn},
		{codes.NotFound, logging.LevelWarn},
		{codes.Internal, logging.LevelError},
		{codes.Unknown, logging.LevelError},
		{codes.DataLoss, logging.LevelError},
	}
	for _, tt := range tests {
		if got := levelFor(tt.code); got != tt.want {
			t.Errorf("levelFor(%v) = %v, want %v", tt.code, got, tt.want)
		}
	}
}
