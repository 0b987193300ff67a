// Package agent is the condaccess endpoint agent: it watches folders for the EICAR test file and blocklisted files, reports alerts to the risk service and performs the remediation service's actions.
package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
)

// Version is the agent version reported in the hello.
const Version = "0.1.0"

// DetectionSource is the alerts' detection_source.
const DetectionSource = "condaccess-agent"

// Config configures New.
type Config struct {
	DeviceID string
	Hostname string
	// WatchDirs are watched recursively (fsnotify plus a periodic rescan).
	WatchDirs []string
	// QuarantineDir holds quarantined files, their sidecar JSON and the state file.
	QuarantineDir string
	// Blocklist holds lowercase SHA-256 hex digests of files to detect.
	Blocklist map[string]bool
	// RescanInterval is the period of the full rescan (default 30s).
	RescanInterval time.Duration
	// Debounce delays the scan of a changed file (default 100ms).
	Debounce    time.Duration
	Risk        riskv1.RiskServiceClient
	Remediation remediationv1.AgentServiceClient
	// MinBackoff and MaxBackoff bound reconnect and report retries (default 200ms, 30s).
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
	Now                    func() time.Time
	// ProcRoot is /proc (tests may point it elsewhere).
	ProcRoot string
}

// Agent is one endpoint agent.
type Agent struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	st       *state
	inflight map[string]bool

	reportKick chan struct{}
	reportMu   sync.Mutex // one ReportPending at a time: no alert is sent twice
	cmds       chan *remediationv1.ActionCommand
	results    chan *remediationv1.ActionResult

	connMu    sync.Mutex
	connected bool
	connCh    chan struct{} // closed and replaced on every change of connected
}

// New loads the agent's state from the quarantine folder.
func New(cfg Config) (*Agent, error) {
	if cfg.DeviceID == "" {
		return nil, errors.New("agent: device id is required")
	}
	if cfg.QuarantineDir == "" {
		return nil, errors.New("agent: quarantine folder is required")
	}
	if cfg.RescanInterval <= 0 {
		cfg.RescanInterval = 30 * time.Second
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = 100 * time.Millisecond
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(30*time.Second, cfg.MinBackoff)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Hostname == "" {
		cfg.Hostname, _ = os.Hostname()
	}
	qd, err := filepath.Abs(cfg.QuarantineDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(qd, 0o700); err != nil {
		return nil, fmt.Errorf("agent: quarantine folder: %w", err)
	}
	// Folders are used with their symbolic links resolved: the agent moves files only
	// along paths without symbolic links, and reports its roots as such.
	if cfg.QuarantineDir, err = filepath.EvalSymlinks(qd); err != nil {
		return nil, fmt.Errorf("agent: quarantine folder: %w", err)
	}
	roots := make([]string, 0, len(cfg.WatchDirs))
	for _, d := range cfg.WatchDirs {
		abs, err := filepath.Abs(d)
		if err != nil {
			return nil, err
		}
		if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("agent: watched folder %s is not a folder (%v)", d, err)
		}
		if abs, err = filepath.EvalSymlinks(abs); err != nil {
			return nil, fmt.Errorf("agent: watched folder %s: %w", d, err)
		}
		if systemLocation(abs) {
			return nil, fmt.Errorf("agent: watched folder %s is a system location; the agent never quarantines there", d)
		}
		roots = append(roots, abs)
	}
	cfg.WatchDirs = roots
	st, err := loadState(qd)
	if err != nil {
		return nil, err
	}
	return &Agent{
		cfg: cfg, log: cfg.Logger.With("device_id", cfg.DeviceID), st: st, inflight: map[string]bool{},
		reportKick: make(chan struct{}, 1),
		cmds:       make(chan *remediationv1.ActionCommand, 1024),
		results:    make(chan *remediationv1.ActionResult, 1024),
		connCh:     make(chan struct{}),
	}, nil
}

func (a *Agent) now() time.Time { return a.cfg.Now().UTC() }

func (a *Agent) procRoot() string {
	if a.cfg.ProcRoot != "" {
		return a.cfg.ProcRoot
	}
	return "/proc"
}

func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// saveLocked persists the state; a.mu must be held.
func (a *Agent) saveLocked() {
	if err := a.st.save(a.cfg.QuarantineDir); err != nil {
		a.log.Error("saving agent state", "err", err)
	}
}

// Run watches, scans, reports and stays connected until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	run := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	run(a.watch)
	run(a.reportLoop)
	run(a.executeLoop)
	if a.cfg.Remediation != nil {
		run(a.connectLoop)
	}
	wg.Wait()
	return nil
}

// --- detection ----------------------------------------------------------------------

// inQuarantine reports whether path is inside the quarantine folder.
func (a *Agent) inQuarantine(path string) bool {
	rel, err := filepath.Rel(a.cfg.QuarantineDir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// alertID is derived from the device, the file's path and SHA-256 and the time the
// agent first saw it: stable across report retries, new for a new appearance of the
// file (after it was quarantined or deleted).
func alertID(deviceID, path, sha string, firstSeen time.Time) string {
	s := sha256.Sum256([]byte(deviceID + "\x00" + path + "\x00" + sha + "\x00" + firstSeen.Format(time.RFC3339Nano)))
	return "agent-" + hex.EncodeToString(s[:16])
}

// check scans one file and records a new detection; it returns the detection, if any.
func (a *Agent) check(path string) *Detection {
	if a.inQuarantine(path) {
		return nil
	}
	d, err := scanFile(path, a.cfg.Blocklist)
	if err != nil || d == nil {
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			a.log.Debug("scan failed", "path", path, "err", err)
		}
		return nil
	}
	k := fileKey(d.Path, d.SHA256)
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.st.Trusted[k]; ok {
		return nil
	}
	if _, ok := a.st.Detections[k]; !ok {
		now := a.now()
		a.st.Detections[k] = &detection{
			AlertID: alertID(a.cfg.DeviceID, d.Path, d.SHA256, now), Path: d.Path, SHA256: d.SHA256, Size: d.Size,
			Reason: d.Reason, EICAR: d.EICAR, FirstSeen: now,
		}
		a.saveLocked()
		a.log.Warn("threat detected", "path", d.Path, "sha256", d.SHA256, "reason", d.Reason)
		kick(a.reportKick)
	}
	return d
}

// Scan scans every watched folder once, records new detections and forgets reported
// detections whose file is gone; it returns every detection and the number of files.
func (a *Agent) Scan() ([]*Detection, int) {
	var found []*Detection
	files := 0
	for _, dir := range a.cfg.WatchDirs {
		_ = filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if de.IsDir() {
				if a.inQuarantine(p) {
					return filepath.SkipDir
				}
				return nil
			}
			if !de.Type().IsRegular() {
				return nil
			}
			files++
			if d := a.check(p); d != nil {
				found = append(found, d)
			}
			return nil
		})
	}
	a.mu.Lock()
	changed := false
	for k, d := range a.st.Detections {
		if !d.Reported {
			continue
		}
		if sum, _, _, err := hashFile(d.Path); err != nil || sum != d.SHA256 {
			delete(a.st.Detections, k)
			changed = true
		}
	}
	if changed {
		a.saveLocked()
	}
	a.mu.Unlock()
	return found, files
}

// forgetFile drops the detections of a path (it was quarantined).
func (a *Agent) forgetFile(path string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, d := range a.st.Detections {
		if d.Path == path && d.Reported {
			delete(a.st.Detections, k)
		}
	}
	a.saveLocked()
}

// trust records a restored file so that it is not detected again.
func (a *Agent) trust(path, sha string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.st.Trusted[fileKey(path, sha)] = a.now()
	a.saveLocked()
}

// watch follows the watched folders with fsnotify and rescans them periodically.
func (a *Agent) watch(ctx context.Context) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		a.log.Error("fsnotify unavailable, relying on the periodic rescan", "err", err)
	}
	var events chan fsnotify.Event
	var errs chan error
	if w != nil {
		defer w.Close()
		events, errs = w.Events, w.Errors
		for _, d := range a.cfg.WatchDirs {
			a.addTree(w, d)
		}
	}
	a.Scan()
	rescan := time.NewTicker(a.cfg.RescanInterval)
	defer rescan.Stop()
	pending := map[string]bool{}
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-rescan.C:
			a.Scan()
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if ev.Has(fsnotify.Create) || ev.Has(fsnotify.Write) || ev.Has(fsnotify.Chmod) {
				if fi, err := os.Lstat(ev.Name); err == nil && fi.IsDir() {
					if !a.inQuarantine(ev.Name) {
						a.addTree(w, ev.Name)
						go a.scanTree(ev.Name)
					}
					continue
				}
				if len(pending) == 0 {
					debounce.Reset(a.cfg.Debounce)
				}
				pending[ev.Name] = true
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			a.log.Warn("fsnotify error; the periodic rescan covers missed events", "err", err)
		case <-debounce.C:
			for p := range pending {
				a.check(p)
			}
			clear(pending)
		}
	}
}

func (a *Agent) addTree(w *fsnotify.Watcher, root string) {
	_ = filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil || !de.IsDir() {
			return nil
		}
		if a.inQuarantine(p) {
			return filepath.SkipDir
		}
		if err := w.Add(p); err != nil {
			a.log.Warn("cannot watch folder", "path", p, "err", err)
		}
		return nil
	})
}

func (a *Agent) scanTree(root string) {
	_ = filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err == nil && de.Type().IsRegular() {
			a.check(p)
		}
		return nil
	})
}

// --- reporting ----------------------------------------------------------------------

func (a *Agent) alertFor(d *detection) *riskv1.Alert {
	title := "Blocklisted file detected"
	desc := fmt.Sprintf("The file %s (sha256 %s) is on the agent's SHA-256 blocklist.", d.Path, d.SHA256)
	if d.EICAR {
		title = "EICAR anti-malware test file detected"
		desc = fmt.Sprintf("The file %s contains the EICAR anti-malware test string.", d.Path)
	}
	return &riskv1.Alert{
		AlertId: d.AlertID, DeviceId: a.cfg.DeviceID, Severity: commonv1.Severity_SEVERITY_HIGH,
		Category: "Malware", Title: title, Description: desc, DetectionSource: DetectionSource,
		DetectTime: timestamppb.New(d.FirstSeen),
		Evidence:   []*commonv1.Evidence{{Kind: &commonv1.Evidence_File{File: &commonv1.FileEvidence{Path: d.Path, Sha256: d.SHA256, SizeBytes: d.Size}}}},
	}
}

// ReportPending reports every detection not yet reported; it returns how many are left.
func (a *Agent) ReportPending(ctx context.Context) int {
	a.reportMu.Lock()
	defer a.reportMu.Unlock()
	a.mu.Lock()
	var todo []*detection
	for _, d := range a.st.Detections {
		if !d.Reported {
			cp := *d
			todo = append(todo, &cp)
		}
	}
	a.mu.Unlock()
	sort.Slice(todo, func(i, j int) bool { return todo[i].FirstSeen.Before(todo[j].FirstSeen) })
	left := 0
	for _, d := range todo {
		if a.cfg.Risk == nil {
			left++
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := a.cfg.Risk.ReportAlert(rctx, &riskv1.ReportAlertRequest{Alert: a.alertFor(d)})
		cancel()
		switch status.Code(err) {
		case codes.OK:
			a.log.Info("alert reported", "alert_id", d.AlertID, "path", d.Path)
		case codes.AlreadyExists, codes.InvalidArgument, codes.PermissionDenied:
			a.log.Error("alert refused by the risk service; not retrying", "alert_id", d.AlertID, "err", err)
		default:
			a.log.Warn("reporting alert failed, will retry", "alert_id", d.AlertID, "err", err)
			left++
			continue
		}
		a.mu.Lock()
		if cur, ok := a.st.Detections[fileKey(d.Path, d.SHA256)]; ok && cur.AlertID == d.AlertID {
			cur.Reported = true
			a.saveLocked()
		}
		a.mu.Unlock()
	}
	return left
}

func (a *Agent) reportLoop(ctx context.Context) {
	backoff := a.cfg.MinBackoff
	for {
		var retry <-chan time.Time
		if left := a.ReportPending(ctx); left > 0 {
			t := time.NewTimer(jitter(backoff))
			retry = t.C
			backoff = min(backoff*2, a.cfg.MaxBackoff)
		} else {
			backoff = a.cfg.MinBackoff
		}
		select {
		case <-ctx.Done():
			return
		case <-a.reportKick:
		case <-retry:
		}
	}
}

func jitter(d time.Duration) time.Duration { return d/2 + rand.N(d/2+1) }

// --- actions ------------------------------------------------------------------------

// Execute performs one command, unless it was performed before: then its stored
// result is returned again. It never reports a success it did not achieve.
func (a *Agent) Execute(ctx context.Context, cmd *remediationv1.ActionCommand) *remediationv1.ActionResult {
	a.mu.Lock()
	if c, ok := a.st.Completed[cmd.GetActionId()]; ok {
		a.mu.Unlock()
		return resultOf(cmd.GetActionId(), c)
	}
	a.mu.Unlock()
	var c completed
	var err error
	switch cmd.GetType() {
	case remediationv1.ActionType_ACTION_TYPE_QUARANTINE_FILE:
		c.QuarantineID, c.Message, err = a.quarantine(cmd)
	case remediationv1.ActionType_ACTION_TYPE_RESTORE_FILE:
		c.Message, err = a.restore(cmd.GetQuarantineId())
	case remediationv1.ActionType_ACTION_TYPE_KILL_PROCESS:
		c.Message, err = a.killProcess(cmd)
	case remediationv1.ActionType_ACTION_TYPE_RUN_SCAN:
		found, files := a.Scan()
		for _, d := range found {
			c.Findings = append(c.Findings, finding{Path: d.Path, SHA256: d.SHA256, Size: d.Size})
		}
		c.Message = fmt.Sprintf("scanned %d files in %d folders: %d threats", files, len(a.cfg.WatchDirs), len(found))
		kick(a.reportKick)
	default:
		err = failf("unsupported action type %s", cmd.GetType())
	}
	c.Succeeded = err == nil
	if err != nil {
		c.Message = err.Error()
	}
	c.Time = a.now()
	a.mu.Lock()
	a.st.Completed[cmd.GetActionId()] = &c
	a.saveLocked()
	a.mu.Unlock()
	a.log.Info("action performed", "action_id", cmd.GetActionId(), "type", cmd.GetType().String(), "succeeded", c.Succeeded, "message", c.Message)
	return resultOf(cmd.GetActionId(), &c)
}

func resultOf(id string, c *completed) *remediationv1.ActionResult {
	r := &remediationv1.ActionResult{ActionId: id, Message: c.Message, QuarantineId: c.QuarantineID, Status: remediationv1.ActionResultStatus_ACTION_RESULT_STATUS_FAILED}
	if c.Succeeded {
		r.Status = remediationv1.ActionResultStatus_ACTION_RESULT_STATUS_SUCCEEDED
	}
	if len(r.Message) > 4096 {
		r.Message = r.Message[:4096]
	}
	for _, f := range c.Findings {
		r.Findings = append(r.Findings, &commonv1.Evidence{Kind: &commonv1.Evidence_File{File: &commonv1.FileEvidence{Path: f.Path, Sha256: f.SHA256, SizeBytes: f.Size}}})
	}
	return r
}

// executeLoop performs commands one at a time, in arrival order.
func (a *Agent) executeLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case cmd := <-a.cmds:
			r := a.Execute(ctx, cmd)
			a.mu.Lock()
			delete(a.inflight, cmd.GetActionId())
			a.mu.Unlock()
			select {
			case a.results <- r:
			case <-ctx.Done():
				return
			}
		}
	}
}

// command takes a command from the server: a completed one is answered from the
// state, one in progress is ignored (its result will come), a new one is queued.
func (a *Agent) command(ctx context.Context, cmd *remediationv1.ActionCommand) {
	a.mu.Lock()
	c, done := a.st.Completed[cmd.GetActionId()]
	busy := a.inflight[cmd.GetActionId()]
	if !done && !busy {
		a.inflight[cmd.GetActionId()] = true
	}
	a.mu.Unlock()
	switch {
	case done:
		select {
		case a.results <- resultOf(cmd.GetActionId(), c):
		case <-ctx.Done():
		}
	case busy:
	default:
		select {
		case a.cmds <- cmd:
		case <-ctx.Done():
		}
	}
}

// --- connection ---------------------------------------------------------------------

// Connected reports whether the agent has a live Connect stream, and a channel
// closed at the next change.
func (a *Agent) Connected() (bool, <-chan struct{}) {
	a.connMu.Lock()
	defer a.connMu.Unlock()
	return a.connected, a.connCh
}

func (a *Agent) setConnected(v bool) {
	a.connMu.Lock()
	defer a.connMu.Unlock()
	if a.connected != v {
		a.connected = v
		close(a.connCh)
		a.connCh = make(chan struct{})
	}
}

func (a *Agent) connectLoop(ctx context.Context) {
	backoff := a.cfg.MinBackoff
	for {
		acked, err := a.session(ctx)
		a.setConnected(false)
		if ctx.Err() != nil {
			return
		}
		if acked {
			backoff = a.cfg.MinBackoff
		}
		d := jitter(backoff)
		a.log.Warn("remediation connection lost, reconnecting", "err", err, "backoff", d)
		backoff = min(backoff*2, a.cfg.MaxBackoff)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// session runs one Connect stream until it fails.
func (a *Agent) session(ctx context.Context) (acked bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := a.cfg.Remediation.Connect(ctx)
	if err != nil {
		return false, err
	}
	if err := stream.Send(&remediationv1.ConnectRequest{Kind: &remediationv1.ConnectRequest_Hello{Hello: &remediationv1.AgentHello{
		DeviceId: a.cfg.DeviceID, AgentVersion: Version, Hostname: a.cfg.Hostname, DetectionRoots: a.cfg.WatchDirs,
	}}}); err != nil {
		return false, err
	}
	first, err := stream.Recv()
	if err != nil {
		return false, err
	}
	interval := 10 * time.Second
	if ack := first.GetAck(); ack != nil && ack.GetHeartbeatInterval().AsDuration() > 0 {
		interval = ack.GetHeartbeatInterval().AsDuration()
	}
	a.setConnected(true)
	a.log.Info("connected to the remediation service", "heartbeat_interval", interval)
	if cmd := first.GetCommand(); cmd != nil {
		a.command(ctx, cmd)
	}
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			if cmd := m.GetCommand(); cmd != nil {
				a.command(ctx, cmd)
			}
		}
	}()
	hb := time.NewTicker(interval)
	defer hb.Stop()
	for {
		select {
		case err := <-recvErr:
			return true, err
		case <-hb.C:
			if err := stream.Send(&remediationv1.ConnectRequest{Kind: &remediationv1.ConnectRequest_Heartbeat{Heartbeat: &remediationv1.AgentHeartbeat{Time: timestamppb.New(a.now())}}}); err != nil {
				return true, err
			}
		case r := <-a.results:
			if err := stream.Send(&remediationv1.ConnectRequest{Kind: &remediationv1.ConnectRequest_Result{Result: r}}); err != nil {
				// The server re-sends the command when we reconnect, and the
				// stored result is reported again.
				return true, err
			}
		}
	}
}
