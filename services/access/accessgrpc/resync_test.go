package accessgrpc_test

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/server"
	"github.com/condaccess/condaccess/services/compliance"
	"github.com/condaccess/condaccess/services/compliance/compliancegrpc"
	"github.com/condaccess/condaccess/services/compliance/compliancestore"
)

// TestResyncReplacesDeviceUsers: a user removed from a device's registered users
// while access was disconnected, past the compliance service's event retention, is
// refused after access resyncs from the listing (and one added is granted): the
// listing carries each device's users, with the real compliance service.
func TestResyncReplacesDeviceUsers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cst, err := compliancestore.Open(ctx, compliancestore.Options{Path: filepath.Join(t.TempDir(), "c.db"), Synchronous: "NORMAL",
		Retention: 2, ProgressInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cst.Close()
	srv, err := server.New(server.Config{Name: "compliance", Auth: auth.Config{Insecure: true}})
	if err != nil {
		t.Fatal(err)
	}
	compliancegrpc.Register(srv.Registrar(), compliancegrpc.New(compliance.New(compliance.Config{Store: cst, Encode: compliancegrpc.EncodeEvent})))
	lis := bufconn.Listen(1 << 20)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop(ctx)
	conn, err := grpc.NewClient("passthrough:///compliance", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	devs, cs := compliancev1.NewDeviceServiceClient(conn), compliancev1.NewComplianceServiceClient(conn)
	enroll := func(id string, registered ...string) *compliancev1.Device {
		return must(devs.EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{DeviceId: id,
			Platform: commonv1.Platform_PLATFORM_LINUX, OwnerUserId: "alice", RegisteredUserIds: registered}})).GetDevice()
	}
	shared := enroll("dev-shared", "bob")
	enroll("dev-later")

	dbPath := filepath.Join(t.TempDir(), "access.db")
	start := func() *harness {
		h := start(t, options{dbPath: dbPath, complianceClient: cs})
		rev := must(cs.ListDeviceCompliance(ctx, &compliancev1.ListDeviceComplianceRequest{})).GetRevision()
		eventually(t, "access caught up with compliance", func() bool { return h.svc.FeedStatus().Revision >= rev })
		return h
	}
	h := start()
	for _, u := range []string{"alice", "bob", "carol"} {
		must(h.dir.CreateUser(ctx, &accessv1.CreateUserRequest{User: &accessv1.User{UserId: u, DisplayName: u}}))
	}
	must(h.dir.CreateApplication(ctx, &accessv1.CreateApplicationRequest{Application: &accessv1.Application{ApplicationId: "payroll", DisplayName: "Payroll"}}))
	must(h.pol.CreatePolicy(ctx, &accessv1.CreatePolicyRequest{Policy: &accessv1.ConditionalAccessPolicy{PolicyId: "registered", DisplayName: "Payroll: the user's device",
		State: accessv1.PolicyState_POLICY_STATE_ENABLED, Users: &accessv1.UserAssignment{All: true}, Applications: &accessv1.ApplicationAssignment{Include: []string{"payroll"}},
		GrantControls: &accessv1.GrantControls{Require: []accessv1.GrantControl{accessv1.GrantControl_GRANT_CONTROL_REGISTERED_DEVICE}}}}))
	for _, c := range []struct {
		user, dev string
		allow     bool
	}{{"bob", "dev-shared", true}, {"alice", "dev-shared", true}, {"carol", "dev-shared", false}} {
		if r := evaluate(t, h, c.user, c.dev, "payroll"); (r.GetDecision() == allow) != c.allow {
			t.Fatalf("before: %s on %s: %v %v", c.user, c.dev, r.GetDecision(), codesOf(r))
		}
	}
	cursor := h.svc.FeedStatus().Revision
	h.stop() // access is disconnected

	// Meanwhile: bob loses the shared device, carol gains it, more events pass the
	// retention of 2.
	must(devs.UpdateDevice(ctx, &compliancev1.UpdateDeviceRequest{Device: &compliancev1.Device{DeviceId: "dev-shared", Platform: commonv1.Platform_PLATFORM_LINUX, RegisteredUserIds: []string{"carol"},
		Etag: shared.GetEtag()}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"registered_user_ids"}}}))
	for _, id := range []string{"dev-x1", "dev-x2", "dev-x3"} {
		enroll(id)
	}
	if err := cst.Log().Compact(ctx); err != nil {
		t.Fatal(err)
	}
	w, err := cs.WatchComplianceEvents(ctx, &compliancev1.WatchComplianceEventsRequest{StartRevision: cursor})
	if err == nil {
		_, err = w.Recv()
	}
	if status.Code(err) != codes.OutOfRange {
		t.Fatalf("watch from access's cursor %d: %v, want OUT_OF_RANGE (the test needs a resync)", cursor, err)
	}

	h = start() // resyncs from the listing
	for _, c := range []struct {
		user, dev string
		allow     bool
		reason    string
	}{
		{"bob", "dev-shared", false, "DEVICE_NOT_REGISTERED_TO_USER"},
		{"carol", "dev-shared", true, "GRANTED_BY_POLICY"},
		{"alice", "dev-shared", true, "GRANTED_BY_POLICY"},
		{"alice", "dev-x3", true, "GRANTED_BY_POLICY"},
		{"bob", "dev-x3", false, "DEVICE_NOT_REGISTERED_TO_USER"},
	} {
		r := evaluate(t, h, c.user, c.dev, "payroll")
		if (r.GetDecision() == allow) != c.allow || codesOf(r)[0] != c.reason {
			t.Errorf("after the resync: %s on %s: %v %v, want allow=%v %s", c.user, c.dev, r.GetDecision(), codesOf(r), c.allow, c.reason)
		}
	}
}
