//go:build linux

package agent

import (
	"errors"

	"golang.org/x/sys/unix"
)

// openDirNoFollow opens a folder with openat2(RESOLVE_NO_SYMLINKS), or one component
// at a time with O_NOFOLLOW on kernels before 5.6.
func openDirNoFollow(path string) (int, error) {
	fd, err := unix.Openat2(unix.AT_FDCWD, path, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		return openDirPerComponent(path)
	}
	if err != nil {
		return -1, mapErrno(err)
	}
	return fd, nil
}

// rename moves name to toName in the folder to; with noReplace it fails with
// os.ErrExist rather than replace an existing file (renameat2 RENAME_NOREPLACE).
func (d *dirHandle) rename(name string, to *dirHandle, toName string, noReplace bool) error {
	if !noReplace {
		return unix.Renameat(d.fd, name, to.fd, toName)
	}
	err := unix.Renameat2(d.fd, name, to.fd, toName, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// A file system without RENAME_NOREPLACE: check, then rename.
		if _, serr := to.lstat(toName); serr == nil {
			return errExist
		}
		return unix.Renameat(d.fd, name, to.fd, toName)
	}
	if errors.Is(err, unix.EEXIST) {
		return errExist
	}
	return err
}
