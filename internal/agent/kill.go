package agent

import (
	"math"
	"os"
	"path/filepath"
	"strings"

	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
)

// killTarget is a checked KILL_PROCESS command.
type killTarget struct {
	pid      int
	name     string // the evidence's name: an executable name or an absolute path
	sha256   string // the evidence's image SHA-256, lowercase; "" when unknown
	approved bool   // an administrator approved or submitted the action
}

// checkKill validates a KILL_PROCESS command before any process is looked at: never pid
// 1 or below, never the agent itself, and a process named by nothing but a name only
// with an administrator's approval.
func checkKill(cmd *remediationv1.ActionCommand) (killTarget, error) {
	p := cmd.GetTarget().GetProcess()
	if p == nil {
		return killTarget{}, failf("KILL_PROCESS needs a process target with a pid")
	}
	t := killTarget{pid: int(p.GetPid()), name: p.GetName(), sha256: strings.ToLower(p.GetImageSha256()), approved: cmd.GetAdminApproved()}
	switch {
	case p.GetPid() <= 0 || p.GetPid() > math.MaxInt32:
		return killTarget{}, failf("pid %d is not a process id: not killed", p.GetPid())
	case t.pid == 1:
		return killTarget{}, failf("refusing to kill pid 1 (init)")
	case t.pid == os.Getpid():
		return killTarget{}, failf("refusing to kill pid %d: it is the agent itself", t.pid)
	case t.sha256 == "" && t.name == "":
		return killTarget{}, failf("the evidence names pid %d by neither executable hash, path nor name: not killed", t.pid)
	case t.sha256 == "" && !filepath.IsAbs(t.name) && !t.approved:
		return killTarget{}, failf("pid %d is matched only by its name %q: killing it needs an administrator's approval", t.pid, t.name)
	}
	return t, nil
}

// matchName reports whether a process whose comm is comm and executable exe matches
// the evidence's name (an absolute path must equal the executable).
func matchName(want, comm, exe string) bool {
	if filepath.IsAbs(want) {
		return want == exe
	}
	base := filepath.Base(exe)
	return want != "" && (want == comm || want == base || (len(comm) == 15 && strings.HasPrefix(want, comm)))
}
