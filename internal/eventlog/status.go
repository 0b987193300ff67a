package eventlog

import (
	"errors"
	"fmt"
	"strconv"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of the statuses built by ToStatus.
const ErrorDomain = "condaccess.dev"

// Stable ErrorInfo reasons.
const (
	ReasonRevisionCompacted = "REVISION_COMPACTED"
	ReasonWatcherTooSlow    = "WATCHER_TOO_SLOW"
	// ReasonEventTooLarge: the change would publish an event larger than its readers accept.
	ReasonEventTooLarge = "EVENT_TOO_LARGE"
	ReasonLogClosed     = "EVENT_LOG_CLOSED"
)

// ToStatus maps the log's errors to gRPC status errors for Watch/List RPCs:
// ErrCompacted → OUT_OF_RANGE (REVISION_COMPACTED, metadata compacted_revision
// and current_revision), ErrSlowWatcher → RESOURCE_EXHAUSTED
// (WATCHER_TOO_SLOW, metadata last_revision), ErrClosed → UNAVAILABLE. Any
// other error, including context errors, is returned unchanged for the
// service's own mapping.
func ToStatus(err error) error {
	var ce *CompactedError
	var se *SlowWatcherError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ce):
		return withInfo(codes.OutOfRange,
			fmt.Sprintf("start revision %d is older than the retained history (compacted through revision %d, current revision %d): list again and watch from the revision the list returns", ce.Start, ce.CompactedBefore, ce.Current),
			ReasonRevisionCompacted, map[string]string{
				"compacted_revision": strconv.FormatInt(ce.CompactedBefore, 10),
				"current_revision":   strconv.FormatInt(ce.Current, 10),
			})
	case errors.Is(err, ErrCompacted):
		return withInfo(codes.OutOfRange, "start revision is older than the retained history: list again and watch from the revision the list returns", ReasonRevisionCompacted, nil)
	case errors.As(err, &se):
		return withInfo(codes.ResourceExhausted,
			fmt.Sprintf("watcher fell behind the live event stream and was cut off after revision %d: watch again from revision %d", se.LastRevision, se.LastRevision),
			ReasonWatcherTooSlow, map[string]string{"last_revision": strconv.FormatInt(se.LastRevision, 10)})
	case errors.Is(err, ErrEventTooLarge):
		return withInfo(codes.ResourceExhausted, err.Error(), ReasonEventTooLarge, nil)
	case errors.Is(err, ErrSlowWatcher):
		return withInfo(codes.ResourceExhausted, "watcher fell behind the live event stream and was cut off: watch again from the last revision received", ReasonWatcherTooSlow, nil)
	case errors.Is(err, ErrClosed):
		return withInfo(codes.Unavailable, "event log is shutting down: reconnect and watch from the last revision received", ReasonLogClosed, nil)
	default:
		return err
	}
}

func withInfo(c codes.Code, msg, reason string, md map[string]string) error {
	st := status.New(c, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain, Metadata: md}); err == nil {
		st = d
	}
	return st.Err()
}
