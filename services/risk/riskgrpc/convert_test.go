package riskgrpc

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/services/risk"
)

// encodeEventProto is EncodeEvent through the generated messages and proto.Marshal:
// the reference EncodeEvent must agree with.
func encodeEventProto(e risk.Event) ([]byte, error) {
	ev := &riskv1.RiskEvent{
		EventTime:    ts(e.Time),
		TraceContext: &commonv1.TraceContext{Traceparent: e.TraceParent, Tracestate: e.TraceState},
	}
	switch {
	case e.Alert != nil:
		ev.Payload = &riskv1.RiskEvent_AlertChanged{AlertChanged: &riskv1.AlertChanged{
			Type: riskv1.AlertChangeType(e.Alert.Type), Alert: alertToProto(&e.Alert.Alert)}}
	case e.Risk != nil:
		ev.Payload = &riskv1.RiskEvent_DeviceRiskChanged{DeviceRiskChanged: &riskv1.DeviceRiskChanged{
			DeviceRisk: riskToProto(&e.Risk.Risk), PreviousLevel: commonv1.RiskLevel(e.Risk.PreviousLevel),
			CauseAlertId: e.Risk.CauseAlertID}}
	}
	return proto.Marshal(ev)
}

// eventFields are the fields EncodeEvent writes, by message: a field added to one of
// these messages fails TestEventFields until EncodeEvent (and this list) handle it.
var eventFields = map[protoreflect.FullName][]protoreflect.FieldNumber{
	"condaccess.risk.v1.RiskEvent":         {1, 2, 3, 4, 5}, // revision (1) is set by the watcher
	"condaccess.common.v1.TraceContext":    {1, 2},
	"condaccess.risk.v1.AlertChanged":      {1, 2},
	"condaccess.risk.v1.DeviceRiskChanged": {1, 2, 3},
	"condaccess.risk.v1.DeviceRisk":        {1, 2, 3, 4, 5},
	"condaccess.risk.v1.Alert":             {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22},
	"condaccess.risk.v1.AlertReporter":     {1, 2},
	"condaccess.risk.v1.AlertComment":      {1, 2, 3},
	"condaccess.common.v1.Evidence":        {1, 2},
	"condaccess.common.v1.FileEvidence":    {1, 2, 3},
	"condaccess.common.v1.ProcessEvidence": {1, 2, 3, 4},
	"google.protobuf.Timestamp":            {1, 2},
}

func TestEventFields(t *testing.T) {
	seen := map[protoreflect.FullName]bool{}
	var walk func(md protoreflect.MessageDescriptor)
	walk = func(md protoreflect.MessageDescriptor) {
		if seen[md.FullName()] {
			return
		}
		seen[md.FullName()] = true
		want, ok := eventFields[md.FullName()]
		if !ok {
			t.Errorf("%s: a message EncodeEvent does not write", md.FullName())
			return
		}
		var got []protoreflect.FieldNumber
		fs := md.Fields()
		for i := range fs.Len() {
			got = append(got, fs.Get(i).Number())
			if m := fs.Get(i).Message(); m != nil {
				walk(m)
			}
		}
		slices.Sort(got)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s field numbers (-EncodeEvent writes +descriptor has):\n%s", md.FullName(), diff)
		}
	}
	walk((&riskv1.RiskEvent{}).ProtoReflect().Descriptor())
}

func TestEncodeEvent(t *testing.T) {
	at := time.Date(2026, 11, 27, 9, 30, 0, 123456789, time.UTC)
	full := risk.Alert{
		ID: "a-1", DeviceID: "dev-1", Severity: risk.SeverityHigh, Status: risk.StatusResolved, Category: "Malware",
		Title: "t", Description: strings.Repeat("long ", 100), DetectionSource: "agent", DetectTime: at,
		Evidence: []risk.Evidence{
			{File: &risk.FileEvidence{Path: "/x", SHA256: strings.Repeat("ab", 32), SizeBytes: 1 << 40}},
			{}, // neither: left out, as alertToProto leaves it out
			{Process: &risk.ProcessEvidence{PID: 7, Name: "x", CommandLine: "x -y", ImageSHA256: "cd"}},
		},
		Comments:       []risk.Comment{{Author: "ada", Text: "é 日本", CreateTime: at}, {}},
		Classification: 1, Determination: 2, ResolvedBy: "sec", ResolveTime: at.Add(time.Hour), ResolutionNote: "done",
		AssignedTo: "bob", CreateTime: at, UpdateTime: at, Version: 300, InvestigationID: "inv-1",
		Reporter: risk.Reporter{Kind: risk.ReporterDevice, ID: "dev-1"},
	}
	tests := []struct {
		name string
		e    risk.Event
	}{
		{"empty", risk.Event{}},
		{"alert", risk.Event{Time: at, TraceParent: "00-abc-def-01", TraceState: "k=v", Alert: &risk.AlertChange{Type: risk.ChangeResolved, Alert: full}}},
		{"minimal alert", risk.Event{Time: at, Alert: &risk.AlertChange{Type: risk.ChangeReported, Alert: risk.Alert{ID: "a", DeviceID: "d", Severity: 1, Title: "t"}}}},
		{"pre-1970 and epoch times", risk.Event{Time: time.Unix(0, 0), Alert: &risk.AlertChange{Type: 1, Alert: risk.Alert{ID: "a", DetectTime: time.Date(1969, 1, 1, 0, 0, 0, 5, time.UTC)}}}},
		{"risk", risk.Event{Time: at, TraceParent: "tp", Risk: &risk.RiskChange{
			Risk:          risk.DeviceRisk{DeviceID: "dev-1", Level: risk.LevelHigh, Active: []risk.ActiveAlert{{ID: "a"}, {ID: "b"}}, UpdateTime: at, Revision: 9},
			PreviousLevel: risk.LevelUnspecified, CauseAlertID: "a"}}},
		{"reporter kind only", risk.Event{Time: at, Alert: &risk.AlertChange{Type: 1, Alert: risk.Alert{ID: "a", Reporter: risk.Reporter{Kind: risk.ReporterDevelopment}}}}},
		{"risk without device", risk.Event{Time: at, Risk: &risk.RiskChange{PreviousLevel: risk.LevelLow, CauseAlertID: "a"}}},
		// Embedded messages longer than 127 and 16383 bytes (multi-byte lengths).
		{"long", risk.Event{Time: at, Alert: &risk.AlertChange{Type: 2, Alert: risk.Alert{ID: "a", Description: strings.Repeat("x", 20000),
			Comments: []risk.Comment{{Text: strings.Repeat("y", 200)}}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkEncodeEvent(t, tt.e) })
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 500 {
		t.Run(fmt.Sprint("random-", i), func(t *testing.T) { checkEncodeEvent(t, randomEvent(rng)) })
	}
}

func checkEncodeEvent(t *testing.T, e risk.Event) {
	t.Helper()
	want, err := encodeEventProto(e)
	if err != nil {
		t.Fatal(err)
	}
	got, err := EncodeEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	var wm, gm riskv1.RiskEvent
	if err := proto.Unmarshal(want, &wm); err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(got, &gm); err != nil {
		t.Fatalf("EncodeEvent's bytes do not unmarshal: %v", err)
	}
	if diff := cmp.Diff(&wm, &gm, protocmp.Transform()); diff != "" {
		t.Errorf("EncodeEvent (-proto.Marshal +EncodeEvent):\n%s", diff)
	}
	if len(got) != len(want) {
		t.Errorf("EncodeEvent wrote %d bytes, proto.Marshal %d", len(got), len(want))
	}
}

func randomEvent(rng *rand.Rand) risk.Event {
	str := func() string {
		switch rng.IntN(4) {
		case 0:
			return ""
		case 1:
			return strings.Repeat("é", rng.IntN(300))
		}
		return fmt.Sprint("s", rng.Int64())
	}
	tm := func() time.Time {
		switch rng.IntN(4) {
		case 0:
			return time.Time{}
		case 1:
			return time.Unix(rng.Int64N(1<<40)-1<<39, rng.Int64N(1e9)).UTC()
		}
		return time.Unix(0, rng.Int64()).UTC()
	}
	num := func() int64 {
		if rng.IntN(3) == 0 {
			return 0
		}
		return rng.Int64() - 1<<62
	}
	e := risk.Event{Time: tm(), TraceParent: str(), TraceState: str()}
	if rng.IntN(2) == 0 {
		a := risk.Alert{ID: str(), DeviceID: str(), Severity: risk.Severity(rng.IntN(5)), Status: risk.Status(rng.IntN(4)),
			Category: str(), Title: str(), Description: str(), DetectionSource: str(), DetectTime: tm(),
			Classification: risk.Classification(rng.IntN(4)), Determination: risk.Determination(rng.IntN(4)), ResolvedBy: str(),
			ResolveTime: tm(), ResolutionNote: str(), AssignedTo: str(), CreateTime: tm(), UpdateTime: tm(), Version: num(), InvestigationID: str()}
		for range rng.IntN(4) {
			switch rng.IntN(3) {
			case 0:
				a.Evidence = append(a.Evidence, risk.Evidence{File: &risk.FileEvidence{Path: str(), SHA256: str(), SizeBytes: num()}})
			case 1:
				a.Evidence = append(a.Evidence, risk.Evidence{Process: &risk.ProcessEvidence{PID: num(), Name: str(), CommandLine: str(), ImageSHA256: str()}})
			default:
				a.Evidence = append(a.Evidence, risk.Evidence{})
			}
		}
		for range rng.IntN(3) {
			a.Comments = append(a.Comments, risk.Comment{Author: str(), Text: str(), CreateTime: tm()})
		}
		e.Alert = &risk.AlertChange{Type: risk.ChangeType(rng.IntN(4)), Alert: a}
	} else {
		r := risk.DeviceRisk{DeviceID: str(), Level: risk.Level(rng.IntN(5)), UpdateTime: tm(), Revision: num()}
		for range rng.IntN(4) {
			r.Active = append(r.Active, risk.ActiveAlert{ID: str()})
		}
		e.Risk = &risk.RiskChange{Risk: r, PreviousLevel: risk.Level(rng.IntN(5)), CauseAlertID: str()}
	}
	return e
}

func BenchmarkEncodeEvent(b *testing.B) {
	at := time.Now()
	e := risk.Event{Time: at, TraceParent: "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01", Alert: &risk.AlertChange{Type: risk.ChangeReported, Alert: risk.Alert{
		ID: "bench-1", DeviceID: "dev-1", Severity: risk.SeverityHigh, Status: risk.StatusNew, Title: "Malicious file opened bench-1",
		DetectTime: at, CreateTime: at, UpdateTime: at, Version: 1,
		Evidence: []risk.Evidence{
			{File: &risk.FileEvidence{Path: `C:\Users\ada\invoice.exe`, SHA256: strings.Repeat("ab", 32)}},
			{Process: &risk.ProcessEvidence{PID: 4242, Name: "invoice.exe", CommandLine: "invoice.exe /s"}},
		}}}}
	for _, bc := range []struct {
		name string
		fn   func(risk.Event) ([]byte, error)
	}{{"protowire", EncodeEvent}, {"proto.Marshal", encodeEventProto}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.fn(e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// alertToProtoRef is the straightforward conversion alertToProto must agree with.
func alertToProtoRef(a *risk.Alert) *riskv1.Alert {
	out := &riskv1.Alert{
		AlertId: a.ID, DeviceId: a.DeviceID, Severity: commonv1.Severity(a.Severity),
		Status: riskv1.AlertStatus(a.Status), Category: a.Category, Title: a.Title,
		Description: a.Description, DetectionSource: a.DetectionSource, DetectTime: ts(a.DetectTime),
		Classification: riskv1.AlertClassification(a.Classification),
		Determination:  riskv1.AlertDetermination(a.Determination),
		ResolvedBy:     a.ResolvedBy, ResolveTime: ts(a.ResolveTime), ResolutionComment: a.ResolutionNote,
		AssignedTo: a.AssignedTo, CreateTime: ts(a.CreateTime), UpdateTime: ts(a.UpdateTime),
		Etag: fmt.Sprint(a.Version), InvestigationId: a.InvestigationID,
	}
	for _, e := range a.Evidence {
		switch {
		case e.File != nil:
			out.Evidence = append(out.Evidence, &commonv1.Evidence{Kind: &commonv1.Evidence_File{File: &commonv1.FileEvidence{
				Path: e.File.Path, Sha256: e.File.SHA256, SizeBytes: e.File.SizeBytes}}})
		case e.Process != nil:
			out.Evidence = append(out.Evidence, &commonv1.Evidence{Kind: &commonv1.Evidence_Process{Process: &commonv1.ProcessEvidence{
				Pid: e.Process.PID, Name: e.Process.Name, CommandLine: e.Process.CommandLine, ImageSha256: e.Process.ImageSHA256}}})
		}
	}
	for _, c := range a.Comments {
		out.Comments = append(out.Comments, &riskv1.AlertComment{Author: c.Author, Text: c.Text, CreateTime: ts(c.CreateTime)})
	}
	return out
}

// TestAlertConversions: alertToProto agrees with the straightforward conversion, and
// alertFromProto takes back the reported fields, for random alerts.
func TestAlertConversions(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 300 {
		e := randomEvent(rng)
		if e.Alert == nil {
			continue
		}
		a := &e.Alert.Alert
		got := alertToProto(a)
		if diff := cmp.Diff(alertToProtoRef(a), got, protocmp.Transform()); diff != "" {
			t.Fatalf("alert %d: alertToProto (-ref +got):\n%s", i, diff)
		}
		back := alertFromProto(got)
		want := risk.Alert{ID: a.ID, DeviceID: a.DeviceID, Severity: a.Severity, Category: a.Category, Title: a.Title,
			Description: a.Description, DetectionSource: a.DetectionSource, AssignedTo: a.AssignedTo, DetectTime: a.DetectTime}
		for _, e := range a.Evidence {
			if e.File != nil || e.Process != nil {
				want.Evidence = append(want.Evidence, e)
			}
		}
		if diff := cmp.Diff(want, back); diff != "" {
			t.Fatalf("alert %d: alertFromProto (-want +got):\n%s", i, diff)
		}
	}
}

func BenchmarkAlertToProto(b *testing.B) {
	at := time.Now()
	a := risk.Alert{ID: "bench-1", DeviceID: "dev-1", Severity: risk.SeverityHigh, Status: risk.StatusNew, Title: "t",
		DetectTime: at, CreateTime: at, UpdateTime: at, Version: 1,
		Evidence: []risk.Evidence{
			{File: &risk.FileEvidence{Path: `C:\Users\ada\invoice.exe`, SHA256: strings.Repeat("ab", 32)}},
			{Process: &risk.ProcessEvidence{PID: 4242, Name: "invoice.exe", CommandLine: "invoice.exe /s"}},
		}}
	for _, bc := range []struct {
		name string
		fn   func(*risk.Alert) *riskv1.Alert
	}{{"grouped", alertToProto}, {"ref", alertToProtoRef}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				bc.fn(&a)
			}
		})
	}
}
