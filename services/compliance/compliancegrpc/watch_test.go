package compliancegrpc_test

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

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/eventlog"
	"github.com/condaccess/condaccess/internal/server"
	"github.com/condaccess/condaccess/services/compliance"
	"github.com/condaccess/condaccess/services/compliance/compliancegrpc"
	"github.com/condaccess/condaccess/services/compliance/compliancestore"
)

// TestWatchReplayProgressAndCompaction: the watch replays from a revision, sends
// progress when idle, and refuses a compacted start with OUT_OF_RANGE
// REVISION_COMPACTED (the consumer then lists and watches from the listing's revision).
func TestWatchReplayProgressAndCompaction(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := compliancestore.Open(ctx, compliancestore.Options{
		Path: filepath.Join(t.TempDir(), "c.db"), Synchronous: "NORMAL", Retention: 2, ProgressInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	svc := compliance.New(compliance.Config{Store: st, Encode: compliancegrpc.EncodeEvent})
	srv, err := server.New(server.Config{Name: "t", Auth: auth.Config{Insecure: true}})
	if err != nil {
		t.Fatal(err)
	}
	compliancegrpc.Register(srv.Registrar(), compliancegrpc.New(svc))
	lis := bufconn.Listen(1 << 20)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop(ctx)
	conn, err := grpc.NewClient("passthrough:///bufconn", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	devs, cs := compliancev1.NewDeviceServiceClient(conn), compliancev1.NewComplianceServiceClient(conn)

	// Each enrollment writes device_changed then device_compliance_changed.
	for _, id := range []string{"d1", "d2"} {
		if _, err := devs.EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{DeviceId: id, Platform: commonv1.Platform_PLATFORM_LINUX}}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := cs.WatchComplianceEvents(ctx, &compliancev1.WatchComplianceEventsRequest{StartRevision: 1})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 4 {
		m, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case m.GetEvent().GetDeviceChanged() != nil:
			got = append(got, "device:"+m.GetEvent().GetDeviceChanged().GetDevice().GetDeviceId())
		case m.GetEvent().GetDeviceComplianceChanged() != nil:
			c := m.GetEvent().GetDeviceComplianceChanged()
			if c.GetDeviceCompliance().GetRevision() != m.GetEvent().GetRevision() {
				t.Errorf("compliance revision %d in event %d", c.GetDeviceCompliance().GetRevision(), m.GetEvent().GetRevision())
			}
			got = append(got, "compliance:"+c.GetDeviceCompliance().GetDeviceId()+":"+c.GetPreviousState().String())
		case m.GetProgress() != nil:
			got = append(got, "progress")
		}
	}
	want := []string{"compliance:d1:COMPLIANCE_STATE_NOT_EVALUATED", "device:d2", "compliance:d2:COMPLIANCE_STATE_NOT_EVALUATED", "progress"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("watch from revision 1 = %v, want %v", got, want)
		}
	}

	if err := st.Log().Compact(ctx); err != nil {
		t.Fatal(err)
	}
	s, err = cs.WatchComplianceEvents(ctx, &compliancev1.WatchComplianceEventsRequest{StartRevision: 0})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Recv()
	if status.Code(err) != codes.OutOfRange || apierr.Reason(err) != eventlog.ReasonRevisionCompacted {
		t.Fatalf("watch from a compacted revision: %v, want OUT_OF_RANGE %s", err, eventlog.ReasonRevisionCompacted)
	}
}
