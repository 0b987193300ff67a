package accessgrpc_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/timestamppb"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/server"
	"github.com/condaccess/condaccess/services/access/accesscore"
	"github.com/condaccess/condaccess/services/access/accessgrpc"
	"github.com/condaccess/condaccess/services/access/accessstore"
)

// fakeCompliance is an in-memory ComplianceService: ListDeviceCompliance and
// WatchComplianceEvents (replay, tail, progress every 20ms).
type fakeCompliance struct {
	compliancev1.UnimplementedComplianceServiceServer
	mu      sync.Mutex
	events  []*compliancev1.ComplianceEvent
	state   map[string]*compliancev1.DeviceCompliance
	changed chan struct{}
	starts  []int64 // start revisions of the watches
}

func newFakeCompliance() *fakeCompliance {
	return &fakeCompliance{state: map[string]*compliancev1.DeviceCompliance{}, changed: make(chan struct{})}
}

// set publishes a device's new compliance and returns the event's revision.
func (f *fakeCompliance) set(deviceID string, st commonv1.ComplianceState, risk commonv1.RiskLevel, alerts []string, tc *commonv1.TraceContext) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	rev := int64(len(f.events) + 1)
	prev := f.state[deviceID].GetState()
	dc := &compliancev1.DeviceCompliance{DeviceId: deviceID, State: st, DeviceRisk: risk, RiskAlertIds: alerts, Revision: rev}
	if st == commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT {
		dc.Reason = "device risk above the allowed maximum"
		dc.Policies = []*compliancev1.PolicyCompliance{{PolicyId: "max-medium", PolicyDisplayName: "Device risk at or under medium", State: st,
			Settings: []*compliancev1.SettingResult{{Setting: "max_device_risk", Expected: "RISK_LEVEL_MEDIUM or lower", Actual: risk.String(), Reason: "risk " + risk.String() + " above allowed MEDIUM"}}}}
	}
	f.state[deviceID] = dc
	f.events = append(f.events, &compliancev1.ComplianceEvent{Revision: rev, EventTime: timestamppb.Now(), TraceContext: tc,
		Payload: &compliancev1.ComplianceEvent_DeviceComplianceChanged{DeviceComplianceChanged: &compliancev1.DeviceComplianceChanged{DeviceCompliance: dc, PreviousState: prev}}})
	close(f.changed)
	f.changed = make(chan struct{})
	return rev
}

// revokeIdentity publishes the revocation of a device's identity and returns the
// event's revision.
func (f *fakeCompliance) revokeIdentity(deviceID string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	rev := int64(len(f.events) + 1)
	f.events = append(f.events, &compliancev1.ComplianceEvent{Revision: rev, EventTime: timestamppb.Now(),
		Payload: &compliancev1.ComplianceEvent_DeviceIdentityChanged{DeviceIdentityChanged: &compliancev1.DeviceIdentityChanged{
			Identity: &compliancev1.DeviceIdentity{DeviceId: deviceID, State: compliancev1.DeviceIdentityState_DEVICE_IDENTITY_STATE_REVOKED, RevokeTime: timestamppb.Now()}}}})
	close(f.changed)
	f.changed = make(chan struct{})
	return rev
}

func (f *fakeCompliance) ListDeviceCompliance(context.Context, *compliancev1.ListDeviceComplianceRequest) (*compliancev1.ListDeviceComplianceResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := &compliancev1.ListDeviceComplianceResponse{Revision: int64(len(f.events))}
	for _, d := range f.state {
		out.DeviceCompliances = append(out.DeviceCompliances, d)
	}
	slices.SortFunc(out.DeviceCompliances, func(a, b *compliancev1.DeviceCompliance) int {
		if a.GetDeviceId() < b.GetDeviceId() {
			return -1
		}
		return 1
	})
	return out, nil
}

func (f *fakeCompliance) WatchComplianceEvents(req *compliancev1.WatchComplianceEventsRequest, stream compliancev1.ComplianceService_WatchComplianceEventsServer) error {
	cur := req.GetStartRevision()
	f.mu.Lock()
	f.starts = append(f.starts, cur)
	f.mu.Unlock()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		f.mu.Lock()
		pending := slices.Clone(f.events[min(int(cur), len(f.events)):])
		ch := f.changed
		f.mu.Unlock()
		for _, e := range pending {
			if err := stream.Send(&compliancev1.WatchComplianceEventsResponse{Kind: &compliancev1.WatchComplianceEventsResponse_Event{Event: e}}); err != nil {
				return err
			}
			cur = e.GetRevision()
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-ch:
		case <-t.C:
			if err := stream.Send(&compliancev1.WatchComplianceEventsResponse{Kind: &compliancev1.WatchComplianceEventsResponse_Progress{Progress: &commonv1.WatchProgress{Revision: cur, Time: timestamppb.Now()}}}); err != nil {
				return err
			}
		}
	}
}

type harness struct {
	svc        *accesscore.Service
	revoked    *auth.Revocations
	h          *accessgrpc.Server
	compliance *fakeCompliance
	stopFeed   func() // stops the compliance server (the feed breaks)
	stop       func() // stops the access service and closes its store
	dir        accessv1.DirectoryServiceClient
	pol        accessv1.ConditionalAccessPolicyServiceClient
	acc        accessv1.AccessServiceClient
	authz      authv3.AuthorizationClient
	http       *httptest.Server
}

type options struct {
	dbPath     string          // default: a new temporary file
	compliance *fakeCompliance // default: a new one
	bound      time.Duration
	emergency  []string
	headers    accessgrpc.Headers
	// importBatch is ImportDirectory's batch size; 0 is the default.
	importBatch int
	edge        *accessgrpc.Edge // default: development mode
	httpWrap    func(http.Handler) http.Handler
	// complianceClient, when set, is the feed's compliance service instead of the
	// fake (h.compliance is then unused).
	complianceClient compliancev1.ComplianceServiceClient
}

func bufServer(t *testing.T, register func(grpc.ServiceRegistrar)) (*grpc.ClientConn, func()) {
	t.Helper()
	srv, err := server.New(server.Config{Name: "test", Auth: auth.Config{Insecure: true}, ExtraMethodRoles: accessgrpc.ExtraMethodRoles, GracefulStopTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	register(srv.Registrar())
	lis := bufconn.Listen(1 << 20)
	go srv.Serve(lis)
	conn, err := grpc.NewClient("passthrough:///bufnet", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() { once.Do(func() { srv.Stop(context.Background()); lis.Close() }) }
	t.Cleanup(func() { conn.Close(); stop() })
	return conn, stop
}

func start(t *testing.T, o options) *harness {
	t.Helper()
	if o.bound == 0 {
		o.bound = 30 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	if o.dbPath == "" {
		o.dbPath = filepath.Join(t.TempDir(), "access.db")
	}
	if o.compliance == nil {
		o.compliance = newFakeCompliance()
	}
	st, err := accessstore.Open(ctx, accessstore.Options{Path: o.dbPath, Synchronous: "NORMAL", ProgressInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	revoked := auth.NewRevocations()
	svc, err := accesscore.New(ctx, accesscore.Config{Store: st, StalenessBound: o.bound, EmergencyAccounts: o.emergency, EncodeSignIn: accessgrpc.EncodeSignIn,
		Revocations: revoked})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{svc: svc, revoked: revoked, h: accessgrpc.New(svc, o.headers), compliance: o.compliance}
	h.h.SetImportBatch(o.importBatch)
	edge := o.edge
	if edge == nil {
		edge = &accessgrpc.Edge{Dev: true}
	}
	h.h.SetEdge(*edge)
	cconn, stopCompliance := bufServer(t, func(r grpc.ServiceRegistrar) { compliancev1.RegisterComplianceServiceServer(r, h.compliance) })
	h.stopFeed = stopCompliance
	conn, _ := bufServer(t, func(r grpc.ServiceRegistrar) { accessgrpc.Register(r, h.h) })
	h.dir, h.pol, h.acc, h.authz = accessv1.NewDirectoryServiceClient(conn), accessv1.NewConditionalAccessPolicyServiceClient(conn),
		accessv1.NewAccessServiceClient(conn), authv3.NewAuthorizationClient(conn)
	var authz http.Handler = h.h.AuthzHandler()
	if o.httpWrap != nil {
		authz = o.httpWrap(authz)
	}
	h.http = httptest.NewServer(authz)
	var wg sync.WaitGroup
	wg.Add(2)
	feedClient := compliancev1.NewComplianceServiceClient(cconn)
	if o.complianceClient != nil {
		feedClient = o.complianceClient
	}
	go func() { defer wg.Done(); svc.RunFeed(ctx, feedClient, nil) }()
	go func() { defer wg.Done(); svc.Run(ctx) }()
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			h.http.Close()
			cancel()
			wg.Wait()
			st.Close()
		})
	}
	t.Cleanup(h.stop)
	return h
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// enroll publishes a device_changed event (the device's owner and registered users)
// and returns its revision.
func (f *fakeCompliance) enroll(deviceID, owner string, registered ...string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	rev := int64(len(f.events) + 1)
	f.events = append(f.events, &compliancev1.ComplianceEvent{Revision: rev, EventTime: timestamppb.Now(),
		Payload: &compliancev1.ComplianceEvent_DeviceChanged{DeviceChanged: &compliancev1.DeviceChanged{Device: &compliancev1.Device{
			DeviceId: deviceID, Platform: commonv1.Platform_PLATFORM_WINDOWS, OwnerUserId: owner, RegisteredUserIds: registered}}}})
	close(f.changed)
	f.changed = make(chan struct{})
	return rev
}
