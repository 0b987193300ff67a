package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/auth"
)

// ServiceNames are the four services, in start order.
var ServiceNames = []string{"risk", "compliance", "access", "remediation"}

// healthNames are the gRPC service names each process must report SERVING.
var healthNames = map[string]string{
	"risk":        "condaccess.risk.v1.RiskService",
	"compliance":  "condaccess.compliance.v1.ComplianceService",
	"access":      "condaccess.access.v1.AccessService",
	"remediation": "condaccess.remediation.v1.RemediationService",
}

// Options configure a suite.
type Options struct {
	// Traces starts an OTLP receiver and points every process at it.
	Traces bool
	// Env is added to every process's environment.
	Env []string
	// ServeArgs are added to every serve command line.
	ServeArgs []string
	// UntrustedDevReporter leaves development-mode alerts with the reporter
	// DEVELOPMENT, so that none of their actions run without approval. By default the
	// suite runs with --risk-dev-reporter-is-device: an agent's alerts count as its
	// device's own, as a device certificate would make them.
	UntrustedDevReporter bool
	// TLS runs the suite with mutual TLS: `condaccess dev-certs` writes the
	// certificates into <Dir>/certs, each service serves with its own service
	// certificate, devices chain to the device CA, and the suite's clients use
	// admin.pem.
	TLS bool
	// Replicas runs this many `serve` processes per service (default 1), each with
	// its own addresses and data folder, every peer flag and the agent given the
	// comma-separated list of a service's replicas. More than one needs DatabaseURL.
	Replicas int
	// DatabaseURL runs every service on this PostgreSQL database
	// (CONDACCESS_DATABASE_URL); empty keeps each store embedded in the data folder.
	DatabaseURL string
}

// Suite is the four services, each a separate `condaccess serve --services X`
// process on its own loopback address, with generated clients to each.
type Suite struct {
	Bin *Binaries
	Dir string
	// Certs is the folder of the dev-certs certificates (TLS suites).
	Certs string
	// Procs is each service's first replica; Replicas all of them, in order.
	Procs    map[string]*Process
	Replicas map[string][]*Process
	Traces   *TraceReceiver

	Risk               riskv1.RiskServiceClient
	Devices            compliancev1.DeviceServiceClient
	CompliancePolicies compliancev1.CompliancePolicyServiceClient
	Compliance         compliancev1.ComplianceServiceClient
	Identities         compliancev1.DeviceIdentityServiceClient
	Directory          accessv1.DirectoryServiceClient
	CAPolicies         accessv1.ConditionalAccessPolicyServiceClient
	Access             accessv1.AccessServiceClient
	Remediation        remediationv1.RemediationServiceClient

	env   []string
	mu    sync.Mutex
	extra []*Process
	conns []*grpc.ClientConn
}

// StartSuite builds the binaries (once), starts the four services as separate
// processes and waits until each is healthy. Everything stops when the test ends; the
// logs are printed if it failed.
func StartSuite(t testing.TB, opts Options) *Suite {
	t.Helper()
	bin, err := Build()
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	dir := t.TempDir()
	s := &Suite{Bin: bin, Dir: dir, Procs: map[string]*Process{}}
	if opts.Traces {
		if s.Traces, err = StartTraceReceiver(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Traces.Stop)
		s.env = append(s.env, s.Traces.Env()...)
	} else {
		s.env = append(s.env, "OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none")
	}
	s.env = append(s.env, opts.Env...)

	var clientOpt grpc.DialOption = grpc.WithTransportCredentials(insecure.NewCredentials())
	if opts.TLS {
		s.Certs = filepath.Join(dir, "certs")
		out, err := exec.Command(bin.Condaccess, "dev-certs", "--out", s.Certs).CombinedOutput()
		if err != nil {
			t.Fatalf("dev-certs: %v: %s", err, out)
		}
		if clientOpt, err = s.DialOption("admin"); err != nil {
			t.Fatal(err)
		}
	}
	n := max(opts.Replicas, 1)
	if n > 1 && opts.DatabaseURL == "" {
		t.Fatal("harness: replicas share one store: set DatabaseURL")
	}
	if opts.DatabaseURL != "" {
		s.env = append(s.env, "CONDACCESS_DATABASE_URL="+opts.DatabaseURL)
	}
	// Every gRPC and HTTP address at once, so that none is handed out twice.
	free, err := FreeAddrs(2 * n * len(ServiceNames))
	if err != nil {
		t.Fatal(err)
	}
	addrs, httpAddrs := map[string][]string{}, map[string][]string{}
	for i, name := range ServiceNames {
		for r := range n {
			k := 2 * (i*n + r)
			addrs[name] = append(addrs[name], free[k])
			httpAddrs[name] = append(httpAddrs[name], free[k+1])
		}
	}
	s.Replicas = map[string][]*Process{}
	for _, name := range ServiceNames {
		for r := range n {
			procName, dataDir := name, filepath.Join(dir, "data")
			if n > 1 {
				procName, dataDir = fmt.Sprintf("%s-%d", name, r), filepath.Join(dir, fmt.Sprintf("data-%d", r))
			}
			args := []string{"serve", "--services", name,
				"--grpc-addr", addrs[name][r], "--http-addr", httpAddrs[name][r], "--data-dir", dataDir,
				"--risk-addr", strings.Join(addrs["risk"], ","), "--compliance-addr", strings.Join(addrs["compliance"], ","),
				"--access-addr", strings.Join(addrs["access"], ","), "--remediation-addr", strings.Join(addrs["remediation"], ","),
				"--stop-timeout", "2s", "--log-level", "debug",
			}
			if !opts.UntrustedDevReporter {
				args = append(args, "--risk-dev-reporter-is-device")
			}
			if opts.TLS {
				args = append(args, "--tls-cert", s.CertFile(name), "--tls-key", s.KeyFile(name), "--tls-client-ca", s.CertFile("ca"),
					"--device-ca-cert", s.CertFile("device-ca"), "--device-ca-key", s.KeyFile("device-ca"))
			}
			args = append(args, opts.ServeArgs...)
			p := &Process{
				Name: procName, Path: bin.Condaccess, Args: args, Env: s.env, Creds: clientOpt,
				GRPCAddr: addrs[name][r], HealthService: healthNames[name], LogPath: filepath.Join(dir, procName+".log"),
			}
			s.Replicas[name] = append(s.Replicas[name], p)
		}
		s.Procs[name] = s.Replicas[name][0]
	}
	t.Cleanup(func() { s.stopAll(t) })
	// Start in dependency order, each healthy before the next starts: a consumer whose
	// upstream is not up yet backs off, and an alert reported during its backoff would
	// reach it through the initial listing instead of the stream (without the event's
	// trace context), which the end-to-end trace test cannot tell from a broken trace.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, name := range ServiceNames {
		for _, p := range s.Replicas[name] {
			if err := p.Start(); err != nil {
				t.Fatal(err)
			}
			if err := p.WaitHealthy(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}

	conn := func(name string) *grpc.ClientConn {
		c, err := grpc.NewClient(addrs[name][0], clientOpt)
		if err != nil {
			t.Fatal(err)
		}
		s.conns = append(s.conns, c)
		return c
	}
	s.setClients(conn)
	return s
}

// setClients sets the suite's clients on the connections conn returns per service.
func (s *Suite) setClients(conn func(name string) *grpc.ClientConn) {
	rc, cc, ac, mc := conn("risk"), conn("compliance"), conn("access"), conn("remediation")
	s.Risk = riskv1.NewRiskServiceClient(rc)
	s.Devices = compliancev1.NewDeviceServiceClient(cc)
	s.CompliancePolicies = compliancev1.NewCompliancePolicyServiceClient(cc)
	s.Compliance = compliancev1.NewComplianceServiceClient(cc)
	s.Identities = compliancev1.NewDeviceIdentityServiceClient(cc)
	s.Directory = accessv1.NewDirectoryServiceClient(ac)
	s.CAPolicies = accessv1.NewConditionalAccessPolicyServiceClient(ac)
	s.Access = accessv1.NewAccessServiceClient(ac)
	s.Remediation = remediationv1.NewRemediationServiceClient(mc)
}

// OnReplica returns a view of the suite whose clients talk to replica r of every
// service (processes, folders and helpers shared); its connections close with the test.
func (s *Suite) OnReplica(t testing.TB, r int) *Suite {
	t.Helper()
	v := &Suite{Bin: s.Bin, Dir: s.Dir, Certs: s.Certs, Procs: map[string]*Process{}, Replicas: s.Replicas, Traces: s.Traces, env: s.env}
	conn := func(name string) *grpc.ClientConn {
		p := s.Replicas[name][r]
		v.Procs[name] = p
		creds := p.Creds
		if creds == nil {
			creds = grpc.WithTransportCredentials(insecure.NewCredentials())
		}
		c, err := grpc.NewClient(p.GRPCAddr, creds)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	v.setClients(conn)
	return v
}

// Peers is the comma-separated list of a service's replica addresses.
func (s *Suite) Peers(name string) string {
	var as []string
	for _, p := range s.Replicas[name] {
		as = append(as, p.GRPCAddr)
	}
	return strings.Join(as, ",")
}

// CertFile and KeyFile are the files of a dev-certs certificate ("admin",
// "sensor", "risk", "ca", "device-ca", ...) of a TLS suite.
func (s *Suite) CertFile(name string) string { return filepath.Join(s.Certs, name+".pem") }

// KeyFile: see CertFile.
func (s *Suite) KeyFile(name string) string { return filepath.Join(s.Certs, name+"-key.pem") }

// ClientConfig is the mutual-TLS client configuration with certificate name.
func (s *Suite) ClientConfig(name string) auth.ClientConfig {
	return auth.ClientConfig{CAFile: s.CertFile("ca"), CertFile: s.CertFile(name), KeyFile: s.KeyFile(name)}
}

// DialOption returns the transport credentials of certificate name.
func (s *Suite) DialOption(name string) (grpc.DialOption, error) {
	return auth.DialOption(s.ClientConfig(name))
}

// Addr returns a service's gRPC address.
func (s *Suite) Addr(name string) string { return s.Procs[name].GRPCAddr }

// AgentOptions configure an agent process.
type AgentOptions struct {
	DeviceID string
	// StateDir, when set, runs the agent with the enrolled identity of this folder
	// (--state-dir) instead of --device-id.
	StateDir      string
	WatchDir      string
	QuarantineDir string
	Args          []string
}

// StartAgent starts condaccess-agent for a device, watching a folder, connected to the
// suite's risk and remediation services.
func (s *Suite) StartAgent(t testing.TB, o AgentOptions) *Process {
	t.Helper()
	if s.Bin.AgentErr != nil {
		t.Fatalf("the agent binary could not be built: %v", s.Bin.AgentErr)
	}
	for _, d := range []string{o.WatchDir, o.QuarantineDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"--device-id", o.DeviceID, "--watch", o.WatchDir, "--quarantine-dir", o.QuarantineDir,
		"--server", s.Peers("risk"), "--risk-addr", s.Peers("risk"), "--remediation-addr", s.Peers("remediation")}
	if o.StateDir != "" {
		args = append(args, "--state-dir", o.StateDir, "--compliance-addr", s.Peers("compliance"))
	}
	args = append(args, o.Args...)
	p := &Process{Name: "agent-" + o.DeviceID, Path: s.Bin.Agent, Args: args, Env: s.env, LogPath: filepath.Join(s.Dir, "agent-"+o.DeviceID+".log")}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.extra = append(s.extra, p)
	s.mu.Unlock()
	return p
}

// Logs returns the tail of every process's log.
func (s *Suite) Logs(max int) string {
	var b strings.Builder
	s.mu.Lock()
	extra := append([]*Process(nil), s.extra...)
	s.mu.Unlock()
	for _, name := range ServiceNames {
		for _, p := range s.Replicas[name] {
			fmt.Fprintf(&b, "\n---- %s log (%s)\n%s", p.Name, p.LogPath, p.Logs(max))
		}
	}
	for _, p := range extra {
		fmt.Fprintf(&b, "\n---- %s log (%s)\n%s", p.Name, p.LogPath, p.Logs(max))
	}
	return b.String()
}

func (s *Suite) stopAll(t testing.TB) {
	if t.Failed() {
		// What the failing step was waiting on, as the services see it now.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		t.Logf("suite state at failure:\n%s", s.State(ctx))
		cancel()
	}
	for _, c := range s.conns {
		_ = c.Close()
	}
	s.mu.Lock()
	extra := append([]*Process(nil), s.extra...)
	s.mu.Unlock()
	for _, p := range extra {
		_ = p.Stop(5 * time.Second)
	}
	var wg sync.WaitGroup
	for _, p := range s.allProcs() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = p.Stop(5 * time.Second)
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.Logf("process logs:%s", s.Logs(16<<10))
	}
}

func (s *Suite) allProcs() []*Process {
	var ps []*Process
	for _, name := range ServiceNames {
		ps = append(ps, s.Replicas[name]...)
	}
	return ps
}
