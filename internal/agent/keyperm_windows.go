//go:build windows

package agent

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/windows"
)

// keyReadMask are the access rights that let a trustee read a file's content.
const keyReadMask = windows.FILE_READ_DATA | windows.GENERIC_READ | windows.GENERIC_ALL | windows.FILE_GENERIC_READ

// CheckKeyFilePermissions fails unless the private key file at path is a regular file
// whose DACL grants no read access to Everyone, Authenticated Users or Users. A file
// without a DACL (everyone has full access) fails too. Limit: rights granted through
// other groups a user belongs to (a custom group, inherited from a shared folder) are
// not judged; keep the state folder under the agent's own protected profile.
func CheckKeyFilePermissions(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("key file %s is not a regular file (%s)", path, fi.Mode().Type())
	}
	sd, err := windows.GetNamedSecurityInfo(path, windows.SE_FILE_OBJECT, windows.DACL_SECURITY_INFORMATION)
	if err != nil {
		return fmt.Errorf("key file %s: reading its ACL: %w", path, err)
	}
	dacl, _, err := sd.DACL()
	if err != nil || dacl == nil {
		return fmt.Errorf("key file %s has no DACL: everyone may read it", path)
	}
	var broad []*windows.SID
	for _, t := range []windows.WELL_KNOWN_SID_TYPE{windows.WinWorldSid, windows.WinAuthenticatedUserSid, windows.WinBuiltinUsersSid} {
		sid, err := windows.CreateWellKnownSid(t)
		if err != nil {
			return fmt.Errorf("key file %s: %w", path, err)
		}
		broad = append(broad, sid)
	}
	for i := range uint32(dacl.AceCount) {
		var ace *windows.ACCESS_ALLOWED_ACE
		if err := windows.GetAce(dacl, i, &ace); err != nil {
			return fmt.Errorf("key file %s: reading its ACL: %w", path, err)
		}
		if ace.Header.AceType != windows.ACCESS_ALLOWED_ACE_TYPE || ace.Mask&keyReadMask == 0 {
			continue
		}
		sid := (*windows.SID)(unsafe.Pointer(&ace.SidStart))
		for _, b := range broad {
			if sid.Equals(b) {
				return fmt.Errorf("key file %s is readable by %s: grant read access to the agent's account only", path, b.String())
			}
		}
	}
	return nil
}
