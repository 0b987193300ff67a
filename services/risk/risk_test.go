package risk

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLevelOf(t *testing.T) {
	tests := []struct {
		name   string
		active []ActiveAlert
		want   Level
	}{
		{"none", nil, LevelNone},
		{"informational only", []ActiveAlert{{ID: "i", Severity: SeverityInformational}}, LevelNone},
		{"low", []ActiveAlert{{ID: "l", Severity: SeverityLow}, {ID: "i", Severity: SeverityInformational}}, LevelLow},
		{"highest wins", []ActiveAlert{{ID: "l", Severity: SeverityLow}, {ID: "h", Severity: SeverityHigh}, {ID: "m", Severity: SeverityMedium}}, LevelHigh},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := LevelOf(tt.active); got != tt.want {
				t.Errorf("LevelOf = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSortActive(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	as := []ActiveAlert{
		{ID: "l", Severity: SeverityLow, DetectTime: t0},
		{ID: "m-late", Severity: SeverityMedium, DetectTime: t0.Add(time.Minute)},
		{ID: "h", Severity: SeverityHigh, DetectTime: t0.Add(time.Hour)},
		{ID: "m-b", Severity: SeverityMedium, DetectTime: t0},
		{ID: "m-a", Severity: SeverityMedium, DetectTime: t0},
	}
	SortActive(as)
	var ids []string
	for _, a := range as {
		ids = append(ids, a.ID)
	}
	if got, want := strings.Join(ids, " "), "h m-a m-b m-late l"; got != want {
		t.Errorf("order = %s, want %s", got, want)
	}
}

func TestValidateAlert(t *testing.T) {
	ok := func() Alert {
		return Alert{ID: "a", DeviceID: "d", Severity: SeverityHigh, Title: "t",
			Evidence: []Evidence{{File: &FileEvidence{Path: "/x", SHA256: strings.Repeat("AB", 32)}}, {Process: &ProcessEvidence{PID: 1, Name: "x"}}}}
	}
	tests := []struct {
		name   string
		mutate func(a *Alert)
		fields []string
	}{
		{"valid", func(*Alert) {}, nil},
		{"blank title", func(a *Alert) { a.Title = "  " }, []string{"alert.title"}},
		{"bad severity", func(a *Alert) { a.Severity = 9 }, []string{"alert.severity"}},
		{"future detection", func(a *Alert) { a.DetectTime = time.Now().Add(48 * time.Hour) }, []string{"alert.detect_time"}},
		{"file without path or hash", func(a *Alert) { a.Evidence[0].File = &FileEvidence{} }, []string{"alert.evidence[0].file"}},
		{"short hash", func(a *Alert) { a.Evidence[0].File.SHA256 = "abc" }, []string{"alert.evidence[0].file.sha256"}},
		{"negative size", func(a *Alert) { a.Evidence[0].File.SizeBytes = -1 }, []string{"alert.evidence[0].file.size_bytes"}},
		{"negative pid", func(a *Alert) { a.Evidence[1].Process.PID = -1 }, []string{"alert.evidence[1].process.pid"}},
		{"anonymous process", func(a *Alert) { a.Evidence[1].Process = &ProcessEvidence{PID: 3} }, []string{"alert.evidence[1].process"}},
		{"both kinds", func(a *Alert) { a.Evidence[1].File = &FileEvidence{Path: "/y"} }, []string{"alert.evidence[1]"}},
		{"neither kind", func(a *Alert) { a.Evidence = append(a.Evidence, Evidence{}) }, []string{"alert.evidence[2]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := ok()
			tt.mutate(&a)
			err := validateAlert(&a, "alert")
			var got []string
			var ve *ValidationError
			if errors.As(err, &ve) {
				for _, v := range ve.Violations {
					got = append(got, v.Field)
				}
			} else if err != nil {
				t.Fatalf("err = %v, want a *ValidationError", err)
			}
			if diff := cmp.Diff(tt.fields, got); diff != "" {
				t.Errorf("violations (-want +got):\n%s", diff)
			}
			if err == nil && a.Evidence[0].File.SHA256 != strings.Repeat("ab", 32) {
				t.Errorf("sha256 not normalised to lowercase: %s", a.Evidence[0].File.SHA256)
			}
		})
	}
}

// TestValidateAlertLeavesInput: normalising hashes never writes through to the
// caller's evidence slice or structs.
func TestValidateAlertLeavesInput(t *testing.T) {
	upper := strings.Repeat("AB", 32)
	in := []Evidence{
		{File: &FileEvidence{Path: "/x", SHA256: strings.Repeat("cd", 32)}}, // already lowercase
		{File: &FileEvidence{Path: "/y", SHA256: upper}},
		{Process: &ProcessEvidence{Name: "x", ImageSHA256: upper}},
	}
	orig := []Evidence{{File: &FileEvidence{}}, {File: &FileEvidence{}}, {Process: &ProcessEvidence{}}}
	for i := range in {
		orig[i] = in[i]
		if in[i].File != nil {
			f := *in[i].File
			orig[i].File = &f
		} else {
			p := *in[i].Process
			orig[i].Process = &p
		}
	}
	ptrs := []*FileEvidence{in[0].File, in[1].File}
	a := Alert{ID: "a", DeviceID: "d", Severity: SeverityHigh, Title: "t", Evidence: in}
	if err := validateAlert(&a, "alert"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(orig, in); diff != "" {
		t.Errorf("caller's evidence changed (-before +after):\n%s", diff)
	}
	if in[0].File != ptrs[0] || in[1].File != ptrs[1] {
		t.Error("caller's evidence slice changed")
	}
	want := []string{strings.Repeat("cd", 32), strings.Repeat("ab", 32), strings.Repeat("ab", 32)}
	got := []string{a.Evidence[0].File.SHA256, a.Evidence[1].File.SHA256, a.Evidence[2].Process.ImageSHA256}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("normalised hashes (-want +got):\n%s", diff)
	}
}

func BenchmarkValidateAlert(b *testing.B) {
	in := Alert{ID: "a", DeviceID: "d", Severity: SeverityHigh, Title: "t",
		Evidence: []Evidence{{File: &FileEvidence{Path: "/x", SHA256: strings.Repeat("ab", 32)}}, {Process: &ProcessEvidence{PID: 1, Name: "x"}}}}
	b.ReportAllocs()
	for b.Loop() {
		a := in
		if err := validateAlert(&a, "alert"); err != nil {
			b.Fatal(err)
		}
	}
}

// TestInsertActive: inserting into a sorted set equals appending and sorting, the
// input is not modified, and an alert of the same id is replaced.
func TestInsertActive(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(7, 8))
	for i := range 500 {
		var as []ActiveAlert
		for j := range rng.IntN(6) {
			as = append(as, ActiveAlert{ID: fmt.Sprint("a", j), Severity: Severity(2 + rng.IntN(3)), DetectTime: base.Add(time.Duration(rng.IntN(3)) * time.Second)})
		}
		SortActive(as)
		before := slices.Clone(as)
		a := ActiveAlert{ID: fmt.Sprint("a", rng.IntN(8)), Severity: Severity(2 + rng.IntN(3)), DetectTime: base.Add(time.Duration(rng.IntN(3)) * time.Second)}
		var want []ActiveAlert
		for _, x := range as {
			if x.ID != a.ID {
				want = append(want, x)
			}
		}
		want = append(want, a)
		SortActive(want)
		got := InsertActive(as, a)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("case %d: InsertActive(%v, %v) (-want +got):\n%s", i, as, a, diff)
		}
		if diff := cmp.Diff(before, as); diff != "" {
			t.Fatalf("case %d: input modified:\n%s", i, diff)
		}
	}
}
