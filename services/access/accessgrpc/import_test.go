package accessgrpc_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
)

// TestImportDirectoryBatches: ImportDirectory applies each batch while the stream is
// still open (so a stream of any length holds at most one batch in memory); a group
// may name users of an earlier batch; a failing batch ends the stream and leaves the
// earlier batches applied.
func TestImportDirectoryBatches(t *testing.T) {
	h := start(t, options{importBatch: 250})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	users := func(from, to int) []*accessv1.User {
		var us []*accessv1.User
		for i := from; i < to; i++ {
			us = append(us, &accessv1.User{UserId: "u" + itoa(i)})
		}
		return us
	}
	stream := must(h.dir.ImportDirectory(ctx))
	if err := stream.Send(&accessv1.ImportDirectoryRequest{Users: users(0, 300)}); err != nil {
		t.Fatal(err)
	}
	// The first batch is applied before the stream ends.
	eventually(t, "u299 imported mid-stream", func() bool {
		_, err := h.dir.GetUser(ctx, &accessv1.GetUserRequest{UserId: "u299"})
		return err == nil
	})
	if err := stream.Send(&accessv1.ImportDirectoryRequest{Users: users(300, 600),
		Groups: []*accessv1.Group{{GroupId: "g", MemberUserIds: []string{"u0", "u599"}}}}); err != nil {
		t.Fatal(err)
	}
	resp := must(stream.CloseAndRecv())
	if resp.GetUsers() != 600 || resp.GetGroups() != 1 {
		t.Fatalf("import = %v, want 600 users and 1 group", resp)
	}

	// A group naming a user of a later batch is refused; the batch before it stays.
	stream = must(h.dir.ImportDirectory(ctx))
	if err := stream.Send(&accessv1.ImportDirectoryRequest{Users: users(1000, 1300)}); err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&accessv1.ImportDirectoryRequest{Groups: []*accessv1.Group{{GroupId: "late", MemberUserIds: []string{"u2000"}}}, Users: users(1300, 1600)}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CloseAndRecv(); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("forward reference across batches: %v, want FailedPrecondition", err)
	}
	if _, err := h.dir.GetUser(ctx, &accessv1.GetUserRequest{UserId: "u1299"}); err != nil {
		t.Errorf("the applied batch is gone: %v", err)
	}
	if _, err := h.dir.GetGroup(ctx, &accessv1.GetGroupRequest{GroupId: "late"}); status.Code(err) != codes.NotFound {
		t.Errorf("refused group stored: %v", err)
	}
}
