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

// FuzzAgentCommands drives the agent's command handling (quarantine, restore, kill)
// with arbitrary commands against a temporary detection root. Every path the fuzzer
// makes lies under the temporary folder (".." elements are textual and refused) and
// every pid is one the agent must refuse, so that fuzzing never touches the machine.
// Invariants: no panic; a result with a message; a file outside the root moves only
// when an administrator approved its exact path; a quarantine succeeds only for a file
// under the root or at an approved path; a refused restore leaves the quarantined file
// in quarantine.
//
// Inputs: typ picks QUARANTINE_FILE, RESTORE_FILE or KILL_PROCESS; name is the file
// (or process) name; where bit 0 puts the file outside the root, bit 1 gives the
// evidence the right hash, bit 2 no hash; approval 1 approves the exact path, 2
// another path; qid is a restore's quarantine id ("" restores the file just
// quarantined); pid picks a pid from a fixed list of refused ones.
func FuzzAgentCommands(f *testing.F) {
	if runtime.GOOS == "windows" {
		f.Skip("POSIX paths")
	}
	f.Add(uint8(0), "a.com", uint8(2), uint8(0), "", uint8(0))
	f.Fuzz(func(t *testing.T, typ uint8, name string, where, approval uint8, qid string, pid uint8) {
		base := t.TempDir()
		root, outside, qdir := filepath.Join(base, "root"), filepath.Join(base, "outside"), filepath.Join(base, "q")
		content := agent.EICAR()
		for _, p := range []string{filepath.Join(root, "a.com"), filepath.Join(root, "sub", "b.com"), filepath.Join(outside, "a.com")} {
			writeFile(t, p, content)
		}
		a, err := agent.New(agent.Config{DeviceID: "dev-f", WatchDirs: []string{root}, QuarantineDir: qdir})
		if err != nil {
			t.Fatal(err)
		}
		dir := root
		if where&1 != 0 {
			dir = outside
		}
		path := dir + "/" + name // textual: ".." stays and must be refused
		file := &commonv1.FileEvidence{Path: path}
		switch {
		case where&4 != 0:
		case where&2 != 0:
			file.Sha256 = hexSHA(content)
		default:
			file.Sha256 = hexSHA([]byte(name))
		}
		cmd := &remediationv1.ActionCommand{ActionId: "act-1", Target: &commonv1.Evidence{Kind: &commonv1.Evidence_File{File: file}}}
		switch approval % 3 {
		case 1:
			cmd.AdminApproved, cmd.ApprovedPath = true, path
		case 2:
			cmd.AdminApproved, cmd.ApprovedPath = true, filepath.Join(outside, "a.com")
		}
		ctx := context.Background()
		switch typ % 3 {
		case 0:
			cmd.Type = remediationv1.ActionType_ACTION_TYPE_QUARANTINE_FILE
		case 1:
			cmd.Type = remediationv1.ActionType_ACTION_TYPE_RESTORE_FILE
			cmd.QuarantineId = qid
			if qid == "" {
				q := a.Execute(ctx, &remediationv1.ActionCommand{ActionId: "act-0", Type: remediationv1.ActionType_ACTION_TYPE_QUARANTINE_FILE,
					Target: &commonv1.Evidence{Kind: &commonv1.Evidence_File{File: &commonv1.FileEvidence{Path: filepath.Join(root, "a.com"), Sha256: hexSHA(content)}}}})
				if q.GetStatus() != succeeded {
					t.Fatalf("quarantine of the root's file: %v", q)
				}
				cmd.QuarantineId = q.GetQuarantineId()
				// Disturb the original folder as name says.
				switch {
				case strings.HasPrefix(name, "link"):
					os.Rename(root, root+".moved")
					os.Symlink(outside, root)
				case strings.HasPrefix(name, "new"):
					os.Rename(root, root+".moved")
					os.Mkdir(root, 0o755)
				}
			}
		case 2:
			cmd.Type = remediationv1.ActionType_ACTION_TYPE_KILL_PROCESS
			pids := []int64{-1, 0, 1, int64(os.Getpid()), 1 << 30, 1 << 40}
			cmd.Target = &commonv1.Evidence{Kind: &commonv1.Evidence_Process{Process: &commonv1.ProcessEvidence{Pid: pids[int(pid)%len(pids)], Name: name, ImageSha256: file.Sha256}}}
		}
		r := a.Execute(ctx, cmd)
		if r.GetMessage() == "" || (r.GetStatus() != succeeded && r.GetStatus() != failed) {
			t.Fatalf("result %v", r)
		}
		outsideMoved := false
		if got, err := os.ReadFile(filepath.Join(outside, "a.com")); err != nil || string(got) != string(content) {
			outsideMoved = true
		}
		switch cmd.GetType() {
		case remediationv1.ActionType_ACTION_TYPE_QUARANTINE_FILE:
			approvedHere := cmd.GetAdminApproved() && cmd.GetApprovedPath() == path
			if outsideMoved && !approvedHere {
				t.Fatalf("a file outside the root moved without approval of its path: %v", r)
			}
			if r.GetStatus() == succeeded && !approvedHere && !strings.HasPrefix(path, root+"/") {
				t.Fatalf("quarantined %q outside the root without approval: %v", path, r)
			}
			if r.GetStatus() == succeeded && file.GetSha256() != hexSHA(content) && !approvedHere {
				t.Fatalf("quarantined %q whose hash differs: %v", path, r)
			}
		case remediationv1.ActionType_ACTION_TYPE_RESTORE_FILE:
			if outsideMoved {
				t.Fatalf("a restore changed a file outside the root: %v", r)
			}
			if r.GetStatus() == failed && qid == "" {
				if _, err := os.Stat(filepath.Join(qdir, cmd.GetQuarantineId()+".quarantined")); err != nil {
					t.Fatalf("a refused restore lost the quarantined file: %v (%v)", err, r)
				}
			}
			if r.GetStatus() == succeeded && qid == "" && (strings.HasPrefix(name, "link") || strings.HasPrefix(name, "new")) {
				t.Fatalf("restored into a replaced folder: %v", r)
			}
		case remediationv1.ActionType_ACTION_TYPE_KILL_PROCESS:
			if r.GetStatus() == succeeded {
				t.Fatalf("killed a pid that must be refused: %v", r)
			}
		}
	})
}
