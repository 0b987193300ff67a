package pgtest

import (
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
