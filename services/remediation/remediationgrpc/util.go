package remediationgrpc

import (
	"io"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
)

type apierrViolation = errdetails.BadRequest_FieldViolation

const commonv1Service = commonv1.Role_ROLE_SERVICE

var errEOF = io.EOF

func progress(rev int64) *commonv1.WatchProgress {
	return &commonv1.WatchProgress{Revision: rev, Time: timestamppb.New(time.Now())}
}
