//go:build !windows

package main

import (
	"fmt"
	"os"
)

// checkKeyPermissions refuses a device key that others than its owner may read or
// write (as ssh does): the key is the device's identity.
func checkKeyPermissions(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s has mode %04o: the device key must be readable by its owner only (chmod 600 %s)", path, perm, path)
	}
	return nil
}
