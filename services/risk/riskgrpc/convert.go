package riskgrpc

import (
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/services/risk"
)

// This file holds every proto <-> domain conversion of the risk service.

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func fromTS(t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.AsTime()
}

// alertFromProto takes the fields a sensor reports; output-only fields are ignored.
func alertFromProto(a *riskv1.Alert) risk.Alert {
	out := risk.Alert{
		ID: a.GetAlertId(), DeviceID: a.GetDeviceId(), Severity: risk.Severity(a.GetSeverity()),
		Category: a.GetCategory(), Title: a.GetTitle(), Description: a.GetDescription(),
		DetectionSource: a.GetDetectionSource(), AssignedTo: a.GetAssignedTo(),
	}
	if a.GetDetectTime() != nil {
		out.DetectTime = fromTS(a.GetDetectTime())
	}
	if evs := a.GetEvidence(); len(evs) > 0 {
		// The evidence structs in one allocation, the slice in another.
		out.Evidence = make([]risk.Evidence, len(evs))
		kinds := make([]struct {
			f risk.FileEvidence
			p risk.ProcessEvidence
		}, len(evs))
		for i, e := range evs {
			switch k := e.GetKind().(type) {
			case *commonv1.Evidence_File:
				f := k.File
				kinds[i].f = risk.FileEvidence{Path: f.GetPath(), SHA256: f.GetSha256(), SizeBytes: f.GetSizeBytes()}
				out.Evidence[i].File = &kinds[i].f
			case *commonv1.Evidence_Process:
				p := k.Process
				kinds[i].p = risk.ProcessEvidence{PID: p.GetPid(), Name: p.GetName(), CommandLine: p.GetCommandLine(), ImageSHA256: p.GetImageSha256()}
				out.Evidence[i].Process = &kinds[i].p
			}
		}
	}
	return out
}

// alertToProto converts an alert for a response, in few allocations: the message
// and its timestamps in one, each kind of evidence in one, the comments in one.
func alertToProto(a *risk.Alert) *riskv1.Alert {
	m := &struct {
		a                               riskv1.Alert
		detect, resolve, create, update timestamppb.Timestamp
	}{}
	out := &m.a
	*out = riskv1.Alert{
		AlertId: a.ID, DeviceId: a.DeviceID, Severity: commonv1.Severity(a.Severity),
		Status: riskv1.AlertStatus(a.Status), Category: a.Category, Title: a.Title,
		Description: a.Description, DetectionSource: a.DetectionSource, DetectTime: tsIn(&m.detect, a.DetectTime),
		Classification: riskv1.AlertClassification(a.Classification),
		Determination:  riskv1.AlertDetermination(a.Determination),
		ResolvedBy:     a.ResolvedBy, ResolveTime: tsIn(&m.resolve, a.ResolveTime), ResolutionComment: a.ResolutionNote,
		AssignedTo: a.AssignedTo, CreateTime: tsIn(&m.create, a.CreateTime), UpdateTime: tsIn(&m.update, a.UpdateTime),
		Etag: a.Etag(), InvestigationId: a.InvestigationID,
	}
	if a.Reporter != (risk.Reporter{}) {
		out.Reporter = &riskv1.AlertReporter{Kind: riskv1.ReporterKind(a.Reporter.Kind), Id: a.Reporter.ID}
	}
	if len(a.Evidence) > 0 {
		var nf, np int
		for _, e := range a.Evidence {
			switch {
			case e.File != nil:
				nf++
			case e.Process != nil:
				np++
			}
		}
		out.Evidence = make([]*commonv1.Evidence, 0, nf+np)
		files := make([]struct {
			e commonv1.Evidence
			k commonv1.Evidence_File
			f commonv1.FileEvidence
		}, nf)
		procs := make([]struct {
			e commonv1.Evidence
			k commonv1.Evidence_Process
			p commonv1.ProcessEvidence
		}, np)
		for _, e := range a.Evidence {
			switch {
			case e.File != nil:
				x := &files[0]
				files = files[1:]
				x.f.Path, x.f.Sha256, x.f.SizeBytes = e.File.Path, e.File.SHA256, e.File.SizeBytes
				x.k.File = &x.f
				x.e.Kind = &x.k
				out.Evidence = append(out.Evidence, &x.e)
			case e.Process != nil:
				x := &procs[0]
				procs = procs[1:]
				x.p.Pid, x.p.Name, x.p.CommandLine, x.p.ImageSha256 = e.Process.PID, e.Process.Name, e.Process.CommandLine, e.Process.ImageSHA256
				x.k.Process = &x.p
				x.e.Kind = &x.k
				out.Evidence = append(out.Evidence, &x.e)
			}
		}
	}
	if len(a.Comments) > 0 {
		out.Comments = make([]*riskv1.AlertComment, len(a.Comments))
		cs := make([]struct {
			c riskv1.AlertComment
			t timestamppb.Timestamp
		}, len(a.Comments))
		for i, c := range a.Comments {
			x := &cs[i]
			x.c.Author, x.c.Text, x.c.CreateTime = c.Author, c.Text, tsIn(&x.t, c.CreateTime)
			out.Comments[i] = &x.c
		}
	}
	return out
}

// tsIn is ts writing into dst (nil for the zero time).
func tsIn(dst *timestamppb.Timestamp, t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	dst.Seconds, dst.Nanos = t.Unix(), int32(t.Nanosecond())
	return dst
}

func riskToProto(r *risk.DeviceRisk) *riskv1.DeviceRisk {
	if r.DeviceID == "" {
		return nil
	}
	return &riskv1.DeviceRisk{
		DeviceId: r.DeviceID, Level: commonv1.RiskLevel(r.Level), ActiveAlertIds: r.ActiveIDs(),
		UpdateTime: ts(r.UpdateTime), Revision: r.Revision,
	}
}

func changeToProto(r *risk.DeviceRisk) *riskv1.RiskChange {
	return &riskv1.RiskChange{
		DeviceId: r.DeviceID, Level: commonv1.RiskLevel(r.Level), PreviousLevel: commonv1.RiskLevel(r.PreviousLevel),
		CauseAlertId: r.CauseAlertID, ChangeTime: ts(r.UpdateTime), Revision: r.Revision,
	}
}

// EncodeEvent is risk.Config.Encode: the stored payload is the marshalled RiskEvent
// without its revision (set when the event is sent to a watcher). It writes the wire
// format directly (protowire) from the domain event rather than building the message
// and marshalling it by reflection, which was most of a report's encoding CPU and
// allocations; encodeEventProto is that reference form, and the tests hold the two
// equal and fail when a message it writes gains a field (eventFields).
func EncodeEvent(e risk.Event) ([]byte, error) {
	w := wire{b: make([]byte, 0, 512)}
	w.timestamp(2, e.Time) // RiskEvent.event_time
	tc := w.begin(3)       // RiskEvent.trace_context (always set)
	w.str(1, e.TraceParent)
	w.str(2, e.TraceState)
	w.end(tc)
	switch {
	case e.Alert != nil:
		ac := w.begin(5) // RiskEvent.alert_changed
		w.varint(1, int64(e.Alert.Type))
		w.alert(2, &e.Alert.Alert)
		w.end(ac)
	case e.Risk != nil:
		rc := w.begin(4) // RiskEvent.device_risk_changed
		if r := &e.Risk.Risk; r.DeviceID != "" {
			dr := w.begin(1) // DeviceRiskChanged.device_risk
			w.str(1, r.DeviceID)
			w.varint(2, int64(r.Level))
			for _, a := range r.Active {
				w.tag(3, protowire.BytesType)
				w.b = protowire.AppendString(w.b, a.ID)
			}
			w.timestamp(4, r.UpdateTime)
			w.varint(5, r.Revision)
			w.end(dr)
		}
		w.varint(2, int64(e.Risk.PreviousLevel))
		w.str(3, e.Risk.CauseAlertID)
		w.end(rc)
	}
	return w.b, nil
}

// wire appends protobuf wire format, proto3 style: zero scalars and empty strings are
// left out, as proto.Marshal leaves them out.
type wire struct{ b []byte }

func (w *wire) tag(num protowire.Number, t protowire.Type) { w.b = protowire.AppendTag(w.b, num, t) }

func (w *wire) str(num protowire.Number, s string) {
	if s != "" {
		w.tag(num, protowire.BytesType)
		w.b = protowire.AppendString(w.b, s)
	}
}

func (w *wire) varint(num protowire.Number, v int64) {
	if v != 0 {
		w.tag(num, protowire.VarintType)
		w.b = protowire.AppendVarint(w.b, uint64(v))
	}
}

// begin starts an embedded message field; end(begin(...)) writes its length.
func (w *wire) begin(num protowire.Number) int {
	w.tag(num, protowire.BytesType)
	w.b = append(w.b, 0) // one length byte, widened by end if needed
	return len(w.b)
}

func (w *wire) end(start int) {
	n := len(w.b) - start
	if n < 0x80 {
		w.b[start-1] = byte(n)
		return
	}
	extra := protowire.SizeVarint(uint64(n)) - 1
	w.b = append(w.b, make([]byte, extra)...)
	copy(w.b[start+extra:], w.b[start:start+n])
	protowire.AppendVarint(w.b[:start-1], uint64(n))
}

// timestamp writes a google.protobuf.Timestamp as ts does: nothing for the zero time.
func (w *wire) timestamp(num protowire.Number, t time.Time) {
	if t.IsZero() {
		return
	}
	m := w.begin(num)
	w.varint(1, t.Unix())
	w.varint(2, int64(t.Nanosecond()))
	w.end(m)
}

// alert writes a as alertToProto converts it.
func (w *wire) alert(num protowire.Number, a *risk.Alert) {
	m := w.begin(num)
	w.str(1, a.ID)
	w.str(2, a.DeviceID)
	w.varint(3, int64(a.Severity))
	w.varint(4, int64(a.Status))
	w.str(5, a.Category)
	w.str(6, a.Title)
	w.str(7, a.Description)
	w.str(8, a.DetectionSource)
	w.timestamp(9, a.DetectTime)
	for _, e := range a.Evidence {
		switch {
		case e.File != nil:
			ev := w.begin(10)
			f := w.begin(1)
			w.str(1, e.File.Path)
			w.str(2, e.File.SHA256)
			w.varint(3, e.File.SizeBytes)
			w.end(f)
			w.end(ev)
		case e.Process != nil:
			ev := w.begin(10)
			p := w.begin(2)
			w.varint(1, e.Process.PID)
			w.str(2, e.Process.Name)
			w.str(3, e.Process.CommandLine)
			w.str(4, e.Process.ImageSHA256)
			w.end(p)
			w.end(ev)
		}
	}
	for _, c := range a.Comments {
		cm := w.begin(11)
		w.str(1, c.Author)
		w.str(2, c.Text)
		w.timestamp(3, c.CreateTime)
		w.end(cm)
	}
	w.varint(12, int64(a.Classification))
	w.varint(13, int64(a.Determination))
	w.str(14, a.ResolvedBy)
	w.timestamp(15, a.ResolveTime)
	w.str(16, a.ResolutionNote)
	w.str(17, a.AssignedTo)
	w.timestamp(18, a.CreateTime)
	w.timestamp(19, a.UpdateTime)
	w.str(20, a.Etag())
	w.str(21, a.InvestigationID)
	if a.Reporter != (risk.Reporter{}) {
		r := w.begin(22)
		w.varint(1, int64(a.Reporter.Kind))
		w.str(2, a.Reporter.ID)
		w.end(r)
	}
	w.end(m)
}

// decodeEvent turns a stored event into the RiskEvent a watcher receives.
func decodeEvent(e risk.StoredEvent) (*riskv1.RiskEvent, error) {
	ev := &riskv1.RiskEvent{}
	if err := proto.Unmarshal(e.Payload, ev); err != nil {
		return nil, err
	}
	ev.Revision = e.Revision
	if dr := ev.GetDeviceRiskChanged().GetDeviceRisk(); dr != nil {
		dr.Revision = e.Revision
	}
	return ev, nil
}
