package agent

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// unixSystemLocations are never quarantined into or restored to, nor anything under
// them ("/" itself only: everything is under it). Besides the list: the
// library folders of systems without a merged /usr, and macOS's resolved /etc and its
// system volume (the agent works on paths with symbolic links resolved).
var unixSystemLocations = []string{"/etc", "/bin", "/sbin", "/usr", "/boot", "/proc", "/sys", "/dev",
	"/lib", "/lib32", "/lib64", "/libx32", "/private/etc", "/System"}

// systemLocation reports whether path (clean, absolute) is a system location the agent
// always refuses to touch: "/", /etc, /bin, /sbin, /usr, /boot, /proc, /sys, /dev and
// anything under them; on Windows a drive root and C:\Windows (and %SystemRoot%).
func systemLocation(path string) bool {
	if runtime.GOOS == "windows" {
		vol := filepath.VolumeName(path)
		if vol == "" || path == vol || path == vol+`\` {
			return true
		}
		locs := []string{`C:\Windows`}
		if sr := os.Getenv("SystemRoot"); sr != "" {
			locs = append(locs, filepath.Clean(sr))
		}
		for _, l := range locs {
			if strings.EqualFold(path, l) || hasPathPrefixFold(path, l+`\`) {
				return true
			}
		}
		return false
	}
	if path == "/" || !strings.HasPrefix(path, "/") {
		return true
	}
	for _, l := range unixSystemLocations {
		if path == l || strings.HasPrefix(path, l+"/") {
			return true
		}
	}
	return false
}

func hasPathPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// underDir reports whether path lies strictly under dir (both clean and absolute;
// case-insensitively on Windows).
func underDir(path, dir string) bool {
	sep := string(filepath.Separator)
	prefix := strings.TrimSuffix(dir, sep) + sep
	if runtime.GOOS == "windows" {
		return len(path) > len(prefix) && hasPathPrefixFold(path, prefix)
	}
	return len(path) > len(prefix) && strings.HasPrefix(path, prefix)
}

// inRoots reports whether path lies under one of the agent's detection roots.
func (a *Agent) inRoots(path string) bool {
	for _, r := range a.cfg.WatchDirs {
		if underDir(path, r) {
			return true
		}
	}
	return false
}

// cleanTarget checks that p is an absolute path without "." or ".." elements and
// returns it cleaned of a trailing separator.
func cleanTarget(p string) (string, bool) {
	if p == "" || !filepath.IsAbs(p) || strings.ContainsRune(p, 0) {
		return "", false
	}
	c := filepath.Clean(p)
	if c != strings.TrimSuffix(p, string(filepath.Separator)) && c != p {
		return "", false // had "." or ".." elements or doubled separators
	}
	return c, true
}
