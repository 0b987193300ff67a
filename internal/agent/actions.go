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
	"strings"
	"time"

	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
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
	// Parent identifies the folder the file was taken from (device and inode): a
	// restore puts the file back only into that very folder.
	Parent *fileID `json:"parent,omitempty"`
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

// describeOpenErr explains why a folder could not be opened safely.
func describeOpenErr(dir string, err error) string {
	switch {
	case errors.Is(err, errSymlink):
		return fmt.Sprintf("%s is reached through a symbolic link", dir)
	case errors.Is(err, os.ErrNotExist):
		return fmt.Sprintf("%s does not exist", dir)
	}
	return fmt.Sprintf("cannot open %s: %v", dir, err)
}

// quarantine moves the target file into the quarantine folder. It refuses a system
// location; a file outside the detection roots unless an administrator approved this
// exact path; a file whose SHA-256 differs from the evidence (or, without an
// administrator's approval, evidence without a SHA-256); and any path through a
// symbolic link. It is idempotent per action id: a quarantine done before a crash is
// found again by its id.
func (a *Agent) quarantine(cmd *remediationv1.ActionCommand) (qid, msg string, err error) {
	f := cmd.GetTarget().GetFile()
	if f == nil || f.GetPath() == "" {
		return "", "", failf("QUARANTINE_FILE needs a file target with a path")
	}
	path, ok := cleanTarget(f.GetPath())
	if !ok {
		return "", "", failf("file path %q is not a clean absolute path: not quarantined", f.GetPath())
	}
	if systemLocation(path) {
		return "", "", failf("%s is in a system location: the agent never quarantines there", path)
	}
	if a.inQuarantine(path) {
		return "", "", failf("%s is in the agent's quarantine folder: not quarantined", path)
	}
	approved := cmd.GetAdminApproved() && cmd.GetApprovedPath() == f.GetPath()
	if !a.inRoots(path) && !approved {
		return "", "", failf("%s is outside the agent's detection roots and no administrator approved this exact path: not quarantined", path)
	}
	want := strings.ToLower(f.GetSha256())
	if want == "" && !approved {
		return "", "", failf("the evidence names %s without a SHA-256 and no administrator approved it: not quarantined", path)
	}
	qid = quarantineID(cmd.GetActionId())
	dataPath, sidecarPath := a.quarantinePaths(qid)
	if sc, err := readSidecar(sidecarPath); err == nil && sc.OriginalPath == path {
		if _, err := os.Stat(dataPath); err == nil {
			if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
				return qid, fmt.Sprintf("%s is in quarantine as %s", path, qid), nil
			}
		}
	}
	parent, err := openDir(filepath.Dir(path))
	if err != nil {
		return "", "", failf("%s: not quarantined", describeOpenErr(filepath.Dir(path), err))
	}
	defer parent.Close()
	base := filepath.Base(path)
	st, err := parent.lstat(base)
	if errors.Is(err, os.ErrNotExist) {
		return "", "", failf("file %s not found: nothing quarantined", path)
	}
	if err != nil {
		return "", "", failf("cannot inspect %s: %v", path, err)
	}
	if !st.regular {
		return "", "", failf("%s is not a regular file: not quarantined", path)
	}
	in, err := parent.open(base)
	if err != nil {
		return "", "", failf("cannot open %s: %v", path, err)
	}
	defer in.Close()
	if id, err := fileIDOf(in); err != nil || id != st.id {
		return "", "", failf("%s changed while it was inspected: not quarantined", path)
	}
	sum, err := hashOpen(in)
	if err != nil {
		return "", "", failf("cannot read %s: %v", path, err)
	}
	if want != "" && want != sum {
		return "", "", failf("sha256 of %s is %s, not %s as in the evidence: the file changed, not quarantined", path, sum, want)
	}
	pid, err := parent.id()
	if err != nil {
		return "", "", failf("cannot identify %s: %v", filepath.Dir(path), err)
	}
	size, _ := in.Seek(0, io.SeekEnd)
	sc := Sidecar{QuarantineID: qid, OriginalPath: path, SHA256: sum, Size: size, Mode: st.mode, QuarantineTime: a.now(), ActionID: cmd.GetActionId(), Parent: &pid}
	data, _ := json.MarshalIndent(sc, "", "  ")
	if err := writeFileAtomic(sidecarPath, data, 0o600); err != nil {
		return "", "", failf("cannot write quarantine metadata: %v", err)
	}
	qdir, err := openDir(a.cfg.QuarantineDir)
	if err != nil {
		os.Remove(sidecarPath)
		return "", "", failf("quarantine folder: %s", describeOpenErr(a.cfg.QuarantineDir, err))
	}
	defer qdir.Close()
	if err := a.moveOut(parent, base, in, st.id, qdir, filepath.Base(dataPath)); err != nil {
		os.Remove(sidecarPath)
		return "", "", failf("cannot move %s into quarantine: %v", path, err)
	}
	if err := os.Chmod(dataPath, 0o400); err != nil {
		a.log.Warn("chmod quarantined file", "path", dataPath, "err", err)
	}
	a.forgetFile(path)
	return qid, fmt.Sprintf("quarantined %s (sha256 %s) as %s", path, sum, qid), nil
}

// moveOut moves name (open as in, identified by id) from parent to toName in to; it
// checks after a rename that the moved file is the one that was hashed, and copies
// across file systems.
func (a *Agent) moveOut(parent *dirHandle, name string, in *os.File, id fileID, to *dirHandle, toName string) error {
	err := parent.rename(name, to, toName, true)
	switch {
	case err == nil:
		if st, err := to.lstat(toName); err != nil || st.id != id {
			// Swapped between the hash and the rename: put it back, refuse.
			_ = to.rename(toName, parent, name, true)
			return errors.New("the file was replaced while it was being quarantined")
		}
		return nil
	case errCrossDevice(err):
		if err := copyInto(in, to, toName); err != nil {
			return err
		}
		if st, err := parent.lstat(name); err != nil || st.id != id {
			to.remove(toName)
			return errors.New("the file was replaced while it was being quarantined")
		}
		return parent.remove(name)
	}
	return err
}

// restore moves a quarantined file back to its original path and trusts it from then
// on (an administrator undid the quarantine). The original folder is opened without
// following symbolic links and must be the very folder the file was taken from
// (device and inode); otherwise the file stays in quarantine.
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
	path, ok := cleanTarget(sc.OriginalPath)
	if !ok || systemLocation(path) {
		return "", failf("quarantine %s names %q, not a path the agent restores to: the file stays in quarantine", qid, sc.OriginalPath)
	}
	if sc.Parent == nil {
		return "", failf("quarantine %s has no record of its original folder (quarantined by an older agent): the file stays in quarantine; restore it by hand", qid)
	}
	dir, base := filepath.Dir(path), filepath.Base(path)
	parent, err := openDir(dir)
	if err != nil {
		return "", failf("%s: not restored, the file stays in quarantine as %s", describeOpenErr(dir, err), qid)
	}
	defer parent.Close()
	if id, err := parent.id(); err != nil || id != *sc.Parent {
		return "", failf("%s is not the folder %s was quarantined from (it was replaced): not restored, the file stays in quarantine as %s", dir, path, qid)
	}
	if _, err := os.Stat(dataPath); errors.Is(err, os.ErrNotExist) {
		// Restored before a crash?
		if in, err := parent.open(base); err == nil {
			sum, herr := hashOpen(in)
			in.Close()
			if herr == nil && sum == sc.SHA256 {
				os.Remove(sidecarPath)
				a.trust(path, sc.SHA256)
				return fmt.Sprintf("restored %s", path), nil
			}
		}
		return "", failf("quarantined file %s is missing", qid)
	}
	if _, err := parent.lstat(base); err == nil {
		return "", failf("a file already exists at %s: not overwritten, the file stays in quarantine as %s", path, qid)
	}
	qdir, err := openDir(a.cfg.QuarantineDir)
	if err != nil {
		return "", failf("quarantine folder: %s", describeOpenErr(a.cfg.QuarantineDir, err))
	}
	defer qdir.Close()
	qname := filepath.Base(dataPath)
	in, err := qdir.open(qname)
	if err != nil {
		return "", failf("cannot read quarantined file %s: %v", qid, err)
	}
	defer in.Close()
	qst, err := qdir.lstat(qname)
	if err != nil {
		return "", failf("cannot read quarantined file %s: %v", qid, err)
	}
	sum, err := hashOpen(in)
	if err != nil {
		return "", failf("cannot read quarantined file %s: %v", qid, err)
	}
	if sum != sc.SHA256 {
		return "", failf("quarantined file %s was altered (sha256 %s, recorded %s): not restored", qid, sum, sc.SHA256)
	}
	a.trust(path, sc.SHA256) // before the move, so the watcher does not re-detect it
	if err := a.moveOut(qdir, qname, in, qst.id, parent, base); err != nil {
		if errors.Is(err, errExist) {
			return "", failf("a file already exists at %s: not overwritten, the file stays in quarantine as %s", path, qid)
		}
		return "", failf("cannot move %s back to %s: %v", qid, path, err)
	}
	mode := sc.Mode
	if mode == 0 {
		mode = 0o644
	}
	if out, err := parent.open(base); err == nil {
		if err := chmodOpen(out, mode); err != nil {
			a.log.Warn("chmod restored file", "path", path, "err", err)
		}
		out.Close()
	}
	os.Remove(sidecarPath)
	return fmt.Sprintf("restored %s from quarantine %s", path, qid), nil
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
