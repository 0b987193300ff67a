package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
)

// fileID identifies a file or folder on its device (Unix device and inode; Windows
// volume serial number and file index).
type fileID struct {
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
}

// fileStat is what lstat reports of a name in a folder.
type fileStat struct {
	regular bool
	symlink bool
	mode    os.FileMode // permission bits
	id      fileID
}

// errSymlink: a path goes through a symbolic link (or a reparse point), which the
// agent never follows when it moves files.
var errSymlink = errors.New("the path goes through a symbolic link")

// errUnsupported: the platform has no safe way to do this.
var errUnsupported = errors.New("not supported on this platform")

// hashOpen returns the lowercase hex SHA-256 of an open file's content from its start.
func hashOpen(f *os.File) (string, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// copyInto copies src (from its start) into a new file name in dir, synced; the new
// file is removed on failure.
func copyInto(src *os.File, dir *dirHandle, name string) error {
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return err
	}
	out, err := dir.create(name, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, src); err != nil {
		out.Close()
		dir.remove(name)
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		dir.remove(name)
		return err
	}
	if err := out.Close(); err != nil {
		dir.remove(name)
		return err
	}
	return nil
}

// errExist: the destination of a move exists and is not replaced.
var errExist = errors.New("a file already exists there")
