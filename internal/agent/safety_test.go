package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	"github.com/condaccess/condaccess/internal/agent"
)

var (
	failed    = remediationv1.ActionResultStatus_ACTION_RESULT_STATUS_FAILED
	succeeded = remediationv1.ActionResultStatus_ACTION_RESULT_STATUS_SUCCEEDED
)

func quarantineCmd(id string, ev *commonv1.Evidence, approvedPath string) *remediationv1.ActionCommand {
	return &remediationv1.ActionCommand{ActionId: id, Type: remediationv1.ActionType_ACTION_TYPE_QUARANTINE_FILE, Target: ev,
		AdminApproved: approvedPath != "", ApprovedPath: approvedPath}
}

func restoreCmd(id, qid string) *remediationv1.ActionCommand {
	return &remediationv1.ActionCommand{ActionId: id, Type: remediationv1.ActionType_ACTION_TYPE_RESTORE_FILE, QuarantineId: qid, AdminApproved: true}
}

func wantResult(t *testing.T, r *remediationv1.ActionResult, st remediationv1.ActionResultStatus, msg string) {
	t.Helper()
	if r.GetStatus() != st || !strings.Contains(r.GetMessage(), msg) {
		t.Errorf("result %v %q, want %v with %q", r.GetStatus(), r.GetMessage(), st, msg)
	}
}

func wantFile(t *testing.T, path string, content []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil || string(got) != string(content) {
		t.Errorf("%s: %q, %v; want it in place with its content", path, got, err)
	}
}

// quarantined returns the quarantined data files.
func quarantined(t *testing.T, e *env) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(e.qdir, "*.quarantined"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestQuarantineRefusals: each attack on QUARANTINE_FILE is refused with a reason and
// leaves the file where it is; the rows that may run do.
func TestQuarantineRefusals(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("POSIX paths")
	}
	e := newEnv(t, nil, 0)
	content := agent.EICAR()
	outside := t.TempDir()
	inRoot := func(name string) string {
		p := filepath.Join(e.watch, name)
		writeFile(t, p, content)
		return p
	}
	out := func(name string) string {
		p := filepath.Join(outside, name)
		writeFile(t, p, content)
		return p
	}
	// A folder inside the root that is a symbolic link to the outside folder.
	if err := os.Symlink(outside, filepath.Join(e.watch, "link")); err != nil {
		t.Fatal(err)
	}
	viaLink := filepath.Join(e.watch, "link", "through-link.com")
	writeFile(t, filepath.Join(outside, "through-link.com"), content)
	// A symbolic link file inside the root pointing at an outside file.
	linkFile := filepath.Join(e.watch, "linkfile.com")
	if err := os.Symlink(out("target-of-linkfile.com"), linkFile); err != nil {
		t.Fatal(err)
	}
	noHash := func(p string) *commonv1.Evidence {
		return &commonv1.Evidence{Kind: &commonv1.Evidence_File{File: &commonv1.FileEvidence{Path: p}}}
	}
	tests := []struct {
		name     string
		ev       *commonv1.Evidence
		approved string // the administrator-approved path, "" for none
		keep     string // a file that must stay in place ("" when the row succeeds)
		st       remediationv1.ActionResultStatus
		msg      string
	}{
		{"own evidence under a root", fileEv(inRoot("a.com"), content), "", "", succeeded, "quarantined"},
		{"hash differs", fileEv(inRoot("b.com"), []byte("other")), "", filepath.Join(e.watch, "b.com"), failed, "the file changed"},
		{"hash differs even when approved", fileEv(inRoot("b2.com"), []byte("other")), filepath.Join(e.watch, "b2.com"), filepath.Join(e.watch, "b2.com"), failed, "the file changed"},
		{"no hash, not approved", noHash(inRoot("c.com")), "", filepath.Join(e.watch, "c.com"), failed, "without a SHA-256"},
		{"outside the roots", fileEv(out("d.com"), content), "", filepath.Join(outside, "d.com"), failed, "outside the agent's detection roots"},
		{"outside, another path approved", fileEv(out("e.com"), content), filepath.Join(outside, "other.com"), filepath.Join(outside, "e.com"), failed, "outside the agent's detection roots"},
		{"outside, approval without a path", fileEv(out("e2.com"), content), "", filepath.Join(outside, "e2.com"), failed, "no administrator approved"},
		{"outside, this exact path approved", fileEv(out("f.com"), content), filepath.Join(outside, "f.com"), "", succeeded, "quarantined"},
		{"no hash, this exact path approved", noHash(out("g.com")), filepath.Join(outside, "g.com"), "", succeeded, "quarantined"},
		{"through a symlinked folder in a root", fileEv(viaLink, content), "", filepath.Join(outside, "through-link.com"), failed, "symbolic link"},
		{"through a symlinked folder, approved", fileEv(viaLink, content), viaLink, filepath.Join(outside, "through-link.com"), failed, "symbolic link"},
		{"a symbolic link file", fileEv(linkFile, content), "", filepath.Join(outside, "target-of-linkfile.com"), failed, "not a regular file"},
		{"dot-dot out of a root", fileEv(e.watch+"/../"+filepath.Base(outside)+"/d.com", content), "", filepath.Join(outside, "d.com"), failed, "not a clean absolute path"},
		{"relative path", fileEv("a.com", content), "", "", failed, "not a clean absolute path"},
		{"system location /etc", fileEv("/etc/passwd", content), "/etc/passwd", "", failed, "system location"},
		{"system location /usr", fileEv("/usr/bin/env", content), "/usr/bin/env", "", failed, "system location"},
		{"system location /", fileEv("/", content), "/", "", failed, "system location"},
		{"system location /dev", fileEv("/dev/null", content), "/dev/null", "", failed, "system location"},
		{"system location /lib64", fileEv("/lib64/ld-linux-x86-64.so.2", content), "/lib64/ld-linux-x86-64.so.2", "", failed, "system location"},
		{"system location /etc itself", fileEv("/etc", content), "/etc", "", failed, "system location"},
		{"not a system location: /etcetera", fileEv("/etcetera/x", content), "/etcetera/x", "", failed, "does not exist"},
		{"the quarantine folder", fileEv(filepath.Join(e.qdir, agent.StateFile), content), filepath.Join(e.qdir, agent.StateFile), "", failed, "quarantine folder"},
		{"not a file", fileEv(e.watch+"/link", content), e.watch + "/link", "", failed, "not a regular file"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(quarantined(t, e))
			r := e.agent.Execute(context.Background(), quarantineCmd("q-"+string(rune('a'+i)), tt.ev, tt.approved))
			wantResult(t, r, tt.st, tt.msg)
			if tt.keep != "" {
				wantFile(t, tt.keep, content)
			}
			want := before
			if tt.st == succeeded {
				want++
				if _, err := os.Lstat(tt.ev.GetFile().GetPath()); !os.IsNotExist(err) {
					t.Errorf("quarantined file still at its path: %v", err)
				}
			}
			if got := len(quarantined(t, e)); got != want {
				t.Errorf("%d files in quarantine, want %d", got, want)
			}
		})
	}
}

// TestRestoreRefusals: a restore goes only into the folder the file was taken from,
// reached without symbolic links; otherwise the file stays in quarantine.
func TestRestoreRefusals(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("POSIX symbolic links")
	}
	content := agent.EICAR()
	elsewhere := t.TempDir()
	tests := []struct {
		name   string
		attack func(t *testing.T, dir string) // changes the original folder after the quarantine
		msg    string
		ok     bool
	}{
		{"unchanged folder", func(*testing.T, string) {}, "restored", true},
		{"parent replaced by a symbolic link", func(t *testing.T, dir string) {
			if err := os.Rename(dir, dir+".moved"); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(elsewhere, dir); err != nil {
				t.Fatal(err)
			}
		}, "symbolic link", false},
		{"grandparent replaced by a symbolic link", func(t *testing.T, dir string) {
			gp := filepath.Dir(dir)
			if err := os.Rename(gp, gp+".moved"); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(elsewhere, "gp", filepath.Base(dir)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join(elsewhere, "gp"), gp); err != nil {
				t.Fatal(err)
			}
		}, "symbolic link", false},
		{"parent replaced by another folder (other inode)", func(t *testing.T, dir string) {
			if err := os.Rename(dir, dir+".moved"); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}, "was replaced", false},
		{"parent removed", func(t *testing.T, dir string) {
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
		}, "does not exist", false},
		{"a file took its place", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "evil.com"), []byte("new"))
		}, "already exists", false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil, 0)
			dir := filepath.Join(e.watch, "gp", "sub")
			path := filepath.Join(dir, "evil.com")
			writeFile(t, path, content)
			q := e.agent.Execute(context.Background(), quarantineCmd("act-q", fileEv(path, content), ""))
			wantResult(t, q, succeeded, "quarantined")
			tt.attack(t, dir)
			r := e.agent.Execute(context.Background(), restoreCmd("act-r"+string(rune('a'+i)), q.GetQuarantineId()))
			data := filepath.Join(e.qdir, q.GetQuarantineId()+".quarantined")
			if tt.ok {
				wantResult(t, r, succeeded, tt.msg)
				wantFile(t, path, content)
				return
			}
			wantResult(t, r, failed, tt.msg)
			if !strings.Contains(r.GetMessage(), "stays in quarantine") {
				t.Errorf("message %q does not say the file stays in quarantine", r.GetMessage())
			}
			wantFile(t, data, content)
			if _, err := os.Stat(filepath.Join(e.qdir, q.GetQuarantineId()+".json")); err != nil {
				t.Errorf("quarantine metadata gone: %v", err)
			}
			if _, err := os.Lstat(filepath.Join(elsewhere, "evil.com")); !os.IsNotExist(err) {
				t.Errorf("a file was written through the symbolic link: %v", err)
			}
			if _, err := os.Lstat(filepath.Join(elsewhere, "gp", "sub", "evil.com")); !os.IsNotExist(err) {
				t.Errorf("a file was written through the symbolic link: %v", err)
			}
		})
	}
}
