package harness

import (
	"fmt"
	"syscall"
)

// Pause stops the process (SIGSTOP to its group) without ending it: it holds its
// connections and state but runs nothing until Resume, like a stalled machine.
func (p *Process) Pause() error { return p.sendNoWait(syscall.SIGSTOP) }

// Resume continues a paused process (SIGCONT).
func (p *Process) Resume() error { return p.sendNoWait(syscall.SIGCONT) }

func (p *Process) sendNoWait(sig syscall.Signal) error {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("%s: not running", p.Name)
	}
	return syscall.Kill(-cmd.Process.Pid, sig)
}
