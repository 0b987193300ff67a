//go:build unix && !linux

package agent

import (
	"golang.org/x/sys/unix"
)

// openDirNoFollow opens a folder one component at a time with O_NOFOLLOW.
func openDirNoFollow(path string) (int, error) { return openDirPerComponent(path) }

// rename moves name to toName in the folder to; with noReplace it fails with
// errExist rather than replace an existing file (checked first: a small race remains
// on platforms without renameat2).
func (d *dirHandle) rename(name string, to *dirHandle, toName string, noReplace bool) error {
	if noReplace {
		if _, err := to.lstat(toName); err == nil {
			return errExist
		}
	}
	return unix.Renameat(d.fd, name, to.fd, toName)
}
