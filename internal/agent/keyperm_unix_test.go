//go:build unix

package agent_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/condaccess/condaccess/internal/agent"
)

func TestCheckKeyFilePermissions(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		mode os.FileMode
		link bool
		err  string // "" when accepted
	}{
		{"0600", 0o600, false, ""},
		{"0400", 0o400, false, ""},
		{"group readable 0640", 0o640, false, "readable by its owner only"},
		{"world readable 0644", 0o644, false, "readable by its owner only"},
		{"group writable 0620", 0o620, false, "readable by its owner only"},
		{"a symbolic link to a 0600 file", 0o600, true, "not a regular file"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, "key-"+string(rune('a'+i))+".pem")
			if err := os.WriteFile(p, []byte("k"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tt.mode); err != nil {
				t.Fatal(err)
			}
			if tt.link {
				l := p + ".link"
				if err := os.Symlink(p, l); err != nil {
					t.Fatal(err)
				}
				p = l
			}
			err := agent.CheckKeyFilePermissions(p)
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Errorf("CheckKeyFilePermissions = %v, want %q", err, tt.err)
			}
		})
	}
	if err := agent.CheckKeyFilePermissions(filepath.Join(dir, "missing.pem")); err == nil {
		t.Error("a missing key file passed")
	}
}
