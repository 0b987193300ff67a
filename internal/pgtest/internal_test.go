package pgtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestFindBinMissing: without binaries the reason names what is missing and how to
// provide a server (the suites skip with it).
func TestFindBinMissing(t *testing.T) {
	old := binGlob
	binGlob = "/nonexistent/postgresql/*/bin/initdb"
	defer func() { binGlob = old }()
	t.Setenv("PATH", t.TempDir())
	_, err := findBin()
	if err == nil || !strings.Contains(err.Error(), "no PostgreSQL binaries") || !strings.Contains(err.Error(), EnvURL) {
		t.Fatalf("findBin = %v, want the missing-binaries reason", err)
	}
}

// TestFindBinNewest: the newest installed version is chosen.
func TestFindBinNewest(t *testing.T) {
	if v := version("/usr/lib/postgresql/15/bin/initdb"); v != 15 {
		t.Fatalf("version = %d, want 15", v)
	}
}

// TestReapStale: a cluster folder whose owner process is gone is removed; one owned
// by a live process, or without an owner file (being set up), is kept.
func TestReapStale(t *testing.T) {
	base := t.TempDir()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Skip("no true binary:", err)
	}
	dirs := map[string]string{"dead": strconv.Itoa(dead.Process.Pid), "live": strconv.Itoa(os.Getpid()), "starting": ""}
	for name, owner := range dirs {
		dir := filepath.Join(base, dirPrefix+name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if owner != "" {
			if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(owner), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	reapStale(t.TempDir(), base)
	for name, wantKept := range map[string]bool{"dead": false, "live": true, "starting": true} {
		_, err := os.Stat(filepath.Join(base, dirPrefix+name))
		if kept := err == nil; kept != wantKept {
			t.Errorf("%s: kept %v, want %v", name, kept, wantKept)
		}
	}
}
