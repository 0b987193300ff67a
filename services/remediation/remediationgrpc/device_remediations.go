package remediationgrpc

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/eventlog"
	"github.com/condaccess/condaccess/services/remediation"
)

// snapshotPage is the page size of WatchDeviceRemediations' snapshot listing.
const snapshotPage = 500

// DeviceRemediationState maps an investigation's state to the device's remediation
// state the end user's page speaks of.
func DeviceRemediationState(s remediation.InvestigationState) remediationv1.DeviceRemediationState {
	switch s {
	case remediation.StateRunning:
		return remediationv1.DeviceRemediationState_DEVICE_REMEDIATION_STATE_RUNNING
	case remediation.StatePendingApproval:
		return remediationv1.DeviceRemediationState_DEVICE_REMEDIATION_STATE_PENDING_APPROVAL
	case remediation.StateRemediated:
		return remediationv1.DeviceRemediationState_DEVICE_REMEDIATION_STATE_REMEDIATED
	}
	return remediationv1.DeviceRemediationState_DEVICE_REMEDIATION_STATE_NONE
}

// WatchDeviceRemediations implements RemediationService: the revision first, then the
// snapshot of open investigations, then the log's events after that revision, so a
// change made while the snapshot is read is sent (again) after it, never lost.
func (s *Server) WatchDeviceRemediations(_ *remediationv1.WatchDeviceRemediationsRequest, stream grpc.ServerStreamingServer[remediationv1.WatchDeviceRemediationsResponse]) error {
	ctx := stream.Context()
	rev := s.store.Revision()
	send := func(deviceID string, st remediationv1.DeviceRemediationState) error {
		return stream.Send(&remediationv1.WatchDeviceRemediationsResponse{Kind: &remediationv1.WatchDeviceRemediationsResponse_Device{
			Device: &remediationv1.DeviceRemediation{DeviceId: deviceID, State: st}}})
	}
	for _, state := range []remediation.InvestigationState{remediation.StateRunning, remediation.StatePendingApproval} {
		token := ""
		for {
			invs, next, err := s.svc.ListInvestigations(ctx, remediation.InvestigationFilter{State: state}, snapshotPage, token)
			if err != nil {
				return toStatus(err)
			}
			for _, inv := range invs {
				if err := send(inv.DeviceID, DeviceRemediationState(inv.State)); err != nil {
					return err
				}
			}
			if next == "" {
				break
			}
			token = next
		}
	}
	if err := stream.Send(&remediationv1.WatchDeviceRemediationsResponse{Kind: &remediationv1.WatchDeviceRemediationsResponse_Synced{Synced: true}}); err != nil {
		return err
	}
	err := s.store.Watch(ctx, rev, func(rev int64, payload []byte) error {
		ev := &remediationv1.InvestigationEvent{}
		if err := proto.Unmarshal(payload, ev); err != nil {
			return status.Errorf(codes.Internal, "decode event %d: %v", rev, err)
		}
		inv := ev.GetInvestigationChanged().GetInvestigation()
		if inv == nil {
			return nil // action changes move the investigation's state in their own event
		}
		return send(inv.GetDeviceId(), DeviceRemediationState(remediation.InvestigationState(inv.GetState())))
	}, func(rev int64) error {
		return stream.Send(&remediationv1.WatchDeviceRemediationsResponse{Kind: &remediationv1.WatchDeviceRemediationsResponse_Progress{
			Progress: &commonv1.WatchProgress{Revision: rev, Time: timestamppb.New(time.Now())}}})
	})
	if err == nil || ctx.Err() != nil {
		return apierr.FromContext(ctx.Err())
	}
	if st := eventlog.ToStatus(err); st != err {
		return st
	}
	return toStatus(err)
}
