package accessgrpc_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
)

// fakeRemediation serves WatchDeviceRemediations: the snapshot of states, synced, then
// each state pushed on updates; a stream ends when broken is closed.
type fakeRemediation struct {
	remediationv1.UnimplementedRemediationServiceServer
	mu       sync.Mutex
	snapshot map[string]remediationv1.DeviceRemediationState
	updates  chan *remediationv1.DeviceRemediation
}

func (f *fakeRemediation) WatchDeviceRemediations(_ *remediationv1.WatchDeviceRemediationsRequest, stream grpc.ServerStreamingServer[remediationv1.WatchDeviceRemediationsResponse]) error {
	f.mu.Lock()
	var snap []*remediationv1.DeviceRemediation
	for id, st := range f.snapshot {
		snap = append(snap, &remediationv1.DeviceRemediation{DeviceId: id, State: st})
	}
	f.mu.Unlock()
	for _, d := range snap {
		if err := stream.Send(&remediationv1.WatchDeviceRemediationsResponse{Kind: &remediationv1.WatchDeviceRemediationsResponse_Device{Device: d}}); err != nil {
			return err
		}
	}
	if err := stream.Send(&remediationv1.WatchDeviceRemediationsResponse{Kind: &remediationv1.WatchDeviceRemediationsResponse_Synced{Synced: true}}); err != nil {
		return err
	}
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case d := <-f.updates:
			if err := stream.Send(&remediationv1.WatchDeviceRemediationsResponse{Kind: &remediationv1.WatchDeviceRemediationsResponse_Device{Device: d}}); err != nil {
				return err
			}
		}
	}
}

// TestBlockedStatusRemediation: a threat's blocked status says whether remediation
// runs, from the remediation service's feed, live, and only at CATEGORY and FULL
// detail; without the feed, or with a feed that broke, it says nothing rather than
// something stale.
func TestBlockedStatusRemediation(t *testing.T) {
	for _, tt := range []struct {
		name   string
		detail accessv1.BlockedDetail
		feed   bool
		start  remediationv1.DeviceRemediationState // in the snapshot (UNSPECIFIED: not in it)
		want   accessv1.BlockedRemediation
	}{
		{"running", accessv1.BlockedDetail_BLOCKED_DETAIL_CATEGORY, true, remediationv1.DeviceRemediationState_DEVICE_REMEDIATION_STATE_RUNNING, accessv1.BlockedRemediation_BLOCKED_REMEDIATION_AUTOMATIC},
		{"waiting for approval", accessv1.BlockedDetail_BLOCKED_DETAIL_FULL, true, remediationv1.DeviceRemediationState_DEVICE_REMEDIATION_STATE_PENDING_APPROVAL, accessv1.BlockedRemediation_BLOCKED_REMEDIATION_WAITING_FOR_APPROVAL},
		{"no investigation: contact IT", accessv1.BlockedDetail_BLOCKED_DETAIL_CATEGORY, true, remediationv1.DeviceRemediationState_DEVICE_REMEDIATION_STATE_UNSPECIFIED, accessv1.BlockedRemediation_BLOCKED_REMEDIATION_NONE},
		{"minimal detail hides it", accessv1.BlockedDetail_BLOCKED_DETAIL_MINIMAL, true, remediationv1.DeviceRemediationState_DEVICE_REMEDIATION_STATE_RUNNING, accessv1.BlockedRemediation_BLOCKED_REMEDIATION_UNSPECIFIED},
		{"no feed: unknown", accessv1.BlockedDetail_BLOCKED_DETAIL_CATEGORY, false, remediationv1.DeviceRemediationState_DEVICE_REMEDIATION_STATE_RUNNING, accessv1.BlockedRemediation_BLOCKED_REMEDIATION_UNSPECIFIED},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h, _, _ := blockedWorld(t, tt.detail)
			fr := &fakeRemediation{snapshot: map[string]remediationv1.DeviceRemediationState{"dev-other": remediationv1.DeviceRemediationState_DEVICE_REMEDIATION_STATE_RUNNING}}
			if tt.start != remediationv1.DeviceRemediationState_DEVICE_REMEDIATION_STATE_UNSPECIFIED {
				fr.snapshot["dev-1"] = tt.start
			}
			if tt.feed {
				conn, _ := bufServer(t, func(r grpc.ServiceRegistrar) { remediationv1.RegisterRemediationServiceServer(r, fr) })
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() {
					defer close(done)
					h.svc.RunRemediationFeed(ctx, remediationv1.NewRemediationServiceClient(conn), nil)
				}()
				t.Cleanup(func() { cancel(); <-done })
			}
			ref, _ := blockedRef(t, h)
			var got *accessv1.BlockedStatus
			eventually(t, "the remediation state "+tt.want.String(), func() bool {
				r, err := h.acc.GetBlockedStatus(context.Background(), &accessv1.GetBlockedStatusRequest{Ref: ref})
				if err != nil {
					t.Fatal(err)
				}
				got = r.GetStatus()
				return got.GetRemediation() == tt.want
			})
			if got.GetRestored() {
				t.Errorf("status %v: restored", got)
			}
			// A guessed reference learns nothing, remediation included.
			changed := []byte(ref)
			changed[len(changed)-2] ^= 1 // one character changed
			for _, guess := range []string{"si-1", string(changed)} {
				r, err := h.acc.GetBlockedStatus(context.Background(), &accessv1.GetBlockedStatusRequest{Ref: guess})
				if status.Code(err) != codes.NotFound || r != nil {
					t.Errorf("guessed reference %q = %v %v, want NOT_FOUND and nothing", guess, r, err)
				}
			}
			text := prototext.Format(got)
			for _, secret := range []string{"alert-1", "dev-other", "payroll-compliant", "investigation"} {
				if strings.Contains(text, secret) {
					t.Errorf("status shows %q:\n%s", secret, text)
				}
			}
		})
	}
}

// TestWatchBlockedStatusFollowsRemediation: the end user's stream changes by itself as
// the investigation waits for approval, runs, and remediates.
func TestWatchBlockedStatusFollowsRemediation(t *testing.T) {
	h, _, _ := blockedWorld(t, accessv1.BlockedDetail_BLOCKED_DETAIL_CATEGORY)
	fr := &fakeRemediation{snapshot: map[string]remediationv1.DeviceRemediationState{
		"dev-1": remediationv1.DeviceRemediationState_DEVICE_REMEDIATION_STATE_PENDING_APPROVAL}, updates: make(chan *remediationv1.DeviceRemediation)}
	conn, stopRemediation := bufServer(t, func(r grpc.ServiceRegistrar) { remediationv1.RegisterRemediationServiceServer(r, fr) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.svc.RunRemediationFeed(ctx, remediationv1.NewRemediationServiceClient(conn), nil)
	}()
	defer func() { cancel(); <-done }()

	ref, _ := blockedRef(t, h)
	stream, err := h.acc.WatchBlockedStatus(ctx, &accessv1.WatchBlockedStatusRequest{Ref: ref})
	if err != nil {
		t.Fatal(err)
	}
	// until receives until the status says want.
	until := func(want accessv1.BlockedRemediation) {
		t.Helper()
		for {
			m, err := stream.Recv()
			if err != nil {
				t.Fatalf("waiting for %v: %v", want, err)
			}
			if m.GetStatus().GetRemediation() == want {
				return
			}
		}
	}
	until(accessv1.BlockedRemediation_BLOCKED_REMEDIATION_WAITING_FOR_APPROVAL)
	for _, step := range []struct {
		state remediationv1.DeviceRemediationState
		want  accessv1.BlockedRemediation
	}{
		{remediationv1.DeviceRemediationState_DEVICE_REMEDIATION_STATE_RUNNING, accessv1.BlockedRemediation_BLOCKED_REMEDIATION_AUTOMATIC},
		{remediationv1.DeviceRemediationState_DEVICE_REMEDIATION_STATE_REMEDIATED, accessv1.BlockedRemediation_BLOCKED_REMEDIATION_DONE},
		{remediationv1.DeviceRemediationState_DEVICE_REMEDIATION_STATE_NONE, accessv1.BlockedRemediation_BLOCKED_REMEDIATION_NONE},
	} {
		fr.updates <- &remediationv1.DeviceRemediation{DeviceId: "dev-1", State: step.state}
		until(step.want)
	}
	// The remediation service goes away: the page stops saying anything about it
	// rather than showing a state that may be stale.
	fr.updates <- &remediationv1.DeviceRemediation{DeviceId: "dev-1", State: remediationv1.DeviceRemediationState_DEVICE_REMEDIATION_STATE_RUNNING}
	until(accessv1.BlockedRemediation_BLOCKED_REMEDIATION_AUTOMATIC)
	stopRemediation()
	until(accessv1.BlockedRemediation_BLOCKED_REMEDIATION_UNSPECIFIED)
}
