//go:build linux

package agent_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
)

// child starts `sleep 60` and returns it with a channel closed when it exits.
func child(t *testing.T) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep binary:", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	return cmd, done
}

func exeOf(t *testing.T, pid int) (path, sum string) {
	t.Helper()
	link := filepath.Join("/proc", strconv.Itoa(pid), "exe")
	path, err := os.Readlink(link)
	if err != nil {
		t.Skip("cannot read /proc/<pid>/exe:", err)
	}
	f, err := os.Open(link)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return path, hex.EncodeToString(h.Sum(nil))
}

func killCmd(id string, p *commonv1.ProcessEvidence, approved bool) *remediationv1.ActionCommand {
	return &remediationv1.ActionCommand{ActionId: id, Type: remediationv1.ActionType_ACTION_TYPE_KILL_PROCESS,
		Target: &commonv1.Evidence{Kind: &commonv1.Evidence_Process{Process: p}}, AdminApproved: approved}
}

// kernelThread returns the pid of a visible kernel thread, or 0.
func kernelThread() int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 6 {
			if flags, err := strconv.ParseUint(f[6], 10, 64); err == nil && flags&0x00200000 != 0 {
				return pid
			}
		}
	}
	return 0
}

// TestKillThroughPidfd: KILL_PROCESS kills a process whose executable matches the
// evidence (hash or path, or name with an administrator's approval) through a pidfd,
// and refuses everything else without touching the process.
func TestKillThroughPidfd(t *testing.T) {
	e := newEnv(t, nil, 0)
	ctx := context.Background()
	probe, _ := child(t)
	exe, sum := exeOf(t, probe.Process.Pid)
	const otherSHA = "0000000000000000000000000000000000000000000000000000000000000000"
	tests := []struct {
		name     string
		proc     func(pid int) *commonv1.ProcessEvidence
		approved bool
		ok       bool
		msg      string
	}{
		{"executable hash matches", func(pid int) *commonv1.ProcessEvidence {
			return &commonv1.ProcessEvidence{Pid: int64(pid), ImageSha256: sum}
		}, false, true, "killed"},
		{"executable path matches", func(pid int) *commonv1.ProcessEvidence {
			return &commonv1.ProcessEvidence{Pid: int64(pid), Name: exe}
		}, false, true, "killed"},
		{"name only, approved by an administrator", func(pid int) *commonv1.ProcessEvidence {
			return &commonv1.ProcessEvidence{Pid: int64(pid), Name: "sleep"}
		}, true, true, "killed"},
		{"name only, not approved", func(pid int) *commonv1.ProcessEvidence {
			return &commonv1.ProcessEvidence{Pid: int64(pid), Name: "sleep"}
		}, false, false, "needs an administrator's approval"},
		{"executable hash differs", func(pid int) *commonv1.ProcessEvidence {
			return &commonv1.ProcessEvidence{Pid: int64(pid), Name: "sleep", ImageSha256: otherSHA}
		}, true, false, "not killed"},
		{"executable path differs", func(pid int) *commonv1.ProcessEvidence {
			return &commonv1.ProcessEvidence{Pid: int64(pid), Name: "/usr/bin/not-sleep"}
		}, true, false, "not killed"},
		{"hash matches, name differs", func(pid int) *commonv1.ProcessEvidence {
			return &commonv1.ProcessEvidence{Pid: int64(pid), Name: "bash", ImageSha256: sum}
		}, true, false, "not killed"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, done := child(t)
			r := e.agent.Execute(ctx, killCmd("k-"+strconv.Itoa(i), tt.proc(cmd.Process.Pid), tt.approved))
			wantResult(t, r, map[bool]remediationv1.ActionResultStatus{true: succeeded, false: failed}[tt.ok], tt.msg)
			if tt.ok {
				select {
				case <-done:
				case <-time.After(5 * time.Second):
					t.Fatal("process still running after a successful kill")
				}
				return
			}
			select {
			case <-done:
				t.Fatal("process died after a refused kill")
			default:
			}
		})
	}
}

// TestKillRefusesProtectedProcesses: pid 1, the agent itself, kernel threads, a pid that
// is no process and bad pids are refused.
func TestKillRefusesProtectedProcesses(t *testing.T) {
	e := newEnv(t, nil, 0)
	self, selfSHA := exeOf(t, os.Getpid())
	tests := []struct {
		name string
		proc *commonv1.ProcessEvidence
		msg  string
	}{
		{"pid 1", &commonv1.ProcessEvidence{Pid: 1, Name: "/sbin/init"}, "pid 1"},
		{"pid 1 by hash", &commonv1.ProcessEvidence{Pid: 1, ImageSha256: selfSHA}, "pid 1"},
		{"the agent itself", &commonv1.ProcessEvidence{Pid: int64(os.Getpid()), Name: self, ImageSha256: selfSHA}, "the agent itself"},
		{"pid 0", &commonv1.ProcessEvidence{Pid: 0, Name: "x"}, "not a process id"},
		{"negative pid (a process group)", &commonv1.ProcessEvidence{Pid: -int64(os.Getpid()), Name: self}, "not a process id"},
		{"pid beyond int32", &commonv1.ProcessEvidence{Pid: 1 << 40, Name: self}, "not a process id"},
		{"no such process", &commonv1.ProcessEvidence{Pid: 1 << 30, Name: self}, "no process"},
		{"nothing to match", &commonv1.ProcessEvidence{Pid: 12345}, "neither"},
	}
	if kt := kernelThread(); kt != 0 {
		tests = append(tests, struct {
			name string
			proc *commonv1.ProcessEvidence
			msg  string
		}{"a kernel thread", &commonv1.ProcessEvidence{Pid: int64(kt), Name: "/kthread"}, "kernel thread"})
	} else {
		t.Log("no kernel thread visible (container): that row is not run")
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.agent.Execute(context.Background(), killCmd("kp-"+strconv.Itoa(i), tt.proc, true))
			wantResult(t, r, failed, tt.msg)
		})
	}
}
