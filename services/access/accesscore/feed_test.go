package accesscore_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	"github.com/condaccess/condaccess/services/access/accesscore"
	"github.com/condaccess/condaccess/services/access/accessstore"
)

// listOnlyCompliance answers ListDeviceCompliance with one device and a risk_as_of
// made by riskAsOf at the time of the call, once release is closed; its watch streams
// send nothing, as a compliance service whose event log is idle (so the listing is all
// the access service learns).
type listOnlyCompliance struct {
	compliancev1.ComplianceServiceClient
	riskAsOf func() *timestamppb.Timestamp
	release  <-chan struct{}
	listed   chan<- *timestamppb.Timestamp
}

const listRevision = 7

func (c listOnlyCompliance) ListDeviceCompliance(ctx context.Context, _ *compliancev1.ListDeviceComplianceRequest, _ ...grpc.CallOption) (*compliancev1.ListDeviceComplianceResponse, error) {
	select {
	case <-c.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	ra := c.riskAsOf()
	select {
	case c.listed <- ra:
	default:
	}
	return &compliancev1.ListDeviceComplianceResponse{Revision: listRevision, RiskAsOf: ra,
		DeviceCompliances: []*compliancev1.DeviceCompliance{{DeviceId: "dev-1", State: commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT}}}, nil
}

func (c listOnlyCompliance) WatchComplianceEvents(ctx context.Context, _ *compliancev1.WatchComplianceEventsRequest, _ ...grpc.CallOption) (compliancev1.ComplianceService_WatchComplianceEventsClient, error) {
	return silentStream{ctx: ctx}, nil
}

type silentStream struct {
	grpc.ClientStream
	ctx context.Context
}

func (s silentStream) Recv() (*compliancev1.WatchComplianceEventsResponse, error) {
	<-s.ctx.Done()
	return nil, s.ctx.Err()
}

// TestResyncCarriesRiskAsOf: after a resync (a compacted cursor, or a first start) the
// access service judges the chain's age with the listing's risk_as_of, as it does with
// a watch message's. Without it a resync would hide a compliance service whose view of
// risk is an hour old: the freshly listed states would count as fresh (the attack
// rows). The feed runs for longer than the bound before the listing arrives, so that
// the start-up grace (the staleness clock starts with the feed) is over.
func TestResyncCarriesRiskAsOf(t *testing.T) {
	const bound = time.Second
	for _, tt := range []struct {
		name      string
		riskAsOf  func() *timestamppb.Timestamp
		wantStale bool
	}{
		{name: "compliance's view of risk is an hour old", wantStale: true,
			riskAsOf: func() *timestamppb.Timestamp { return timestamppb.New(time.Now().Add(-time.Hour)) }},
		{name: "compliance never heard from risk (the Unix epoch)", wantStale: true,
			riskAsOf: func() *timestamppb.Timestamp { return timestamppb.New(time.Unix(0, 0)) }},
		{name: "compliance's view of risk is fresh", wantStale: false,
			riskAsOf: timestamppb.Now},
		{name: "an older compliance service without risk_as_of: this hop alone", wantStale: false,
			riskAsOf: func() *timestamppb.Timestamp { return nil }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			st, err := accessstore.Open(ctx, accessstore.Options{Path: filepath.Join(t.TempDir(), "access.db")})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			svc, err := accesscore.New(ctx, accesscore.Config{Store: st, StalenessBound: bound})
			if err != nil {
				t.Fatal(err)
			}
			release, listed := make(chan struct{}), make(chan *timestamppb.Timestamp, 1)
			c := svc.NewFeedConsumer(listOnlyCompliance{riskAsOf: tt.riskAsOf, release: release, listed: listed}, nil)
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { defer close(done); _ = c.Run(runCtx) }()
			defer func() { stop(); <-done }()
			// Let the start-up grace pass (time passing is what is tested, not a sync).
			time.Sleep(bound + bound/2)
			close(release)
			ra := <-listed
			for svc.FeedStatus().Revision != listRevision {
				if ctx.Err() != nil {
					t.Fatalf("the resync did not apply; feed status %+v", svc.FeedStatus())
				}
				time.Sleep(5 * time.Millisecond)
			}
			fs := svc.FeedStatus()
			if fs.Stale != tt.wantStale {
				t.Errorf("feed stale = %v (lag %v, risk_as_of %v), want %v", fs.Stale, fs.Lag, fs.RiskAsOf, tt.wantStale)
			}
			switch {
			case ra == nil && !fs.RiskAsOf.IsZero():
				t.Errorf("feed risk_as_of = %v, want none", fs.RiskAsOf)
			case ra != nil && fs.RiskAsOf.Sub(ra.AsTime()).Abs() > time.Microsecond:
				t.Errorf("feed risk_as_of = %v, want the listing's %v", fs.RiskAsOf, ra.AsTime())
			}
		})
	}
}
