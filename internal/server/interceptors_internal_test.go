package server

import (
	"log/slog"
	"testing"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"buf.build/go/protovalidate"
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
	err := validationStatus(verr)
	if status.Code(err) != codes.InvalidArgument || apierr.Reason(err) != apierr.ReasonInvalidArgument {
		t.Fatalf("err = %v", err)
	}
	vs := apierr.Violations(err)
	if len(vs) != 1 || vs[0].GetField() != "alert.tags[2]" || vs[0].GetDescription() != "string.min_len" {
		t.Errorf("violations = %v", vs)
	}

	if got := status.Code(validationStatus(&protovalidate.CompilationError{})); got != codes.Internal {
		t.Errorf("compilation error code = %v, want Internal", got)
	}
	if validationStatus(nil) != nil {
		t.Error("nil error not nil")
	}
}

func TestLevelFor(t *testing.T) {
	tests := []struct {
		code codes.Code
		want slog.Level
	}{
		{codes.OK, slog.LevelInfo},
		{codes.InvalidArgument, slog.LevelWarn},
		{codes.PermissionDenied, slog.LevelWarn},
		{codes.NotFound, slog.LevelWarn},
		{codes.Internal, slog.LevelError},
		{codes.Unknown, slog.LevelError},
		{codes.DataLoss, slog.LevelError},
	}
	for _, tt := range tests {
		if got := levelFor(tt.code); got != tt.want {
			t.Errorf("levelFor(%v) = %v, want %v", tt.code, got, tt.want)
		}
	}
}
