package agent_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/agent"
)

func hexSHA(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func TestEICARIsTheStandardTestString(t *testing.T) {
	const want = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"
	if got := hexSHA(agent.EICAR()); got != want {
		t.Fatalf("sha256(EICAR()) = %s, want %s", got, want)
	}
}

// fakeRisk records reported alerts; the first failN reports fail with UNAVAILABLE.
type fakeRisk struct {
	riskv1.UnimplementedRiskServiceServer
	mu       sync.Mutex
	failN    int
	calls    int
	alerts   map[string]*riskv1.Alert
	reported chan *riskv1.Alert
}

func (f *fakeRisk) ReportAlert(_ context.Context, req *riskv1.ReportAlertRequest) (*riskv1.ReportAlertResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.failN > 0 {
		f.failN--
		return nil, status.Error(codes.Unavailable, "down")
	}
	_, dup := f.alerts[req.GetAlert().GetAlertId()]
	f.alerts[req.GetAlert().GetAlertId()] = req.GetAlert()
	if !dup {
		f.reported <- req.GetAlert()
	}
	return &riskv1.ReportAlertResponse{Alert: req.GetAlert(), Created: !dup}, nil
}

func (f *fakeRisk) count() int { f.mu.Lock(); defer f.mu.Unlock(); return f.calls }

// fakeRemediation hands each Connect stream to the test.
type fakeRemediation struct {
	remediationv1.UnimplementedAgentServiceServer
	conns chan *fakeConn
}

type fakeConn struct {
	hello   *remediationv1.AgentHello
	stream  grpc.BidiStreamingServer[remediationv1.ConnectRequest, remediationv1.ConnectResponse]
	results chan *remediationv1.ActionResult
	end     chan struct{}
}

func (f *fakeRemediation) Connect(stream grpc.BidiStreamingServer[remediationv1.ConnectRequest, remediationv1.ConnectResponse]) error {
	m, err := stream.Recv()
	if err != nil {
		return err
	}
	if err := stream.Send(&remediationv1.ConnectResponse{Kind: &remediationv1.ConnectResponse_Ack{Ack: &remediationv1.ConnectAck{HeartbeatInterval: durationpb.New(time.Hour)}}}); err != nil {
		return err
	}
	c := &fakeConn{hello: m.GetHello(), stream: stream, results: make(chan *remediationv1.ActionResult, 16), end: make(chan struct{})}
	f.conns <- c
	errc := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			if r := m.GetResult(); r != nil {
				c.results <- r
			}
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-c.end:
		return status.Error(codes.Unavailable, "server going away")
	}
}

func (c *fakeConn) send(t *testing.T, cmd *remediationv1.ActionCommand) {
	t.Helper()
	if err := c.stream.Send(&remediationv1.ConnectResponse{Kind: &remediationv1.ConnectResponse_Command{Command: cmd}}); err != nil {
		t.Fatal(err)
	}
}

func (c *fakeConn) result(t *testing.T) *remediationv1.ActionResult {
	t.Helper()
	select {
	case r := <-c.results:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no result")
		return nil
	}
}

type env struct {
	risk  *fakeRisk
	rem   *fakeRemediation
	watch string
	qdir  string
	agent *agent.Agent
}

func newEnv(t *testing.T, blocklist map[string]bool, failReports int) *env {
	t.Helper()
	e := &env{
		risk:  &fakeRisk{alerts: map[string]*riskv1.Alert{}, reported: make(chan *riskv1.Alert, 16), failN: failReports},
		rem:   &fakeRemediation{conns: make(chan *fakeConn, 4)},
		watch: t.TempDir(), qdir: filepath.Join(t.TempDir(), "quarantine"),
	}
	srv := grpc.NewServer()
	riskv1.RegisterRiskServiceServer(srv, e.risk)
	remediationv1.RegisterAgentServiceServer(srv, e.rem)
	lis := bufconn.Listen(1 << 20)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufconn", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	e.agent, err = agent.New(agent.Config{
		DeviceID: "dev-1", Hostname: "host-1", WatchDirs: []string{e.watch}, QuarantineDir: e.qdir, Blocklist: blocklist,
		RescanInterval: time.Hour, Debounce: 10 * time.Millisecond, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Risk: riskv1.NewRiskServiceClient(conn), Remediation: remediationv1.NewAgentServiceClient(conn),
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = e.agent.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func (e *env) conn(t *testing.T) *fakeConn {
	t.Helper()
	select {
	case c := <-e.rem.conns:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("agent never connected")
		return nil
	}
}

func (e *env) nextAlert(t *testing.T) *riskv1.Alert {
	t.Helper()
	select {
	case a := <-e.risk.reported:
		return a
	case <-time.After(10 * time.Second):
		t.Fatal("no alert reported")
		return nil
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func fileEv(path string, data []byte) *commonv1.Evidence {
	return &commonv1.Evidence{Kind: &commonv1.Evidence_File{File: &commonv1.FileEvidence{Path: path, Sha256: hexSHA(data), SizeBytes: int64(len(data))}}}
}

func TestDetectsAndReportsOnce(t *testing.T) {
	bad := []byte("blocklisted payload\n")
	blockfile := filepath.Join(t.TempDir(), "blocklist")
	writeFile(t, blockfile, []byte("# known bad\n"+hexSHA(bad)+"  bad.bin\n\n"))
	bl, err := agent.LoadBlocklist(blockfile)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, bl, 1) // the first report fails: it is retried
	e.run(t)
	e.conn(t)

	eicarFile := filepath.Join(e.watch, "sub", "dir", "eicar.com") // a folder created after start
	writeFile(t, eicarFile, append([]byte("prefix "), agent.EICAR()...))
	a := e.nextAlert(t)
	want := &riskv1.Alert{
		AlertId: a.GetAlertId(), DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_HIGH, Category: "Malware",
		Title: "EICAR anti-malware test file detected", Description: "The file " + eicarFile + " contains the EICAR anti-malware test string.",
		DetectionSource: agent.DetectionSource, DetectTime: a.GetDetectTime(),
		Evidence: []*commonv1.Evidence{fileEv(eicarFile, append([]byte("prefix "), agent.EICAR()...))},
	}
	if d := cmp.Diff(want, a, protocmp.Transform()); d != "" {
		t.Errorf("EICAR alert (-want +got):\n%s", d)
	}
	if !strings.HasPrefix(a.GetAlertId(), "agent-") {
		t.Errorf("alert id %q", a.GetAlertId())
	}
	badFile := filepath.Join(e.watch, "bad.bin")
	writeFile(t, badFile, bad)
	if b := e.nextAlert(t); b.GetTitle() != "Blocklisted file detected" || b.GetEvidence()[0].GetFile().GetPath() != badFile {
		t.Errorf("blocklist alert %v", b)
	}
	writeFile(t, filepath.Join(e.watch, "clean.txt"), []byte("hello"))

	// Rescans of the same files report nothing new.
	before := e.risk.count()
	e.agent.Scan()
	if left := e.agent.ReportPending(context.Background()); left != 0 {
		t.Errorf("%d reports left", left)
	}
	if got := e.risk.count(); got != before {
		t.Errorf("rescan re-reported: %d calls, want %d", got, before)
	}
	found, files := e.agent.Scan()
	if len(found) != 2 || files != 3 {
		t.Errorf("scan found %d threats in %d files, want 2 in 3", len(found), files)
	}
}

func TestQuarantineVerifyRestore(t *testing.T) {
	e := newEnv(t, nil, 0)
	ctx := context.Background()
	content := agent.EICAR()
	path := filepath.Join(e.watch, "evil.com")
	writeFile(t, path, content)
	quarantine := func(id string, ev *commonv1.Evidence) *remediationv1.ActionResult {
		return e.agent.Execute(ctx, &remediationv1.ActionCommand{ActionId: id, Type: remediationv1.ActionType_ACTION_TYPE_QUARANTINE_FILE, Target: ev})
	}
	failed := remediationv1.ActionResultStatus_ACTION_RESULT_STATUS_FAILED
	ok := remediationv1.ActionResultStatus_ACTION_RESULT_STATUS_SUCCEEDED

	wrong := fileEv(path, []byte("other content"))
	if r := quarantine("act-wrong", wrong); r.GetStatus() != failed || !strings.Contains(r.GetMessage(), "changed") {
		t.Errorf("sha mismatch: %v", r)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("file moved despite a sha mismatch: %v", err)
	}
	if r := quarantine("act-missing", fileEv(filepath.Join(e.watch, "nope"), content)); r.GetStatus() != failed || !strings.Contains(r.GetMessage(), "not found") {
		t.Errorf("missing file: %v", r)
	}
	r := quarantine("act-1", fileEv(path, content))
	if r.GetStatus() != ok || r.GetQuarantineId() == "" {
		t.Fatalf("quarantine: %v", r)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("original still there: %v", err)
	}
	var sc agent.Sidecar
	data, err := os.ReadFile(filepath.Join(e.qdir, r.GetQuarantineId()+".json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &sc); err != nil {
		t.Fatal(err)
	}
	if sc.OriginalPath != path || sc.SHA256 != hexSHA(content) || sc.QuarantineTime.IsZero() || sc.ActionID != "act-1" {
		t.Errorf("sidecar %+v", sc)
	}
	// The same command again is not executed again; the stored result is returned.
	if again := quarantine("act-1", fileEv(path, content)); !cmp.Equal(r, again, protocmp.Transform()) {
		t.Errorf("re-sent command: %v, want %v", again, r)
	}
	// A restarted agent remembers it too (state file in the quarantine folder).
	restarted, err := agent.New(agent.Config{DeviceID: "dev-1", WatchDirs: []string{e.watch}, QuarantineDir: e.qdir})
	if err != nil {
		t.Fatal(err)
	}
	if again := restarted.Execute(ctx, &remediationv1.ActionCommand{ActionId: "act-1", Type: remediationv1.ActionType_ACTION_TYPE_QUARANTINE_FILE, Target: fileEv(path, content)}); !cmp.Equal(r, again, protocmp.Transform()) {
		t.Errorf("after restart: %v, want %v", again, r)
	}

	restore := func(id, qid string) *remediationv1.ActionResult {
		return e.agent.Execute(ctx, &remediationv1.ActionCommand{ActionId: id, Type: remediationv1.ActionType_ACTION_TYPE_RESTORE_FILE, QuarantineId: qid})
	}
	if rr := restore("act-r0", "q-000000000000000000000000"); rr.GetStatus() != failed {
		t.Errorf("restore unknown: %v", rr)
	}
	if rr := restore("act-r1", r.GetQuarantineId()); rr.GetStatus() != ok {
		t.Fatalf("restore: %v", rr)
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != string(content) {
		t.Fatalf("restored content %q, %v", got, err)
	}
	if found, _ := e.agent.Scan(); len(found) != 0 {
		t.Errorf("a restored file is detected again: %v", found)
	}
	if rr := restore("act-r2", r.GetQuarantineId()); rr.GetStatus() != failed {
		t.Errorf("second restore of the same file: %v", rr)
	}
	if u := e.agent.Execute(ctx, &remediationv1.ActionCommand{ActionId: "act-u", Type: remediationv1.ActionType(42)}); u.GetStatus() != failed || !strings.Contains(u.GetMessage(), "unsupported") {
		t.Errorf("unsupported type: %v", u)
	}
}

func TestConnectionExecutesOnceAndReReports(t *testing.T) {
	e := newEnv(t, nil, 0)
	content := agent.EICAR()
	path := filepath.Join(e.watch, "evil.com")
	writeFile(t, path, content)
	e.run(t)
	c1 := e.conn(t)
	if c1.hello.GetDeviceId() != "dev-1" || c1.hello.GetHostname() != "host-1" || c1.hello.GetAgentVersion() != agent.Version {
		t.Errorf("hello %v", c1.hello)
	}
	e.nextAlert(t)
	cmd := &remediationv1.ActionCommand{ActionId: "act-1", Type: remediationv1.ActionType_ACTION_TYPE_QUARANTINE_FILE, Target: fileEv(path, content)}
	c1.send(t, cmd)
	c1.send(t, cmd) // a duplicate while the first runs or after it: executed once
	r1 := c1.result(t)
	if r1.GetStatus() != remediationv1.ActionResultStatus_ACTION_RESULT_STATUS_SUCCEEDED || r1.GetActionId() != "act-1" {
		t.Fatalf("result %v", r1)
	}
	close(c1.end) // the server goes away; the agent reconnects with backoff
	c2 := e.conn(t)
	c2.send(t, cmd) // the server re-sends what has no recorded result
	r2 := c2.result(t)
	if !cmp.Equal(r1, r2, protocmp.Transform()) {
		t.Errorf("re-reported %v, want %v", r2, r1)
	}
	matches, _ := filepath.Glob(filepath.Join(e.qdir, "*.quarantined"))
	if len(matches) != 1 {
		t.Errorf("%d quarantined files, want 1", len(matches))
	}
	writeFile(t, filepath.Join(e.watch, "again.com"), content)
	c2.send(t, &remediationv1.ActionCommand{ActionId: "act-scan", Type: remediationv1.ActionType_ACTION_TYPE_RUN_SCAN})
	var scan *remediationv1.ActionResult
	for scan == nil || scan.GetActionId() != "act-scan" {
		scan = c2.result(t)
	}
	if scan.GetStatus() != remediationv1.ActionResultStatus_ACTION_RESULT_STATUS_SUCCEEDED || len(scan.GetFindings()) != 1 || scan.GetFindings()[0].GetFile().GetPath() != filepath.Join(e.watch, "again.com") {
		t.Errorf("scan result %v", scan)
	}
}
