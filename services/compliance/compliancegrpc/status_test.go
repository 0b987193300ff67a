package compliancegrpc

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/eventlog"
	"github.com/condaccess/condaccess/services/compliance"
)

func TestToStatus(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		code   codes.Code
		reason string
	}{
		{"device not found", fmt.Errorf("%w: d", compliance.ErrDeviceNotFound), codes.NotFound, "DEVICE_NOT_FOUND"},
		{"policy not found", compliance.ErrPolicyNotFound, codes.NotFound, "POLICY_NOT_FOUND"},
		{"no exclusion", compliance.ErrExclusionNotFound, codes.NotFound, "EXCLUSION_NOT_FOUND"},
		{"device exists", compliance.ErrDeviceExists, codes.AlreadyExists, "DEVICE_ALREADY_EXISTS"},
		{"policy exists", compliance.ErrPolicyExists, codes.AlreadyExists, "POLICY_ALREADY_EXISTS"},
		{"stale etag", compliance.ErrEtagMismatch, codes.Aborted, "ETAG_MISMATCH"},
		{"retired", compliance.ErrDeviceRetired, codes.FailedPrecondition, "DEVICE_RETIRED"},
		{"sensor field", compliance.ErrPermissionDenied, codes.PermissionDenied, "FIELD_NOT_ALLOWED_FOR_ROLE"},
		{"invalid", &compliance.InvalidError{Violations: []compliance.Violation{{Field: "reason", Description: "required"}}}, codes.InvalidArgument, apierr.ReasonInvalidArgument},
		{"compacted", &eventlog.CompactedError{Start: 1, CompactedBefore: 5, Current: 9}, codes.OutOfRange, eventlog.ReasonRevisionCompacted},
		{"slow watcher", &eventlog.SlowWatcherError{LastRevision: 3}, codes.ResourceExhausted, eventlog.ReasonWatcherTooSlow},
		{"cancelled", context.Canceled, codes.Canceled, ""},
		{"deadline", fmt.Errorf("wrapped: %w", context.DeadlineExceeded), codes.DeadlineExceeded, ""},
		{"other", errors.New("disk on fire"), codes.Internal, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := toStatus(tt.err)
			if got := status.Code(err); got != tt.code {
				t.Errorf("code %v, want %v", got, tt.code)
			}
			if got := apierr.Reason(err); got != tt.reason {
				t.Errorf("reason %q, want %q", got, tt.reason)
			}
		})
	}
}
