// Package harness builds the condaccess binaries and runs the services, the agent and an
// OTLP trace receiver as real processes on loopback, for the integration tests.
package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"
)

// Binaries are the built condaccess and condaccess-agent executables.
type Binaries struct {
	Condaccess string
	Agent      string
	// AgentErr says why the agent could not be built (tests that need it fail with it).
	AgentErr error
}

var (
	buildOnce sync.Once
	built     *Binaries
	buildErr  error
	buildDir  string
)

// Main runs the tests of a package that uses the harness and removes the built
// binaries afterwards: call it from TestMain as os.Exit(harness.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	return code
}

// ModuleRoot finds the directory holding go.mod, walking up from the working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("harness: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Build builds the binaries once per test binary (go build -o into a temporary folder).
func Build() (*Binaries, error) {
	buildOnce.Do(func() {
		root, err := ModuleRoot()
		if err != nil {
			buildErr = err
			return
		}
		buildDir, err = os.MkdirTemp("", "condaccess-integration-bin-")
		if err != nil {
			buildErr = err
			return
		}
		if err := statSources(root); err != nil {
			buildErr = err
			return
		}
		b := &Binaries{Condaccess: filepath.Join(buildDir, "condaccess"), Agent: filepath.Join(buildDir, "condaccess-agent")}
		if err := goBuild(root, b.Condaccess, "./cmd/condaccess"); err != nil {
			buildErr = err
			return
		}
		b.AgentErr = goBuild(root, b.Agent, "./cmd/condaccess-agent")
		built = b
	})
	return built, buildErr
}

// statSources stats every source file the binaries are built from. go test caches a
// passing result keyed on the test binary and on the files the test looked at; the
// binaries are built by a child process, so without this a changed service would
// still get the cached result of the old one.
func statSources(root string) error {
	return filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return nil // a file that vanished meanwhile: best effort
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "node_modules", ".cache", "testdata", "gen":
				if path != root {
					return filepath.SkipDir
				}
			}
			return nil
		}
		switch filepath.Ext(path) {
		case ".go", ".sql", ".mod", ".sum":
			_, _ = os.Stat(path)
		}
		return nil
	})
}

func goBuild(root, out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, stderr.String())
	}
	return nil
}

// FreeAddr returns a loopback address with a port that was free a moment ago.
func FreeAddr() (string, error) {
	addrs, err := FreeAddrs(1)
	if err != nil {
		return "", err
	}
	return addrs[0], nil
}

// FreeAddrs returns n distinct free loopback addresses: all are held open together
// before any is released, so that none is handed out twice (FreeAddr called n times
// can return a port again once it is closed: a suite once gave the risk service's
// HTTP address to the access service's gRPC listener, which then failed to start).
//
// The ports are picked below the kernel's ephemeral range (listenPorts), not by
// listening on port 0, which hands out ports of that range: a process that the
// harness kills and starts again on its port leaves the port free in between, and
// any process on the machine that listens on port 0 meanwhile (every in-process test
// server of the packages tested alongside does) may be given it; the restarted
// process then fails to listen ("address already in use"). Here a freed port went
// to another listener on port 0 after 121 to 18,124 listens (five tries). The kernel
// never hands out a port below the range, neither to listeners on port 0 nor as an
// outgoing connection's source port.
func FreeAddrs(n int) ([]string, error) {
	var addrs []string
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	lo, hi := listenPorts()
	for range n {
		var l net.Listener
		var err error
		for try := 0; ; try++ {
			port := 0 // the kernel's choice, when the range below the ephemeral one is too small
			if hi-lo >= 1000 {
				port = lo + rand.IntN(hi-lo+1)
			}
			if l, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
				break
			}
			if port == 0 || try == 1000 {
				return nil, err
			}
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}

// listenPorts is the range FreeAddrs picks from: up to 16,000 ports just below the
// kernel's ephemeral range (ip_local_port_range; 32768 when it cannot be read), and
// not below 10000.
func listenPorts() (lo, hi int) {
	first := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil {
				first = v
			}
		}
	}
	return max(10000, first-16000), first - 1
}

// Process is one child process that can be killed and started again with the same
// arguments (and so the same addresses and data).
type Process struct {
	Name string
	Path string
	Args []string
	Env  []string
	// GRPCAddr, when set, is where WaitHealthy checks gRPC health.
	GRPCAddr string
	// HealthService is the gRPC health service name to wait for ("" = the server).
	HealthService string
	// Creds dials GRPCAddr for the health check; nil means plaintext.
	Creds grpc.DialOption
	// LogPath receives stdout and stderr of every run, appended.
	LogPath string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	runs    int
}

// Start starts the process; its output is appended to LogPath.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s: already running", p.Name)
	}
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	p.runs++
	fmt.Fprintf(logf, "==== %s run %d at %s: %s %s\n", p.Name, p.runs, time.Now().Format(time.RFC3339Nano), p.Path, strings.Join(p.Args, " "))
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Its own process group, so that nothing it starts outlives the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("%s: start: %w", p.Name, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited = cmd, exited
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(exited)
	}()
	return nil
}

// Exited returns a channel closed when the current run has exited, and its error.
func (p *Process) Exited() (<-chan struct{}, func() error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exited, func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.waitErr
	}
}

// Pid is the process id of the current run, 0 when it is not running.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the process has been started and not exited.
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL (no chance to clean up) and waits for the process to exit.
func (p *Process) Kill() error { return p.signal(syscall.SIGKILL, 10*time.Second) }

// Stop sends SIGTERM, waits up to timeout, then SIGKILL.
func (p *Process) Stop(timeout time.Duration) error {
	err := p.signal(syscall.SIGTERM, timeout)
	if err != nil && p.Running() {
		return p.Kill()
	}
	return err
}

func (p *Process) signal(sig syscall.Signal, timeout time.Duration) error {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = syscall.Kill(-cmd.Process.Pid, sig) // the whole process group
	select {
	case <-exited:
	case <-time.After(timeout):
		return fmt.Errorf("%s: still running %s after %v", p.Name, timeout, sig)
	}
	p.mu.Lock()
	p.cmd = nil
	p.mu.Unlock()
	return nil
}

// Restart kills the process with SIGKILL, starts it again and waits until it is
// healthy.
func (p *Process) Restart(ctx context.Context) error {
	if err := p.Kill(); err != nil {
		return err
	}
	if err := p.Start(); err != nil {
		return err
	}
	return p.WaitHealthy(ctx)
}

// WaitHealthy waits until gRPC health reports SERVING for HealthService at GRPCAddr,
// failing early when the process exits.
func (p *Process) WaitHealthy(ctx context.Context) error {
	if p.GRPCAddr == "" {
		return nil
	}
	creds := p.Creds
	if creds == nil {
		creds = grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	conn, err := grpc.NewClient(p.GRPCAddr, creds)
	if err != nil {
		return err
	}
	defer conn.Close()
	hc := grpc_health_v1.NewHealthClient(conn)
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	var last error
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := hc.Check(cctx, &grpc_health_v1.HealthCheckRequest{Service: p.HealthService})
		cancel()
		if err == nil && resp.GetStatus() == grpc_health_v1.HealthCheckResponse_SERVING {
			return nil
		}
		if err != nil {
			last = err
		} else {
			last = fmt.Errorf("status %s", resp.GetStatus())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s at %s not healthy: %v (last: %v)", p.Name, p.GRPCAddr, ctx.Err(), last)
		case <-exited:
			p.mu.Lock()
			werr := p.waitErr
			p.mu.Unlock()
			return fmt.Errorf("%s exited before it was healthy: %v", p.Name, werr)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// Logs returns the process's log, at most the last max bytes.
func (p *Process) Logs(max int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if len(b) > max {
		b = append([]byte("...\n"), b[len(b)-max:]...)
	}
	return string(b)
}
