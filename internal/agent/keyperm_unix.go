//go:build unix

package agent

import (
	"fmt"
	"os"
	"syscall"
)

// CheckKeyFilePermissions fails unless the private key file at path is a regular file
// (not a symbolic link) owned by the effective user and readable by it alone: mode
// 0600 or stricter, no group or other permission bit.
func CheckKeyFilePermissions(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("key file %s is not a regular file (%s)", path, fi.Mode().Type())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("key file %s has mode %#o: it must be readable by its owner only (chmod 600)", path, perm)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("key file %s is owned by uid %d, not by the agent's user (uid %d)", path, st.Uid, os.Geteuid())
	}
	return nil
}
