package risk

import (
	"testing"
	"time"
)

// goldenAlert is a reported alert with every content field set.
func goldenAlert() Alert {
	return Alert{
		ID: "a-1", DeviceID: "dev-1", Severity: SeverityHigh, Category: "Malware", Title: "Malicious file opened",
		Description: "invoice.exe ran from a mail attachment", DetectionSource: "condaccess-agent", AssignedTo: "ada",
		DetectTime: time.Date(2026, 11, 27, 9, 30, 0, 123456789, time.UTC),
		Evidence: []Evidence{
			{File: &FileEvidence{Path: `C:\Users\ada\invoice.exe`, SHA256: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", SizeBytes: 4096}},
			{Process: &ProcessEvidence{PID: 4242, Name: "invoice.exe", CommandLine: "invoice.exe /s", ImageSHA256: "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"}},
		},
	}
}

// Hashes of goldenAlert as binaries before version 2 stored them (computed with that
// code): contentHashV1 must keep producing them, or repeats of alerts stored by those
// binaries would become conflicts.
const (
	goldenV1         = "3d476bf2d1aa110fea073e4f662ad3630a6a2fd24578e34097abdbb303939cf9"
	goldenV1NoDetect = "3a6eb287d6f0fce1d23266bb74bc00d0a398a3ec77c0edda64882c8d45a35948"
	// goldenV2 is goldenAlert's version 2 hash (without the "2:" prefix).
	goldenV2 = "97f3b5b8e9b32eb1d63758a7e59035a5d461ec0ba851f02aef0bd3c3e6b11427"
)

func TestContentHashV1Golden(t *testing.T) {
	a := goldenAlert()
	if got, err := contentHashV1(&a); err != nil || got != goldenV1 {
		t.Errorf("contentHashV1 = %q, %v; want %q", got, err, goldenV1)
	}
	a.DetectTime = time.Time{}
	if got, err := contentHashV1(&a); err != nil || got != goldenV1NoDetect {
		t.Errorf("contentHashV1 without detect time = %q, %v; want %q", got, err, goldenV1NoDetect)
	}
}

// TestContentHashV2Golden pins version 2: a change to appendContent would turn every
// repeat of a stored alert into a conflict (add a version instead).
func TestContentHashV2Golden(t *testing.T) {
	a := goldenAlert()
	const want = "2:" + goldenV2
	if got := contentHash(&a); got != want {
		t.Errorf("contentHash = %q, want %q", got, want)
	}
}

// TestContentHashFields: every reported field changes the hash; the id and the
// fields the service sets do not.
func TestContentHashFields(t *testing.T) {
	base := goldenAlert()
	baseHash := contentHash(&base)
	tests := []struct {
		name    string
		mut     func(a *Alert)
		changes bool
	}{
		{"device", func(a *Alert) { a.DeviceID = "dev-2" }, true},
		{"title", func(a *Alert) { a.Title += "!" }, true},
		{"category", func(a *Alert) { a.Category = "" }, true},
		{"description", func(a *Alert) { a.Description = "x" }, true},
		{"detection source", func(a *Alert) { a.DetectionSource = "y" }, true},
		{"assigned to", func(a *Alert) { a.AssignedTo = "bob" }, true},
		{"severity", func(a *Alert) { a.Severity = SeverityLow }, true},
		{"detect time", func(a *Alert) { a.DetectTime = a.DetectTime.Add(time.Nanosecond) }, true},
		{"no detect time", func(a *Alert) { a.DetectTime = time.Time{} }, true},
		{"file path", func(a *Alert) { a.Evidence[0].File.Path = "/x" }, true},
		{"file sha", func(a *Alert) { a.Evidence[0].File.SHA256 = "" }, true},
		{"file size", func(a *Alert) { a.Evidence[0].File.SizeBytes = 1 }, true},
		{"pid", func(a *Alert) { a.Evidence[1].Process.PID = 1 }, true},
		{"process name", func(a *Alert) { a.Evidence[1].Process.Name = "y" }, true},
		{"command line", func(a *Alert) { a.Evidence[1].Process.CommandLine = "y" }, true},
		{"image sha", func(a *Alert) { a.Evidence[1].Process.ImageSHA256 = "" }, true},
		{"evidence order", func(a *Alert) { a.Evidence[0], a.Evidence[1] = a.Evidence[1], a.Evidence[0] }, true},
		{"evidence dropped", func(a *Alert) { a.Evidence = a.Evidence[:1] }, true},
		// Length prefixes: moving bytes between adjacent strings is a change.
		{"title/category boundary", func(a *Alert) { a.Title, a.Category = a.Title+"M", a.Category[1:] }, true},
		{"id", func(a *Alert) { a.ID = "other" }, false},
		{"status and times", func(a *Alert) {
			a.Status, a.Version, a.CreateTime, a.UpdateTime = StatusInProgress, 7, time.Now(), time.Now()
			a.Comments = []Comment{{Author: "x", Text: "y"}}
		}, false},
		{"detect time zone", func(a *Alert) { a.DetectTime = a.DetectTime.In(time.FixedZone("x", 3600)) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := goldenAlert()
			tt.mut(&a)
			got := contentHash(&a)
			if (got != baseHash) != tt.changes {
				t.Errorf("hash changed = %v, want %v", got != baseHash, tt.changes)
			}
		})
	}
}

// TestSameContent: a stored hash of either version is recognised as the same content
// or not.
func TestSameContent(t *testing.T) {
	a := goldenAlert()
	other := goldenAlert()
	other.Severity = SeverityLow
	hash := contentHash(&a)
	otherV1, err := contentHashV1(&other)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		stored string
		want   bool
	}{
		{"v2 same", hash, true},
		{"v2 different", contentHash(&other), false},
		{"v1 same (stored by an older binary)", goldenV1, true},
		{"v1 different", otherV1, false},
		{"garbage", "x", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sameContent(tt.stored, &a, hash)
			if err != nil || got != tt.want {
				t.Errorf("sameContent = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func BenchmarkContentHash(b *testing.B) {
	a := goldenAlert()
	b.ReportAllocs()
	for b.Loop() {
		contentHash(&a)
	}
}

func BenchmarkContentHashV1(b *testing.B) {
	a := goldenAlert()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := contentHashV1(&a); err != nil {
			b.Fatal(err)
		}
	}
}
