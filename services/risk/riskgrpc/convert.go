package riskgrpc

import (
	"time"

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
	for _, e := range a.GetEvidence() {
		switch k := e.GetKind().(type) {
		case *commonv1.Evidence_File:
			f := k.File
			out.Evidence = append(out.Evidence, risk.Evidence{File: &risk.FileEvidence{Path: f.GetPath(), SHA256: f.GetSha256(), SizeBytes: f.GetSizeBytes()}})
		case *commonv1.Evidence_Process:
			p := k.Process
			out.Evidence = append(out.Evidence, risk.Evidence{Process: &risk.ProcessEvidence{PID: p.GetPid(), Name: p.GetName(), CommandLine: p.GetCommandLine(), ImageSHA256: p.GetImageSha256()}})
		default:
			out.Evidence = append(out.Evidence, risk.Evidence{})
		}
	}
	return out
}

func alertToProto(a *risk.Alert) *riskv1.Alert {
	out := &riskv1.Alert{
		AlertId: a.ID, DeviceId: a.DeviceID, Severity: commonv1.Severity(a.Severity),
		Status: riskv1.AlertStatus(a.Status), Category: a.Category, Title: a.Title,
		Description: a.Description, DetectionSource: a.DetectionSource, DetectTime: ts(a.DetectTime),
		Classification: riskv1.AlertClassification(a.Classification),
		Determination:  riskv1.AlertDetermination(a.Determination),
		ResolvedBy:     a.ResolvedBy, ResolveTime: ts(a.ResolveTime), ResolutionComment: a.ResolutionNote,
		AssignedTo: a.AssignedTo, CreateTime: ts(a.CreateTime), UpdateTime: ts(a.UpdateTime),
		Etag: a.Etag(), InvestigationId: a.InvestigationID,
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
// without its revision (set when the event is sent to a watcher).
func EncodeEvent(e risk.Event) ([]byte, error) {
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
