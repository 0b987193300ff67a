package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
)

// Sidecar is the metadata kept next to a quarantined file, so that it can be restored.
type Sidecar struct {
	QuarantineID   string      `json:"quarantine_id"`
	OriginalPath   string      `json:"original_path"`
	SHA256         string      `json:"sha256"`
	Size           int64       `json:"size"`
	Mode           os.FileMode `json:"mode"`
	QuarantineTime time.Time   `json:"quarantine_time"`
	ActionID       string      `json:"action_id"`
}

var quarantineIDRe = regexp.MustCompile(`^q-[0-9a-f]{24}$`)

func quarantineID(actionID string) string {
	s := sha256.Sum256([]byte(actionID))
	return "q-" + hex.EncodeToString(s[:12])
}

func (a *Agent) quarantinePaths(qid string) (data, sidecar string) {
	return filepath.Join(a.cfg.QuarantineDir, qid+".quarantined"), filepath.Join(a.cfg.QuarantineDir, qid+".json")
}

// failure is an action that could not be performed; its message says why.
type failure struct{ msg string }

func (f failure) Error() string { return f.msg }

func failf(format string, args ...any) error { return failure{fmt.Sprintf(format, args...)} }

// quarantine moves the target file into the quarantine folder after checking that its
// SHA-256 still matches the evidence. It is idempotent per action id: a quarantine that
// was done before a crash is found again by its id.
func (a *Agent) quarantine(actionID string, target *commonv1.Evidence) (qid, msg string, err error) {
	f := target.GetFile()
	if f == nil || f.GetPath() == "" {
		return "", "", failf("QUARANTINE_FILE needs a file target with a path")
	}
	path := filepath.Clean(f.GetPath())
	if !filepath.IsAbs(path) {
		return "", "", failf("file path %q is not absolute", f.GetPath())
	}
	qid = quarantineID(actionID)
	dataPath, sidecarPath := a.quarantinePaths(qid)
	if sc, err := readSidecar(sidecarPath); err == nil && sc.OriginalPath == path {
		if _, err := os.Stat(dataPath); err == nil {
			if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
				return qid, fmt.Sprintf("%s is in quarantine as %s", path, qid), nil
			}
		}
	}
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", "", failf("file %s not found: nothing quarantined", path)
	}
	if err != nil {
		return "", "", failf("cannot inspect %s: %v", path, err)
	}
	if !fi.Mode().IsRegular() {
		return "", "", failf("%s is not a regular file", path)
	}
	sum, size, _, err := hashFile(path)
	if err != nil {
		return "", "", failf("cannot read %s: %v", path, err)
	}
	if want := strings.ToLower(f.GetSha256()); want != "" && want != sum {
		return "", "", failf("sha256 of %s is %s, not %s as in the evidence: the file changed, not quarantined", path, sum, want)
	}
	sc := Sidecar{QuarantineID: qid, OriginalPath: path, SHA256: sum, Size: size, Mode: fi.Mode().Perm(), QuarantineTime: a.now(), ActionID: actionID}
	data, _ := json.MarshalIndent(sc, "", "  ")
	if err := writeFileAtomic(sidecarPath, data, 0o600); err != nil {
		return "", "", failf("cannot write quarantine metadata: %v", err)
	}
	if err := moveFile(path, dataPath); err != nil {
		os.Remove(sidecarPath)
		return "", "", failf("cannot move %s into quarantine: %v", path, err)
	}
	if err := os.Chmod(dataPath, 0o400); err != nil {
		a.log.Warn("chmod quarantined file", "path", dataPath, "err", err)
	}
	a.forgetFile(path)
	return qid, fmt.Sprintf("quarantined %s (sha256 %s) as %s", path, sum, qid), nil
}

// restore moves a quarantined file back to its original path and trusts it from then
// on (an administrator undid the quarantine).
func (a *Agent) restore(qid string) (string, error) {
	if !quarantineIDRe.MatchString(qid) {
		return "", failf("quarantine id %q is not one this agent issued", qid)
	}
	dataPath, sidecarPath := a.quarantinePaths(qid)
	sc, err := readSidecar(sidecarPath)
	if errors.Is(err, os.ErrNotExist) {
		return "", failf("no quarantined file %s", qid)
	}
	if err != nil {
		return "", failf("cannot read quarantine metadata of %s: %v", qid, err)
	}
	if _, err := os.Stat(dataPath); errors.Is(err, os.ErrNotExist) {
		// Restored before a crash?
		if sum, _, _, herr := hashFile(sc.OriginalPath); herr == nil && sum == sc.SHA256 {
			os.Remove(sidecarPath)
			a.trust(sc.OriginalPath, sc.SHA256)
			return fmt.Sprintf("restored %s", sc.OriginalPath), nil
		}
		return "", failf("quarantined file %s is missing", qid)
	}
	if _, err := os.Lstat(sc.OriginalPath); err == nil {
		return "", failf("a file already exists at %s: not overwritten", sc.OriginalPath)
	}
	sum, _, _, err := hashFile(dataPath)
	if err != nil {
		return "", failf("cannot read quarantined file %s: %v", qid, err)
	}
	if sum != sc.SHA256 {
		return "", failf("quarantined file %s was altered (sha256 %s, recorded %s): not restored", qid, sum, sc.SHA256)
	}
	if err := os.MkdirAll(filepath.Dir(sc.OriginalPath), 0o755); err != nil {
		return "", failf("cannot recreate %s: %v", filepath.Dir(sc.OriginalPath), err)
	}
	a.trust(sc.OriginalPath, sc.SHA256) // before the move, so the watcher does not re-detect it
	if err := moveFile(dataPath, sc.OriginalPath); err != nil {
		return "", failf("cannot move %s back to %s: %v", qid, sc.OriginalPath, err)
	}
	mode := sc.Mode
	if mode == 0 {
		mode = 0o644
	}
	if err := os.Chmod(sc.OriginalPath, mode); err != nil {
		a.log.Warn("chmod restored file", "path", sc.OriginalPath, "err", err)
	}
	os.Remove(sidecarPath)
	return fmt.Sprintf("restored %s from quarantine %s", sc.OriginalPath, qid), nil
}

func readSidecar(path string) (*Sidecar, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var sc Sidecar
	if err := json.Unmarshal(data, &sc); err != nil {
		return nil, err
	}
	return &sc, nil
}

// moveFile renames src to dst, copying across file systems.
func moveFile(src, dst string) error {
	err := os.Rename(src, dst)
	if err == nil {
		return nil
	}
	var le *os.LinkError
	if !errors.As(err, &le) {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".partial"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Remove(src)
}

// killProcess kills a process only if its name (or executable, and its SHA-256 when
// the evidence has one) matches the evidence.
func (a *Agent) killProcess(target *commonv1.Evidence) (string, error) {
	p := target.GetProcess()
	if p == nil || p.GetPid() <= 0 {
		return "", failf("KILL_PROCESS needs a process target with a pid")
	}
	if runtime.GOOS != "linux" {
		return "", failf("KILL_PROCESS is supported on Linux only (the agent checks the process in /proc)")
	}
	pid := int(p.GetPid())
	if pid == os.Getpid() || pid == 1 {
		return "", failf("refusing to kill pid %d", pid)
	}
	procDir := filepath.Join(a.procRoot(), fmt.Sprint(pid))
	commB, err := os.ReadFile(filepath.Join(procDir, "comm"))
	if errors.Is(err, os.ErrNotExist) {
		return "", failf("no process with pid %d", pid)
	}
	if err != nil {
		return "", failf("cannot inspect pid %d: %v", pid, err)
	}
	comm := strings.TrimSpace(string(commB))
	exe, _ := os.Readlink(filepath.Join(procDir, "exe"))
	want := p.GetName()
	nameOK := want != "" && (want == comm || want == filepath.Base(exe) || (len(comm) == 15 && strings.HasPrefix(filepath.Base(want), comm)))
	if !nameOK {
		return "", failf("pid %d is %q (%s), not %q as in the evidence: not killed", pid, comm, exe, want)
	}
	if ws := strings.ToLower(p.GetImageSha256()); ws != "" {
		sum, _, _, err := hashFile(filepath.Join(procDir, "exe"))
		if err != nil {
			return "", failf("cannot hash the executable of pid %d: %v", pid, err)
		}
		if sum != ws {
			return "", failf("executable of pid %d has sha256 %s, not %s as in the evidence: not killed", pid, sum, ws)
		}
	}
	proc, err := os.FindProcess(pid)
	if err != nil {
		return "", failf("cannot find pid %d: %v", pid, err)
	}
	if err := proc.Kill(); err != nil {
		return "", failf("cannot kill pid %d: %v", pid, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if gone(procDir) {
			return fmt.Sprintf("killed pid %d (%s)", pid, comm), nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "", failf("sent SIGKILL to pid %d but it is still running after 5s", pid)
}

// gone reports whether a /proc/<pid> process has exited (or is a zombie).
func gone(procDir string) bool {
	stat, err := os.ReadFile(filepath.Join(procDir, "stat"))
	if err != nil {
		return true
	}
	s := string(stat)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] == 'Z' || s[i+2] == 'X'
	}
	return false
}
