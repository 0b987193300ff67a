//go:build !linux

package agent

import (
	"runtime"

	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
)

// killProcess fails: killing a process safely needs a pidfd (Linux 5.3+), so that
// the process checked is the process signalled.
func (a *Agent) killProcess(cmd *remediationv1.ActionCommand) (string, error) {
	if _, err := checkKill(cmd); err != nil {
		return "", err
	}
	return "", failf("KILL_PROCESS is supported on Linux only (it needs a pidfd); this agent runs on %s: not killed", runtime.GOOS)
}
