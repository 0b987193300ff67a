package risk

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// MaxFutureSkew is how far in the future a detect_time may be (sensor clock skew).
const MaxFutureSkew = 24 * time.Hour

// validateAlert checks the rules the proto cannot express (and, defensively, the
// required fields), normalising evidence hashes to lowercase. field prefixes the
// violation paths ("alert" or "alerts[3]").
func validateAlert(a *Alert, field string) error {
	var vs []Violation
	add := func(f, d string) { vs = append(vs, Violation{field + "." + f, d}) }
	if a.ID == "" {
		add("alert_id", "required")
	}
	if a.DeviceID == "" {
		add("device_id", "required")
	}
	if a.Severity < SeverityInformational || a.Severity > SeverityHigh {
		add("severity", "must be SEVERITY_INFORMATIONAL, SEVERITY_LOW, SEVERITY_MEDIUM or SEVERITY_HIGH")
	}
	if strings.TrimSpace(a.Title) == "" {
		add("title", "required")
	}
	if !a.DetectTime.IsZero() && a.DetectTime.After(time.Now().Add(MaxFutureSkew)) {
		add("detect_time", fmt.Sprintf("must not be more than %s in the future", MaxFutureSkew))
	}
	// Evidence hashes are normalised on copies: the caller's slice and structs are
	// not modified (ev is made on the first change), and paths are only formatted for
	// a violation.
	var ev []Evidence
	for i, e := range a.Evidence {
		p := func(sub string) string { return "evidence[" + strconv.Itoa(i) + "]" + sub }
		switch {
		case e.File != nil && e.Process != nil:
			add(p(""), "must be a file or a process, not both")
		case e.File != nil:
			f := e.File
			if sha := strings.ToLower(f.SHA256); sha != f.SHA256 {
				c := *f
				c.SHA256 = sha
				f = &c
			}
			if f.Path == "" && f.SHA256 == "" {
				add(p(".file"), "needs a path or a sha256")
			}
			if f.SHA256 != "" && !isSHA256(f.SHA256) {
				add(p(".file.sha256"), "must be 64 hex digits")
			}
			if f.SizeBytes < 0 {
				add(p(".file.size_bytes"), "must not be negative")
			}
			e.File = f
		case e.Process != nil:
			pr := e.Process
			if sha := strings.ToLower(pr.ImageSHA256); sha != pr.ImageSHA256 {
				c := *pr
				c.ImageSHA256 = sha
				pr = &c
			}
			if pr.PID < 0 {
				add(p(".process.pid"), "must not be negative")
			}
			if pr.Name == "" && pr.CommandLine == "" {
				add(p(".process"), "needs a name or a command_line")
			}
			if pr.ImageSHA256 != "" && !isSHA256(pr.ImageSHA256) {
				add(p(".process.image_sha256"), "must be 64 hex digits")
			}
			e.Process = pr
		default:
			add(p(""), "must be a file or a process")
		}
		if ev == nil && (e.File != a.Evidence[i].File || e.Process != a.Evidence[i].Process) {
			ev = slices.Clone(a.Evidence)
		}
		if ev != nil {
			ev[i] = e
		}
	}
	if ev != nil {
		a.Evidence = ev
	}
	if len(vs) > 0 {
		return &ValidationError{Violations: vs}
	}
	return nil
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
