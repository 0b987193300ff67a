//go:build linux

package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
)

// pfKthread is the kernel thread flag in /proc/<pid>/stat's flags field.
const pfKthread = 0x00200000

// killProcess kills a process through a pidfd: it opens the pidfd first, so that the
// checks and the signal concern one process even if its pid is reused; checks that it
// is not a kernel thread and that its executable (/proc/<pid>/exe) matches the
// evidence's SHA-256 or path (or, with an administrator's approval, its name); checks
// the process is still the one the pidfd holds; then signals it through the pidfd and
// waits for it to exit.
func (a *Agent) killProcess(cmd *remediationv1.ActionCommand) (string, error) {
	t, err := checkKill(cmd)
	if err != nil {
		return "", err
	}
	pidfd, err := unix.PidfdOpen(t.pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return "", failf("no process with pid %d", t.pid)
	}
	if err != nil {
		return "", failf("cannot open pid %d (pidfd_open): %v", t.pid, err)
	}
	defer unix.Close(pidfd)
	procDir := filepath.Join(a.procRoot(), strconv.Itoa(t.pid))
	stat, err := os.ReadFile(filepath.Join(procDir, "stat"))
	if err != nil {
		return "", failf("cannot inspect pid %d: %v", t.pid, err)
	}
	flags, err := statFlags(string(stat))
	if err != nil {
		return "", failf("cannot inspect pid %d: %v", t.pid, err)
	}
	if flags&pfKthread != 0 {
		return "", failf("refusing to kill pid %d: it is a kernel thread", t.pid)
	}
	exe, err := os.Readlink(filepath.Join(procDir, "exe"))
	if err != nil {
		return "", failf("cannot read the executable of pid %d (%v): not killed", t.pid, err)
	}
	exe = strings.TrimSuffix(exe, " (deleted)")
	commB, _ := os.ReadFile(filepath.Join(procDir, "comm"))
	comm := strings.TrimSpace(string(commB))
	if t.sha256 != "" {
		sum, _, _, err := hashFile(filepath.Join(procDir, "exe"))
		if err != nil {
			return "", failf("cannot hash the executable of pid %d: %v", t.pid, err)
		}
		if sum != t.sha256 {
			return "", failf("executable of pid %d (%s) has sha256 %s, not %s as in the evidence: not killed", t.pid, exe, sum, t.sha256)
		}
	}
	if t.name != "" && !matchName(t.name, comm, exe) {
		return "", failf("pid %d is %q (%s), not %q as in the evidence: not killed", t.pid, comm, exe, t.name)
	}
	// The pidfd still holds a live process: the pid was not reused while we read
	// /proc, so what we checked is what we signal.
	if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
		return "", failf("pid %d exited while it was checked: not killed", t.pid)
	}
	if err := unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0); err != nil {
		return "", failf("cannot kill pid %d: %v", t.pid, err)
	}
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 5000)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return "", failf("sent SIGKILL to pid %d but cannot wait for it: %v", t.pid, err)
		}
		if n == 0 {
			return "", failf("sent SIGKILL to pid %d but it is still running after 5s", t.pid)
		}
		return fmt.Sprintf("killed pid %d (%s, %s)", t.pid, comm, exe), nil
	}
}

// statFlags returns the flags field (the 9th) of a /proc/<pid>/stat line.
func statFlags(stat string) (uint64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(stat[i+1:])
	// After "(comm)": state(3) ppid(4) pgrp(5) session(6) tty_nr(7) tpgid(8) flags(9).
	if len(f) < 7 {
		return 0, errors.New("malformed stat")
	}
	return strconv.ParseUint(f[6], 10, 64)
}
