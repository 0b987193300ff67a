package httpface

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
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
		// Browsers drop tabs and newlines from a URL before resolving it (WHATWG URL),
		// so "/\t/evil.example" in a Location header is "//evil.example": another host.
		{"/\t/evil.example/x", "/"},
		{"/\n/evil.example/x", "/"},
		{"/\r/evil.example/x", "/"},
		{"/\t\\evil.example", "/"},
		{"/devices\x00", "/"},
	} {
		t.Run(tt.next, func(t *testing.T) {
			if got := localPath(tt.next); got != tt.want {
				t.Errorf("localPath(%q) = %q, want %q", tt.next, got, tt.want)
			}
			// What a browser follows: the Location http.Redirect writes, with tabs and
			// newlines removed, resolved against the console's origin.
			rec := httptest.NewRecorder()
			http.Redirect(rec, httptest.NewRequest(http.MethodGet, "https://console.example/auth/callback", nil), localPath(tt.next), http.StatusFound)
			loc := strings.Map(func(r rune) rune {
				if r == '\t' || r == '\n' || r == '\r' {
					return -1
				}
				return r
			}, rec.Header().Get("Location"))
			loc = strings.ReplaceAll(loc, "\\", "/")
			u, err := url.Parse("https://console.example/auth/callback")
			if err != nil {
				t.Fatal(err)
			}
			if to, err := u.Parse(loc); err != nil || to.Host != "console.example" {
				t.Errorf("after sign-in with next=%q the browser goes to %q (%v), want the console's own origin", tt.next, loc, to)
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
