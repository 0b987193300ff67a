package remediation

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ReporterKind is how an alert's reporter was authenticated (numbers as in the proto
// condaccess.risk.v1.ReporterKind).
type ReporterKind int32

// Reporter kinds.
const (
	ReporterUnspecified ReporterKind = 0
	ReporterDevice      ReporterKind = 1
	ReporterSensor      ReporterKind = 2
	ReporterAdmin       ReporterKind = 3
	ReporterService     ReporterKind = 4
	ReporterDevelopment ReporterKind = 5
)

// Reporter is the authenticated reporter of an alert, as the risk service recorded it.
type Reporter struct {
	Kind ReporterKind
	ID   string
}

// ownEvidence reports whether the alert was reported by its device's own identity.
func (a *Alert) ownEvidence() bool {
	return a.Reporter.Kind == ReporterDevice && a.Reporter.ID != "" && a.Reporter.ID == a.DeviceID
}

// provenance is whether the automation may act on one piece of evidence without an
// administrator: eligible when it may; otherwise reason says why not, and
// waitsForRoots when only the agent's detection roots are missing to decide.
type provenance struct {
	eligible      bool
	waitsForRoots bool
	reason        string
}

// provenanceOf decides whether evidence e of alert a may be acted on automatically:
// only a file the device reported itself, named by SHA-256, under one of the
// device's agent's detection roots. A process is never killed automatically.
func provenanceOf(a *Alert, e Evidence, roots []string, rootsKnown bool) provenance {
	if e.File == nil {
		return provenance{reason: "killing a process always waits for approval: a process is not pinned by a file hash under the agent's detection roots"}
	}
	if !a.ownEvidence() {
		return provenance{reason: "evidence reported by " + describeReporter(a) + ", not by the device's own identity"}
	}
	if !isSHA256(e.File.SHA256) {
		return provenance{reason: "the file is not named by its SHA-256"}
	}
	if !rootsKnown {
		return provenance{waitsForRoots: true, reason: "the device's agent has not reported its detection roots yet"}
	}
	for _, r := range roots {
		if underRoot(e.File.Path, r) {
			return provenance{eligible: true}
		}
	}
	return provenance{reason: fmt.Sprintf("%s lies outside the agent's detection roots", e.File.Path)}
}

func describeReporter(a *Alert) string {
	switch a.Reporter.Kind {
	case ReporterDevice:
		return fmt.Sprintf("the identity of device %q", a.Reporter.ID)
	case ReporterSensor:
		return fmt.Sprintf("the static sensor %q", a.Reporter.ID)
	case ReporterAdmin:
		return fmt.Sprintf("the administrator %q", a.Reporter.ID)
	case ReporterService:
		return fmt.Sprintf("the service %q", a.Reporter.ID)
	case ReporterDevelopment:
		return "an unauthenticated development-mode caller"
	}
	return "an unknown reporter"
}

// underRoot reports whether path lies strictly under root. Both must be clean absolute
// paths, POSIX ("/a/b") or Windows ("C:\a\b", compared case-insensitively); a path
// with "." or ".." elements, or a root that is a whole file system ("/", "C:\"), is
// never under anything.
func underRoot(path, root string) bool {
	sep, fold := "/", false
	switch {
	case strings.HasPrefix(root, "/") && strings.HasPrefix(path, "/"):
	case isWindowsAbs(root) && isWindowsAbs(path):
		sep, fold = `\`, true
	default:
		return false
	}
	if !cleanAbs(path, sep) || !cleanAbs(root, sep) {
		return false
	}
	root = strings.TrimSuffix(root, sep)
	if root == "" || (sep == `\` && len(root) == 2) {
		return false // "/" or "C:\": a whole file system
	}
	if fold {
		path, root = strings.ToLower(path), strings.ToLower(root)
	}
	return strings.HasPrefix(path, root+sep) && len(path) > len(root)+1
}

func isWindowsAbs(p string) bool {
	return len(p) >= 3 && p[1] == ':' && p[2] == '\\' && ((p[0] >= 'a' && p[0] <= 'z') || (p[0] >= 'A' && p[0] <= 'Z'))
}

// cleanAbs reports whether p has no empty, "." or ".." element (a trailing separator
// aside) and, on Windows, no "/".
func cleanAbs(p, sep string) bool {
	if sep == `\` {
		if strings.Contains(p, "/") {
			return false
		}
		p = p[2:]
	}
	parts := strings.Split(strings.TrimSuffix(p, sep), sep)
	for i, s := range parts {
		if i == 0 {
			continue // before the leading separator
		}
		if s == "" || s == "." || s == ".." {
			return false
		}
	}
	return true
}

// approvalReason says why a proposed action waits for approval: its provenance first
// (the security reason), then the automation level, then the verdict.
func approvalReason(p provenance, level Level, verdict Verdict) string {
	switch {
	case !p.eligible:
		return p.reason
	case level != LevelFull:
		return "automation level " + level.String() + ": every action waits for approval"
	case verdict != VerdictMalicious:
		return "the evidence is only suspicious"
	}
	return ""
}

// agentRoots returns the detection roots the device's agent reported in its last
// hello (nil when it never said hello): the live connection's, else the stored ones.
func (s *Service) agentRoots(ctx context.Context, deviceID string) (*[]string, error) {
	s.mu.Lock()
	c := s.conns[deviceID]
	s.mu.Unlock()
	if c != nil {
		roots := append([]string{}, c.hello.DetectionRoots...)
		return &roots, nil
	}
	ag, err := s.store.Agent(ctx, deviceID)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	roots := append([]string{}, ag.DetectionRoots...)
	return &roots, nil
}

// decideOnRoots decides the device's actions that wait for its agent's detection
// roots, once they are known: the own evidence under a root runs (FULL automation,
// malicious verdict) or waits for the level's or verdict's reason; any other waits
// for approval because it lies outside the roots.
func (s *Service) decideOnRoots(ctx context.Context, deviceID string) error {
	roots, err := s.agentRoots(ctx, deviceID)
	if err != nil || roots == nil {
		return err
	}
	waiting, err := s.store.DeviceActions(ctx, deviceID, ActionStatePendingApproval)
	if err != nil {
		return err
	}
	waiting = slices.DeleteFunc(waiting, func(a *Action) bool { return !a.WaitsForRoots })
	if len(waiting) == 0 {
		return nil
	}
	return s.update(ctx, func(tx Tx, c *committed) error {
		now := s.now()
		touched := map[string]bool{}
		for _, w := range waiting {
			a, err := tx.Action(w.ID)
			if err != nil {
				return err
			}
			if a.State != ActionStatePendingApproval || !a.WaitsForRoots || a.Target.File == nil {
				continue
			}
			inv, err := tx.Investigation(a.InvestigationID)
			if err != nil {
				return err
			}
			a.WaitsForRoots, a.UpdateTime = false, now
			under := slices.ContainsFunc(*roots, func(r string) bool { return underRoot(a.Target.File.Path, r) })
			if !under {
				a.ApprovalReason = fmt.Sprintf("%s lies outside the agent's detection roots", a.Target.File.Path)
			} else {
				a.AutoEligible = true
				verdict := VerdictUnspecified
				for _, ev := range inv.Evidence {
					if ev.Evidence.Key() == a.Target.Key() {
						verdict = ev.Verdict
					}
				}
				a.ApprovalReason = approvalReason(provenance{eligible: true}, inv.Level, verdict)
				if inv.State.Open() && a.ApprovalReason == "" {
					a.State, a.ApprovalExpireTime = ActionStateQueued, time.Time{}
				}
			}
			if err := s.putAction(ctx, tx, c, a); err != nil {
				return err
			}
			touched[a.InvestigationID] = true
		}
		for id := range touched {
			if err := s.settleOf(ctx, tx, c, id); err != nil {
				return err
			}
		}
		return nil
	})
}
