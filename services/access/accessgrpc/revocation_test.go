package accessgrpc_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/telemetry"
)

// TestRevocationOnUserDisabledOrDeleted: disabling (UpdateUser enabled=false) or
// deleting a user publishes the revocation of each of the user's sessions on
// WatchSessionEvents, with the admin request's trace, and leaves other users'
// sessions alone; the user's next decision blocks.
func TestRevocationOnUserDisabledOrDeleted(t *testing.T) {
	const traceID = "0af7651916cd43dd8448eb211c80319c"
	for _, tt := range []struct {
		name      string
		change    func(ctx context.Context, h *harness) error
		reason    string
		blockedBy string
	}{
		{"disabled", func(ctx context.Context, h *harness) error {
			_, err := h.dir.UpdateUser(ctx, &accessv1.UpdateUserRequest{User: &accessv1.User{UserId: "u-1", Disabled: true},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"enabled"}}})
			return err
		}, "USER_DISABLED", "USER_DISABLED"},
		{"deleted", func(ctx context.Context, h *harness) error {
			_, err := h.dir.DeleteUser(ctx, &accessv1.DeleteUserRequest{UserId: "u-1"})
			return err
		}, "USER_DELETED", "UNKNOWN_USER"},
		// Binding a user to an external id revokes nothing; rebinding it revokes the
		// sessions opened for the old identity-provider account. The user itself
		// stays allowed (blockedBy "": a new session).
		{"external id changed", func(ctx context.Context, h *harness) error {
			for _, ext := range []string{"idp-1", "idp-2"} {
				if _, err := h.dir.UpdateUser(ctx, &accessv1.UpdateUserRequest{User: &accessv1.User{UserId: "u-1", ExternalId: ext},
					UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"external_id"}}}); err != nil {
					return err
				}
			}
			return nil
		}, "USER_EXTERNAL_ID_CHANGED", ""},
		// The same changes made by a directory import.
		{"disabled by an import", func(ctx context.Context, h *harness) error {
			return importUsers(ctx, h, &accessv1.User{UserId: "u-1", Disabled: true})
		}, "USER_DISABLED", "USER_DISABLED"},
		{"external id changed by an import", func(ctx context.Context, h *harness) error {
			if err := importUsers(ctx, h, &accessv1.User{UserId: "u-1", ExternalId: "idp-1"}); err != nil {
				return err
			}
			return importUsers(ctx, h, &accessv1.User{UserId: "u-1", ExternalId: "idp-2"})
		}, "USER_EXTERNAL_ID_CHANGED", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := start(t, options{})
			seed(t, h)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			must(h.dir.CreateUser(ctx, &accessv1.CreateUserRequest{User: &accessv1.User{UserId: "u-2"}}))
			h.compliance.set("dev-1", compliant, commonv1.RiskLevel_RISK_LEVEL_NONE, nil, nil)
			mine := map[string]bool{
				waitDecision(t, h, allow, "u-1", "dev-1", "payroll").GetSessionId(): true,
				waitDecision(t, h, allow, "u-1", "dev-1", "wiki").GetSessionId():    true,
			}
			other := waitDecision(t, h, allow, "u-2", "dev-1", "payroll").GetSessionId()
			if len(mine) != 2 || mine[""] || other == "" || mine[other] {
				t.Fatalf("sessions: u-1 %v, u-2 %q", mine, other)
			}
			watch := must(h.acc.WatchSessionEvents(ctx, &accessv1.WatchSessionEventsRequest{}))

			actx := metadata.AppendToOutgoingContext(ctx, "traceparent", "00-"+traceID+"-b7ad6b7169203331-01")
			if err := tt.change(actx, h); err != nil {
				t.Fatal(err)
			}
			revoked := map[string]bool{}
			for len(revoked) < len(mine) {
				m, err := watch.Recv()
				if err != nil {
					t.Fatalf("watch (revoked so far %v): %v", revoked, err)
				}
				rv := m.GetEvent().GetSessionRevoked()
				if rv == nil {
					continue
				}
				id := rv.GetSession().GetSessionId()
				if !mine[id] {
					t.Fatalf("revoked session %q of %q, not one of u-1's %v", id, rv.GetSession().GetUserId(), mine)
				}
				if rv.GetReasonCode() != tt.reason || rv.GetSession().GetRevokeReason() != tt.reason ||
					rv.GetSession().GetState() != accessv1.SessionState_SESSION_STATE_REVOKED || rv.GetComplianceRevision() != 0 {
					t.Errorf("revoked = %v", rv)
				}
				if got := telemetry.TraceID(telemetry.ContextFromTraceContext(ctx, m.GetEvent().GetTraceContext())); got != traceID {
					t.Errorf("revocation trace id = %q, want the admin request's %q", got, traceID)
				}
				revoked[id] = true
			}
			if tt.blockedBy == "" {
				if r := evaluate(t, h, "u-1", "dev-1", "wiki"); r.GetDecision() != allow || r.GetSessionId() == "" || mine[r.GetSessionId()] {
					t.Errorf("u-1 after the change: %v %v session %q, want allowed in a new session", r.GetDecision(), codesOf(r), r.GetSessionId())
				}
			} else if r := evaluate(t, h, "u-1", "dev-1", "wiki"); r.GetDecision() != block || r.GetSessionId() != "" || codesOf(r)[0] != tt.blockedBy {
				t.Errorf("u-1 after the change: %v %v session %q", r.GetDecision(), codesOf(r), r.GetSessionId())
			}
			// u-2's session reaches the store with the recorder's next batch.
			var list *accessv1.ListSessionsResponse
			eventually(t, "the stored sessions", func() bool {
				list = must(h.acc.ListSessions(ctx, &accessv1.ListSessionsRequest{DeviceId: "dev-1"}))
				// Three, plus u-1's new one when it stays allowed.
				return len(list.GetSessions()) == 3 || (tt.blockedBy == "" && len(list.GetSessions()) == 4)
			})
			for _, x := range list.GetSessions() {
				want := accessv1.SessionState_SESSION_STATE_REVOKED
				if x.GetSessionId() == other || !mine[x.GetSessionId()] {
					want = accessv1.SessionState_SESSION_STATE_ACTIVE
				}
				if x.GetState() != want {
					t.Errorf("session %s of %s is %v, want %v", x.GetSessionId(), x.GetUserId(), x.GetState(), want)
				}
			}
			// u-2 keeps its session: the same one on the next decision.
			if r := evaluate(t, h, "u-2", "dev-1", "payroll"); r.GetSessionId() != other {
				t.Errorf("u-2's session after the change = %q, want %q", r.GetSessionId(), other)
			}
		})
	}
}

// importUsers imports users with ImportDirectory in one chunk.
func importUsers(ctx context.Context, h *harness, users ...*accessv1.User) error {
	stream, err := h.dir.ImportDirectory(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&accessv1.ImportDirectoryRequest{Users: users}); err != nil {
		return err
	}
	_, err = stream.CloseAndRecv()
	return err
}
