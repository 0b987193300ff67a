package riskgrpc

import (
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/eventlog"
	"github.com/condaccess/condaccess/internal/sqlitedb"
	"github.com/condaccess/condaccess/services/risk"
)

// ErrorInfo reasons of the risk service.
const (
	ReasonAlertNotFound    = "ALERT_NOT_FOUND"
	ReasonDeviceNotFound   = "DEVICE_NOT_FOUND"
	ReasonAlertConflict    = "ALERT_ID_CONFLICT"
	ReasonAlertResolved    = "ALERT_RESOLVED"
	ReasonEtagMismatch     = "ETAG_MISMATCH"
	ReasonInvalidPageToken = "INVALID_PAGE_TOKEN"
	ReasonTooManyComments  = "TOO_MANY_COMMENTS"
)

// toStatus maps domain and store errors to status errors; context errors become
// CANCELED / DEADLINE_EXCEEDED and status errors pass through.
func toStatus(err error) error {
	var ve *risk.ValidationError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ve):
		vs := make([]*errdetails.BadRequest_FieldViolation, len(ve.Violations))
		for i, v := range ve.Violations {
			vs[i] = apierr.FieldViolation(v.Field, v.Description)
		}
		return apierr.InvalidArgument("", vs...)
	case errors.Is(err, risk.ErrAlertNotFound):
		return apierr.New(codes.NotFound, ReasonAlertNotFound, err.Error())
	case errors.Is(err, risk.ErrDeviceNotFound):
		return apierr.New(codes.NotFound, ReasonDeviceNotFound, err.Error())
	case errors.Is(err, risk.ErrAlertConflict):
		return apierr.New(codes.AlreadyExists, ReasonAlertConflict, err.Error())
	case errors.Is(err, risk.ErrAlertResolved):
		return apierr.New(codes.FailedPrecondition, ReasonAlertResolved, err.Error())
	case errors.Is(err, risk.ErrStaleEtag):
		return apierr.New(codes.Aborted, ReasonEtagMismatch, err.Error())
	case errors.Is(err, risk.ErrTooManyComments):
		return apierr.New(codes.ResourceExhausted, ReasonTooManyComments, err.Error())
	case errors.Is(err, risk.ErrInvalidPageToken):
		return apierr.InvalidArgument(ReasonInvalidPageToken, apierr.FieldViolation("page_token", "not a page token of this listing"))
	case errors.Is(err, eventlog.ErrCompacted), errors.Is(err, eventlog.ErrSlowWatcher), errors.Is(err, eventlog.ErrClosed),
		errors.Is(err, eventlog.ErrEventTooLarge):
		return eventlog.ToStatus(err)
	case errors.Is(err, sqlitedb.ErrClosed):
		return status.Error(codes.Unavailable, "risk store is shutting down")
	}
	if err = apierr.FromContext(err); status.Code(err) != codes.Unknown {
		return err
	}
	return status.Error(codes.Internal, err.Error())
}
