package httpface

import (
	"slices"
	"testing"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
)

// TestLocalPath: after sign-in the console returns only to its own paths (no open
// redirect through ?next=).
func TestLocalPath(t *testing.T) {
	for _, tt := range []struct{ next, want string }{
		{"/devices", "/devices"},
		{"/devices/dev-1?tab=timeline", "/devices/dev-1?tab=timeline"},
		{"", "/"},
		{"//evil.example/x", "/"},
		{"https://evil.example/", "/"},
		{"/\\evil.example", "/"},
		{"javascript:alert(1)", "/"},
	} {
		t.Run(tt.next, func(t *testing.T) {
			if got := localPath(tt.next); got != tt.want {
				t.Errorf("localPath(%q) = %q, want %q", tt.next, got, tt.want)
			}
		})
	}
}

// TestParseRoleMap: groups map to people's roles only; anything else is refused.
func TestParseRoleMap(t *testing.T) {
	got, err := ParseRoleMap("soc=secops-admin, soc=reader,iam=policy-admin")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got["soc"], []commonv1.Role{commonv1.Role_ROLE_SECOPS_ADMIN, commonv1.Role_ROLE_READER}) ||
		!slices.Equal(got["iam"], []commonv1.Role{commonv1.Role_ROLE_POLICY_ADMIN}) {
		t.Errorf("ParseRoleMap = %v", got)
	}
	for _, bad := range []string{"soc", "=reader", "soc=root", "bots=sensor", "edge=enforcement-point", "svc=service"} {
		t.Run(bad, func(t *testing.T) {
			if _, err := ParseRoleMap(bad); err == nil {
				t.Errorf("ParseRoleMap(%q) accepted", bad)
			}
		})
	}
}
