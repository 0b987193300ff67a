//go:build windows

package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/windows"
)

// dirHandle is a folder reached without a symbolic link or other reparse point in any
// component, held open (so it cannot be deleted) while the agent works in it. Limit:
// Windows has no openat, so names below it are resolved by path; a component replaced
// between the check and the use is caught by the folder's file id check on restore.
type dirHandle struct {
	h    windows.Handle
	path string
}

// openDir opens the folder at the absolute path, refusing (errSymlink) a symbolic link
// or reparse point in any component.
func openDir(path string) (*dirHandle, error) {
	vol := filepath.VolumeName(path)
	if vol == "" {
		return nil, errors.New("not an absolute path")
	}
	cur := vol + `\`
	for _, part := range strings.Split(strings.TrimPrefix(path, vol), `\`) {
		if part == "" {
			continue
		}
		if part == "." || part == ".." {
			return nil, errors.New("path has . or .. elements")
		}
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		if err != nil {
			return nil, err
		}
		if fi.Mode()&(os.ModeSymlink|os.ModeIrregular) != 0 {
			return nil, errSymlink
		}
		if !fi.IsDir() {
			return nil, errors.New(cur + " is not a folder")
		}
	}
	h, err := openNoFollow(path, 0)
	if err != nil {
		return nil, err
	}
	return &dirHandle{h: h, path: path}, nil
}

// openNoFollow opens a handle on path itself (a reparse point is not followed).
func openNoFollow(path string, access uint32) (windows.Handle, error) {
	p, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return 0, err
	}
	return windows.CreateFile(p, access, windows.FILE_SHARE_READ|windows.FILE_SHARE_WRITE|windows.FILE_SHARE_DELETE, nil,
		windows.OPEN_EXISTING, windows.FILE_FLAG_BACKUP_SEMANTICS|windows.FILE_FLAG_OPEN_REPARSE_POINT, 0)
}

func handleID(h windows.Handle) (fileID, error) {
	var info windows.ByHandleFileInformation
	if err := windows.GetFileInformationByHandle(h, &info); err != nil {
		return fileID{}, err
	}
	return fileID{Dev: uint64(info.VolumeSerialNumber), Ino: uint64(info.FileIndexHigh)<<32 | uint64(info.FileIndexLow)}, nil
}

func (d *dirHandle) Close() error { return windows.CloseHandle(d.h) }

func (d *dirHandle) id() (fileID, error) { return handleID(d.h) }

func (d *dirHandle) join(name string) string { return filepath.Join(d.path, name) }

func (d *dirHandle) lstat(name string) (fileStat, error) {
	fi, err := os.Lstat(d.join(name))
	if err != nil {
		return fileStat{}, err
	}
	st := fileStat{regular: fi.Mode().IsRegular(), symlink: fi.Mode()&(os.ModeSymlink|os.ModeIrregular) != 0, mode: fi.Mode().Perm()}
	if h, err := openNoFollow(d.join(name), 0); err == nil {
		st.id, _ = handleID(h)
		windows.CloseHandle(h)
	}
	return st, nil
}

func (d *dirHandle) open(name string) (*os.File, error) {
	st, err := d.lstat(name)
	if err != nil {
		return nil, err
	}
	if st.symlink {
		return nil, errSymlink
	}
	return os.Open(d.join(name))
}

func (d *dirHandle) create(name string, perm os.FileMode) (*os.File, error) {
	return os.OpenFile(d.join(name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
}

func (d *dirHandle) remove(name string) error { return os.Remove(d.join(name)) }

// rename moves name to toName in the folder to (MoveFileEx without
// MOVEFILE_REPLACE_EXISTING when noReplace).
func (d *dirHandle) rename(name string, to *dirHandle, toName string, noReplace bool) error {
	from, err := windows.UTF16PtrFromString(d.join(name))
	if err != nil {
		return err
	}
	dst, err := windows.UTF16PtrFromString(to.join(toName))
	if err != nil {
		return err
	}
	var flags uint32
	if !noReplace {
		flags = windows.MOVEFILE_REPLACE_EXISTING
	}
	err = windows.MoveFileEx(from, dst, flags)
	if errors.Is(err, windows.ERROR_ALREADY_EXISTS) || errors.Is(err, windows.ERROR_FILE_EXISTS) {
		return errExist
	}
	return err
}

func fileIDOf(f *os.File) (fileID, error) { return handleID(windows.Handle(f.Fd())) }

func chmodOpen(f *os.File, mode os.FileMode) error { return f.Chmod(mode) }

func errCrossDevice(err error) bool { return errors.Is(err, windows.ERROR_NOT_SAME_DEVICE) }
