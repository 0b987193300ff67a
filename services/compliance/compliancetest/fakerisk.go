// Package compliancetest runs the compliance service in-process for tests, and provides an in-memory risk service to feed it.
package compliancetest

import (
	"context"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/telemetry"
)

// FakeRisk is an in-memory RiskService implementing what compliance uses: ReportAlert,
// ResolveAlert, GetDeviceRisk, ListDeviceRisks and WatchRiskEvents (list, then watch,
// with progress and compaction). Device risk is the highest severity among active
// alerts, informational excluded. Safe for concurrent use.
type FakeRisk struct {
	riskv1.UnimplementedRiskServiceServer

	// Progress is the idle interval between progress messages (default 100ms).
	Progress time.Duration

	mu        sync.Mutex
	alerts    map[string]*riskv1.Alert
	risks     map[string]*riskv1.DeviceRisk
	events    []*riskv1.RiskEvent // events[i] has revision compacted+i+1
	compacted int64
	changed   chan struct{}
}

// NewFakeRisk returns an empty FakeRisk.
func NewFakeRisk() *FakeRisk {
	return &FakeRisk{alerts: map[string]*riskv1.Alert{}, risks: map[string]*riskv1.DeviceRisk{}, changed: make(chan struct{})}
}

func (f *FakeRisk) revLocked() int64 { return f.compacted + int64(len(f.events)) }

func (f *FakeRisk) appendLocked(ctx context.Context, ev *riskv1.RiskEvent) {
	ev.Revision = f.revLocked() + 1
	ev.EventTime = timestamppb.Now()
	ev.TraceContext = telemetry.TraceContextFromContext(ctx)
	f.events = append(f.events, ev)
	close(f.changed)
	f.changed = make(chan struct{})
}

// recomputeLocked recomputes a device's risk after alert changes and publishes a
// device_risk_changed event when the level changed.
func (f *FakeRisk) recomputeLocked(ctx context.Context, deviceID, cause string) *riskv1.DeviceRisk {
	level := commonv1.RiskLevel_RISK_LEVEL_NONE
	var active []string
	for _, a := range f.alerts {
		if a.GetDeviceId() != deviceID || a.GetResolveTime() != nil || a.GetSeverity() <= commonv1.Severity_SEVERITY_INFORMATIONAL {
			continue
		}
		active = append(active, a.GetAlertId())
		level = max(level, commonv1.RiskLevel(a.GetSeverity()))
	}
	slices.Sort(active)
	old := f.risks[deviceID]
	prev := commonv1.RiskLevel_RISK_LEVEL_NONE
	if old != nil {
		prev = old.GetLevel()
	}
	if old != nil && prev == level && slices.Equal(old.GetActiveAlertIds(), active) {
		return old
	}
	r := &riskv1.DeviceRisk{DeviceId: deviceID, Level: level, ActiveAlertIds: active, UpdateTime: timestamppb.Now()}
	if prev != level || old == nil {
		f.appendLocked(ctx, &riskv1.RiskEvent{Payload: &riskv1.RiskEvent_DeviceRiskChanged{DeviceRiskChanged: &riskv1.DeviceRiskChanged{
			DeviceRisk: r, PreviousLevel: prev, CauseAlertId: cause,
		}}})
		r.Revision = f.revLocked()
	} else {
		r.Revision = old.GetRevision()
	}
	f.risks[deviceID] = r
	return r
}

// ReportAlert stores a new alert (idempotent on alert_id) and recomputes the device risk.
func (f *FakeRisk) ReportAlert(ctx context.Context, req *riskv1.ReportAlertRequest) (*riskv1.ReportAlertResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := req.GetAlert()
	if old, ok := f.alerts[a.GetAlertId()]; ok {
		return &riskv1.ReportAlertResponse{Alert: old, DeviceRisk: f.risks[old.GetDeviceId()]}, nil
	}
	a = proto.Clone(a).(*riskv1.Alert)
	a.CreateTime = timestamppb.Now()
	f.alerts[a.GetAlertId()] = a
	f.appendLocked(ctx, &riskv1.RiskEvent{Payload: &riskv1.RiskEvent_AlertChanged{AlertChanged: &riskv1.AlertChanged{
		Type: riskv1.AlertChangeType_ALERT_CHANGE_TYPE_REPORTED, Alert: a,
	}}})
	r := f.recomputeLocked(ctx, a.GetDeviceId(), a.GetAlertId())
	return &riskv1.ReportAlertResponse{Alert: a, Created: true, DeviceRisk: r}, nil
}

// ResolveAlert resolves an alert and recomputes the device risk.
func (f *FakeRisk) ResolveAlert(ctx context.Context, req *riskv1.ResolveAlertRequest) (*riskv1.ResolveAlertResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.alerts[req.GetAlertId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "alert %s not found", req.GetAlertId())
	}
	if a.GetResolveTime() != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "alert %s already resolved", req.GetAlertId())
	}
	a.ResolveTime = timestamppb.Now()
	f.appendLocked(ctx, &riskv1.RiskEvent{Payload: &riskv1.RiskEvent_AlertChanged{AlertChanged: &riskv1.AlertChanged{
		Type: riskv1.AlertChangeType_ALERT_CHANGE_TYPE_RESOLVED, Alert: a,
	}}})
	r := f.recomputeLocked(ctx, a.GetDeviceId(), a.GetAlertId())
	return &riskv1.ResolveAlertResponse{Alert: a, DeviceRisk: r}, nil
}

// GetDeviceRisk returns a device's risk (NONE for a device never reported).
func (f *FakeRisk) GetDeviceRisk(_ context.Context, req *riskv1.GetDeviceRiskRequest) (*riskv1.GetDeviceRiskResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.risks[req.GetDeviceId()]
	if r == nil {
		r = &riskv1.DeviceRisk{DeviceId: req.GetDeviceId(), Level: commonv1.RiskLevel_RISK_LEVEL_NONE}
	}
	return &riskv1.GetDeviceRiskResponse{DeviceRisk: r}, nil
}

// ListDeviceRisks returns every device risk in one page, with the current revision.
func (f *FakeRisk) ListDeviceRisks(_ context.Context, _ *riskv1.ListDeviceRisksRequest) (*riskv1.ListDeviceRisksResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &riskv1.ListDeviceRisksResponse{Revision: f.revLocked()}
	for _, r := range f.risks {
		resp.DeviceRisks = append(resp.DeviceRisks, r)
	}
	slices.SortFunc(resp.DeviceRisks, func(a, b *riskv1.DeviceRisk) int { return compareStrings(a.GetDeviceId(), b.GetDeviceId()) })
	return resp, nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Compact drops every event so far: a watch from before now fails with OUT_OF_RANGE.
func (f *FakeRisk) Compact() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.compacted += int64(len(f.events))
	f.events = nil
}

// Revision returns the current revision.
func (f *FakeRisk) Revision() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.revLocked()
}

// WatchRiskEvents replays events after start_revision, then tails, with progress.
func (f *FakeRisk) WatchRiskEvents(req *riskv1.WatchRiskEventsRequest, stream grpc.ServerStreamingServer[riskv1.WatchRiskEventsResponse]) error {
	cur := req.GetStartRevision()
	progress := f.Progress
	if progress <= 0 {
		progress = 100 * time.Millisecond
	}
	idle := time.NewTimer(0)
	defer idle.Stop()
	for {
		f.mu.Lock()
		if cur < f.compacted {
			f.mu.Unlock()
			return status.Errorf(codes.OutOfRange, "start revision %d compacted (history starts after %d)", cur, f.compacted)
		}
		var batch []*riskv1.RiskEvent
		if i := cur - f.compacted; i < int64(len(f.events)) {
			batch = append(batch, f.events[i:]...)
		}
		ch := f.changed
		f.mu.Unlock()
		for _, ev := range batch {
			if err := stream.Send(&riskv1.WatchRiskEventsResponse{Kind: &riskv1.WatchRiskEventsResponse_Event{Event: ev}}); err != nil {
				return err
			}
			cur = ev.GetRevision()
		}
		if len(batch) > 0 {
			idle.Reset(progress)
			continue
		}
		select {
		case <-stream.Context().Done():
			return stream.Context().Err()
		case <-ch:
		case <-idle.C:
			if err := stream.Send(&riskv1.WatchRiskEventsResponse{Kind: &riskv1.WatchRiskEventsResponse_Progress{
				Progress: &commonv1.WatchProgress{Revision: cur, Time: timestamppb.Now()},
			}}); err != nil {
				return err
			}
			idle.Reset(progress)
		}
	}
}

// EventTime returns when the event with revision rev was committed (zero if unknown).
func (f *FakeRisk) EventTime(rev int64) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i := rev - f.compacted - 1; i >= 0 && i < int64(len(f.events)) {
		return f.events[i].GetEventTime().AsTime()
	}
	return time.Time{}
}
