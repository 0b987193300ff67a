package compliance_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/condaccess/condaccess/services/compliance"
)

// TestListingCarriesEnrollment: every listed device compliance carries its device's
// platform and users (retired devices included), whatever the page bounds, state
// filter and the number of devices read at a time.
func TestListingCarriesEnrollment(t *testing.T) {
	f := newFixture(t)
	defer compliance.SetEnrollmentPage(2)()
	want := map[string]compliance.Enrollment{}
	for _, d := range []compliance.Device{
		{ID: "d1", Platform: compliance.PlatformLinux, OwnerUserID: "alice", RegisteredUserIDs: []string{"bob"}},
		{ID: "d2", Platform: compliance.PlatformWindows, OwnerUserID: "bob"},
		{ID: "d3", Platform: compliance.PlatformMacOS},
		{ID: "d4", Platform: compliance.PlatformLinux, OwnerUserID: "carol", RegisteredUserIDs: []string{"alice", "dave"}},
		{ID: "d5", Platform: compliance.PlatformWindows, OwnerUserID: "erin"},
	} {
		_, err := f.svc.EnrollDevice(f.ctx, d)
		f.must(err)
		want[d.ID] = compliance.Enrollment{Platform: d.Platform, OwnerUserID: d.OwnerUserID, RegisteredUserIDs: d.RegisteredUserIDs}
	}
	_, err := f.svc.RetireDevice(f.ctx, "d2")
	f.must(err)
	e := want["d2"]
	e.Retired = true
	want["d2"] = e

	for _, tt := range []struct {
		name  string
		after string
		limit int
		state compliance.State
	}{
		{"all", "", 100, compliance.StateUnspecified},
		{"first page", "", 2, compliance.StateUnspecified},
		{"middle page", "d2", 2, compliance.StateUnspecified},
		{"last page", "d3", 10, compliance.StateUnspecified},
		{"state filter", "", 100, f.state("d4")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cs, _, err := f.svc.ListDeviceCompliance(f.ctx, compliance.ComplianceFilter{After: tt.after, Limit: tt.limit, State: tt.state})
			f.must(err)
			if len(cs) == 0 {
				t.Fatal("empty listing")
			}
			for _, c := range cs {
				if c.Enrollment == nil {
					t.Fatalf("%s listed without its enrollment", c.DeviceID)
				}
				if diff := cmp.Diff(want[c.DeviceID], *c.Enrollment); diff != "" {
					t.Errorf("%s enrollment (-want +got):\n%s", c.DeviceID, diff)
				}
			}
		})
	}
}
