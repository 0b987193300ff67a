//go:build !unix && !windows

package agent

import "fmt"

// CheckKeyFilePermissions cannot judge a key file's permissions on this platform and
// fails.
func CheckKeyFilePermissions(path string) error {
	return fmt.Errorf("key file %s: permission checks are not implemented on this platform", path)
}
