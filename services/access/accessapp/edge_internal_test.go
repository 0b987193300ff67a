package accessapp

import (
	"flag"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/condaccess/condaccess/internal/suite"
	"github.com/condaccess/condaccess/services/access/accesscore"
	"github.com/condaccess/condaccess/services/access/edgeid/edgeidtest"
)

// TestTokenGroupsFlag: token groups reach decisions only with --access-token-groups
// (which needs --oidc-groups-claim); --oidc-groups-claim alone (the console's role
// mapping) leaves decisions on directory groups.
func TestTokenGroupsFlag(t *testing.T) {
	is := edgeidtest.NewIssuer(t)
	token := is.Token(map[string]any{"sub": "alice", "aud": "condaccess", "groups": []string{"contractors"}})
	for _, tt := range []struct {
		name       string
		args       []string
		wantErr    bool
		wantGroups []string
	}{
		{"no groups flags", nil, false, nil},
		{"groups claim for the console only", []string{"--oidc-groups-claim", "groups"}, false, nil},
		{"token groups on", []string{"--oidc-groups-claim", "groups", "--access-token-groups"}, false, []string{"contractors"}},
		{"token groups without a claim", []string{"--access-token-groups"}, true, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := &Factory{}
			fs := flag.NewFlagSet("serve", flag.ContinueOnError)
			f.RegisterFlags(fs)
			if err := fs.Parse(append([]string{"--oidc-issuer", is.URL, "--oidc-audience", "condaccess"}, tt.args...)); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			e, err := f.edge(suite.Env{DataDir: dir}, func() ([]byte, error) {
				return accesscore.LoadOrCreateBlockedRefKey(filepath.Join(dir, "blocked-ref.key"))
			})
			if (err != nil) != tt.wantErr {
				t.Fatalf("edge: %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			c, err := e.Tokens.Verify(t.Context(), token, false, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(c.Groups, tt.wantGroups) {
				t.Fatalf("token groups %q, want %q", c.Groups, tt.wantGroups)
			}
		})
	}
}
