//go:build unix

package agent

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOpenDirWalks: both ways of opening a folder without symbolic links (openat2 on
// Linux, one component at a time with O_NOFOLLOW elsewhere, also Linux's fallback)
// open a dir folder, refuse a symbolic link in any component, and report a missing
// folder as such.
func TestOpenDirWalks(t *testing.T) {
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "a", "b")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(base, "a"), filepath.Join(base, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dir, filepath.Join(base, "a", "blink")); err != nil {
		t.Fatal(err)
	}
	var want unix.Stat_t
	if err := unix.Stat(dir, &want); err != nil {
		t.Fatal(err)
	}
	walks := map[string]func(string) (int, error){"openDirNoFollow": openDirNoFollow, "openDirPerComponent": openDirPerComponent}
	tests := []struct {
		name, path string
		err        error // nil: opens the folder
	}{
		{"dir folder", dir, nil},
		{"symbolic link in the middle", filepath.Join(base, "link", "b"), errSymlink},
		{"symbolic link last", filepath.Join(base, "a", "blink"), errSymlink},
		{"missing", filepath.Join(base, "a", "nope"), os.ErrNotExist},
	}
	for wname, walk := range walks {
		for _, tt := range tests {
			t.Run(wname+"/"+tt.name, func(t *testing.T) {
				fd, err := walk(tt.path)
				if tt.err != nil {
					if !errors.Is(err, tt.err) {
						t.Errorf("err = %v, want %v", err, tt.err)
					}
					if err == nil {
						unix.Close(fd)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				defer unix.Close(fd)
				var got unix.Stat_t
				if err := unix.Fstat(fd, &got); err != nil {
					t.Fatal(err)
				}
				if got.Dev != want.Dev || got.Ino != want.Ino {
					t.Errorf("opened %d/%d, want %d/%d", got.Dev, got.Ino, want.Dev, want.Ino)
				}
			})
		}
	}
	if _, err := openDirPerComponent(base + "/a/../a/b"); err == nil {
		t.Error("a path with .. was opened")
	}
}
