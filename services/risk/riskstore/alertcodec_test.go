package riskstore

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/condaccess/condaccess/services/risk"
)

func fullAlert() risk.Alert {
	at := time.Date(2026, 11, 27, 9, 30, 0, 123456789, time.UTC)
	return risk.Alert{
		ID: "a-1", DeviceID: "dev-1", Severity: risk.SeverityHigh, Status: risk.StatusResolved, Category: "Malware",
		Title: "t", Description: strings.Repeat("long é ", 100), DetectionSource: "agent", DetectTime: at,
		Evidence: []risk.Evidence{
			{File: &risk.FileEvidence{Path: "/x", SHA256: strings.Repeat("ab", 32), SizeBytes: 1 << 40}},
			{Process: &risk.ProcessEvidence{PID: 7, Name: "x", CommandLine: "x -y", ImageSHA256: "cd"}},
			{File: &risk.FileEvidence{}, Process: &risk.ProcessEvidence{PID: -1}},
			{},
		},
		Comments:       []risk.Comment{{Author: "ada", Text: "日本", CreateTime: at}, {}},
		Classification: 1, Determination: 2, ResolvedBy: "sec", ResolveTime: at.Add(time.Hour), ResolutionNote: "done",
		AssignedTo: "bob", CreateTime: time.Date(1969, 7, 20, 20, 17, 0, 1, time.UTC), UpdateTime: at, Version: 300, InvestigationID: "inv-1",
		Reporter: risk.Reporter{Kind: risk.ReporterSensor, ID: "siem-connector"},
	}
}

func randomAlert(rng *rand.Rand) risk.Alert {
	str := func() string {
		if rng.IntN(3) == 0 {
			return ""
		}
		return strings.Repeat("é", rng.IntN(200)) + fmt.Sprint(rng.Int64())
	}
	tm := func() time.Time {
		if rng.IntN(3) == 0 {
			return time.Time{}
		}
		return time.Unix(rng.Int64N(1<<40)-1<<39, rng.Int64N(1e9)).UTC()
	}
	num := func() int64 { return rng.Int64() - 1<<62 }
	a := risk.Alert{ID: str(), DeviceID: str(), Severity: risk.Severity(rng.IntN(5)), Status: risk.Status(rng.IntN(4)),
		Category: str(), Title: str(), Description: str(), DetectionSource: str(), DetectTime: tm(),
		Classification: risk.Classification(rng.IntN(4)), Determination: risk.Determination(rng.IntN(4)), ResolvedBy: str(),
		ResolveTime: tm(), ResolutionNote: str(), AssignedTo: str(), CreateTime: tm(), UpdateTime: tm(), Version: num(), InvestigationID: str(),
		Reporter: risk.Reporter{Kind: risk.ReporterKind(rng.IntN(6)), ID: str()}}
	for range rng.IntN(4) {
		var e risk.Evidence
		if rng.IntN(2) == 0 {
			e.File = &risk.FileEvidence{Path: str(), SHA256: str(), SizeBytes: num()}
		}
		if rng.IntN(2) == 0 {
			e.Process = &risk.ProcessEvidence{PID: num(), Name: str(), CommandLine: str(), ImageSHA256: str()}
		}
		a.Evidence = append(a.Evidence, e)
	}
	for range rng.IntN(3) {
		a.Comments = append(a.Comments, risk.Comment{Author: str(), Text: str(), CreateTime: tm()})
	}
	return a
}

func TestAlertCodecRoundTrip(t *testing.T) {
	alerts := []risk.Alert{fullAlert(), {}}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 300 {
		alerts = append(alerts, randomAlert(rng))
	}
	for i, a := range alerts {
		data := encodeAlert(&a)
		if data[0] != alertBinaryV2 {
			t.Fatalf("alert %d: encoding starts with %#x", i, data[0])
		}
		got, err := decodeAlert(data)
		if err != nil {
			t.Fatalf("alert %d: %v", i, err)
		}
		if diff := cmp.Diff(a, got); diff != "" {
			t.Fatalf("alert %d round trip (-want +got):\n%s", i, diff)
		}
		// Zero times stay zero (ResolveTime's omitzero, ts() leaving them out).
		if a.ResolveTime.IsZero() != got.ResolveTime.IsZero() {
			t.Fatalf("alert %d: ResolveTime zero %v -> %v", i, a.ResolveTime.IsZero(), got.ResolveTime.IsZero())
		}
	}
}

// TestAlertCodecV1: documents written in binary version 1 (before reporters were
// recorded) still decode, with the reporter unspecified.
func TestAlertCodecV1(t *testing.T) {
	a := fullAlert()
	a.Reporter = risk.Reporter{}
	v2 := encodeAlert(&a)
	if tail := v2[len(v2)-2:]; tail[0] != 0 || tail[1] != 0 {
		t.Fatalf("an unspecified reporter encodes as %x, want 0000", tail)
	}
	v1 := append([]byte{alertBinaryV1}, v2[1:len(v2)-2]...)
	got, err := decodeAlert(v1)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a, got); diff != "" {
		t.Errorf("version 1 document (-want +got):\n%s", diff)
	}
	if _, err := decodeAlert(append([]byte{alertBinaryV1}, v2[1:]...)); err == nil {
		t.Error("a version 1 document with a reporter trailer decoded")
	}
}

// TestAlertCodecJSON: documents written as JSON by older binaries still decode.
func TestAlertCodecJSON(t *testing.T) {
	a := fullAlert()
	a.Evidence = a.Evidence[:2] // the shapes validation lets through
	data, err := json.Marshal(&a)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeAlert(data)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a, got); diff != "" {
		t.Errorf("JSON document (-want +got):\n%s", diff)
	}
}

// TestAlertCodecCorrupt: a truncated, extended or unknown document is an error, never
// a panic or a silently wrong alert.
func TestAlertCodecCorrupt(t *testing.T) {
	a := fullAlert()
	data := encodeAlert(&a)
	for n := range len(data) {
		if _, err := decodeAlert(data[:n]); err == nil {
			t.Fatalf("decodeAlert(first %d of %d bytes) succeeded", n, len(data))
		}
	}
	if _, err := decodeAlert(append(data[:len(data):len(data)], 0)); err == nil {
		t.Error("decodeAlert(trailing byte) succeeded")
	}
	if _, err := decodeAlert([]byte{0x7f}); err == nil {
		t.Error("decodeAlert(unknown encoding) succeeded")
	}
	if _, err := decodeAlert([]byte(`{"id":`)); err == nil {
		t.Error("decodeAlert(bad JSON) succeeded")
	}
}

func FuzzDecodeAlert(f *testing.F) {
	a := fullAlert()
	f.Add(encodeAlert(&a))
	f.Add([]byte(`{"id":"x","detect_time":"2026-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := decodeAlert(data)
		if err != nil || len(data) == 0 || (data[0] != alertBinaryV1 && data[0] != alertBinaryV2) {
			return
		}
		// A document that decodes re-encodes to a document that decodes the same.
		again, err := decodeAlert(encodeAlert(&a))
		if err != nil {
			t.Fatalf("re-encoded document: %v", err)
		}
		if diff := cmp.Diff(a, again); diff != "" {
			t.Fatalf("re-encoded document (-first +again):\n%s", diff)
		}
	})
}

func BenchmarkAlertCodec(b *testing.B) {
	a := fullAlert()
	a.Description = "invoice.exe ran from a mail attachment"
	a.Comments = nil
	b.Run("encode=binary", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			encodeAlert(&a)
		}
	})
	b.Run("encode=json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(&a); err != nil {
				b.Fatal(err)
			}
		}
	})
	bin := encodeAlert(&a)
	js, _ := json.Marshal(&a)
	b.Run("decode=binary", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeAlert(bin); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode=json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeAlert(js); err != nil {
				b.Fatal(err)
			}
		}
	})
}
