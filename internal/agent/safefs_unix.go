//go:build unix

package agent

import (
	"errors"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// dirHandle is an open folder, reached without following symbolic links; the names
// below it are resolved relative to it (openat and friends), so a folder replaced
// after it was opened does not redirect them.
type dirHandle struct {
	fd   int
	path string
}

// openDir opens the folder at the absolute path without following a symbolic link in
// any component (errSymlink when one is).
func openDir(path string) (*dirHandle, error) {
	fd, err := openDirNoFollow(path)
	if err != nil {
		return nil, err
	}
	return &dirHandle{fd: fd, path: path}, nil
}

// openDirPerComponent walks path from "/" one component at a time with O_NOFOLLOW.
func openDirPerComponent(path string) (int, error) {
	if !strings.HasPrefix(path, "/") {
		return -1, errors.New("not an absolute path")
	}
	fd, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	for _, part := range strings.Split(path, "/") {
		if part == "" {
			continue
		}
		if part == "." || part == ".." {
			unix.Close(fd)
			return -1, errors.New("path has . or .. elements")
		}
		next, err := unix.Openat(fd, part, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			var st unix.Stat_t
			if serr := unix.Fstatat(fd, part, &st, unix.AT_SYMLINK_NOFOLLOW); serr == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				err = errSymlink
			}
			unix.Close(fd)
			return -1, mapErrno(err)
		}
		unix.Close(fd)
		fd = next
	}
	return fd, nil
}

func mapErrno(err error) error {
	switch {
	case errors.Is(err, errSymlink), errors.Is(err, unix.ELOOP):
		return errSymlink
	case errors.Is(err, unix.ENOENT):
		return os.ErrNotExist
	}
	return err
}

func (d *dirHandle) Close() error { return unix.Close(d.fd) }

func statID(st *unix.Stat_t) fileID { return fileID{Dev: uint64(st.Dev), Ino: uint64(st.Ino)} }

// id returns the folder's device and inode.
func (d *dirHandle) id() (fileID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		return fileID{}, err
	}
	return statID(&st), nil
}

// lstat describes name in the folder without following a symbolic link.
func (d *dirHandle) lstat(name string) (fileStat, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fileStat{}, mapErrno(err)
	}
	t := st.Mode & unix.S_IFMT
	return fileStat{regular: t == unix.S_IFREG, symlink: t == unix.S_IFLNK, mode: os.FileMode(st.Mode & 0o777), id: statID(&st)}, nil
}

// open opens name for reading, refusing a symbolic link.
func (d *dirHandle) open(name string) (*os.File, error) {
	fd, err := unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, mapErrno(err)
	}
	return os.NewFile(uintptr(fd), d.path+"/"+name), nil
}

// create creates name exclusively (never through a symbolic link).
func (d *dirHandle) create(name string, perm os.FileMode) (*os.File, error) {
	fd, err := unix.Openat(d.fd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(perm))
	if err != nil {
		return nil, mapErrno(err)
	}
	return os.NewFile(uintptr(fd), d.path+"/"+name), nil
}

func (d *dirHandle) remove(name string) error { return mapErrno(unix.Unlinkat(d.fd, name, 0)) }

// fileIDOf returns an open file's device and inode.
func fileIDOf(f *os.File) (fileID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fileID{}, err
	}
	return statID(&st), nil
}

// chmodOpen sets an open file's permission bits.
func chmodOpen(f *os.File, mode os.FileMode) error { return f.Chmod(mode) }

// errCrossDevice reports whether a rename failed because the folders are on different
// file systems.
func errCrossDevice(err error) bool { return errors.Is(err, unix.EXDEV) }
