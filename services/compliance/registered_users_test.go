package compliance_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/condaccess/condaccess/services/compliance"
)

// TestRegisteredUsers: the admin-managed registered users of a device are stored
// (sorted, deduplicated), changed only when the update mask names them, and an empty
// id is refused without changing anything.
func TestRegisteredUsers(t *testing.T) {
	f := newFixture(t)
	_, err := f.svc.EnrollDevice(f.ctx, compliance.Device{ID: "dev-1", Platform: compliance.PlatformLinux, OwnerUserID: "alice",
		RegisteredUserIDs: []string{"carol", "bob", "carol"}})
	f.must(err)
	get := func() []string {
		t.Helper()
		d, err := f.svc.GetDevice(f.ctx, "dev-1")
		f.must(err)
		return d.RegisteredUserIDs
	}
	if got := get(); !slices.Equal(got, []string{"bob", "carol"}) {
		t.Fatalf("registered users after enroll = %v", got)
	}
	_, err = f.svc.UpdateDevice(f.ctx, compliance.DeviceUpdate{Device: compliance.Device{ID: "dev-1", DisplayName: "Laptop"}, Paths: []string{"display_name"}})
	f.must(err)
	if got := get(); !slices.Equal(got, []string{"bob", "carol"}) {
		t.Fatalf("an update without registered_user_ids in its mask changed them: %v", got)
	}
	_, err = f.svc.UpdateDevice(f.ctx, compliance.DeviceUpdate{Device: compliance.Device{ID: "dev-1", RegisteredUserIDs: []string{"dave", ""}},
		Paths: []string{compliance.FieldRegisteredUserIDs}})
	var inv *compliance.InvalidError
	if !errors.As(err, &inv) || inv.Violations[0].Field != "device.registered_user_ids[0]" {
		t.Fatalf("empty registered user id: %v, want a field violation", err)
	}
	if got := get(); !slices.Equal(got, []string{"bob", "carol"}) {
		t.Fatalf("a refused update changed the registered users: %v", got)
	}
	_, err = f.svc.UpdateDevice(f.ctx, compliance.DeviceUpdate{Device: compliance.Device{ID: "dev-1", RegisteredUserIDs: []string{"dave"}},
		Paths: []string{compliance.FieldRegisteredUserIDs}})
	f.must(err)
	if got := get(); !slices.Equal(got, []string{"dave"}) {
		t.Fatalf("registered users after update = %v", got)
	}
}
