package remediationgrpc

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/services/remediation"
)

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// EvidenceToProto converts evidence.
func EvidenceToProto(e remediation.Evidence) *commonv1.Evidence {
	switch {
	case e.File != nil:
		return &commonv1.Evidence{Kind: &commonv1.Evidence_File{File: &commonv1.FileEvidence{Path: e.File.Path, Sha256: e.File.SHA256, SizeBytes: e.File.Size}}}
	case e.Process != nil:
		p := e.Process
		return &commonv1.Evidence{Kind: &commonv1.Evidence_Process{Process: &commonv1.ProcessEvidence{Pid: p.PID, Name: p.Name, CommandLine: p.CommandLine, ImageSha256: p.ImageSHA256}}}
	}
	return nil
}

// EvidenceFromProto converts evidence.
func EvidenceFromProto(e *commonv1.Evidence) remediation.Evidence {
	if f := e.GetFile(); f != nil {
		return remediation.Evidence{File: &remediation.FileEvidence{Path: f.GetPath(), SHA256: f.GetSha256(), Size: f.GetSizeBytes()}}
	}
	if p := e.GetProcess(); p != nil {
		return remediation.Evidence{Process: &remediation.ProcessEvidence{PID: p.GetPid(), Name: p.GetName(), CommandLine: p.GetCommandLine(), ImageSHA256: p.GetImageSha256()}}
	}
	return remediation.Evidence{}
}

func traceToProto(t remediation.TraceContext) *commonv1.TraceContext {
	if t.TraceParent == "" {
		return nil
	}
	return &commonv1.TraceContext{Traceparent: t.TraceParent, Tracestate: t.TraceState}
}

func traceFromProto(t *commonv1.TraceContext) remediation.TraceContext {
	return remediation.TraceContext{TraceParent: t.GetTraceparent(), TraceState: t.GetTracestate()}
}

func actionToProto(a *remediation.Action) *remediationv1.Action {
	if a == nil {
		return nil
	}
	out := &remediationv1.Action{
		ActionId:           a.ID,
		InvestigationId:    a.InvestigationID,
		DeviceId:           a.DeviceID,
		Type:               remediationv1.ActionType(a.Type),
		State:              remediationv1.ActionState(a.State),
		Target:             EvidenceToProto(a.Target),
		UndoOfActionId:     a.UndoOf,
		QuarantineId:       a.QuarantineID,
		Result:             a.Result,
		CreateTime:         ts(a.CreateTime),
		UpdateTime:         ts(a.UpdateTime),
		ApprovalExpireTime: ts(a.ApprovalExpireTime),
		RequestedBy:        a.RequestedBy,
		ApprovalReason:     a.ApprovalReason,
	}
	if ap := a.Approval; ap != nil {
		out.Approval = &remediationv1.Approval{DecidedBy: ap.DecidedBy, DecideTime: ts(ap.Time), Comment: ap.Comment, Approved: ap.Approved}
	}
	return out
}

func actionsToProto(as []*remediation.Action) []*remediationv1.Action {
	out := make([]*remediationv1.Action, len(as))
	for i, a := range as {
		out[i] = actionToProto(a)
	}
	return out
}

func investigationToProto(inv *remediation.Investigation) *remediationv1.Investigation {
	if inv == nil {
		return nil
	}
	out := &remediationv1.Investigation{
		InvestigationId: inv.ID,
		DeviceId:        inv.DeviceID,
		State:           remediationv1.InvestigationState(inv.State),
		AlertIds:        inv.AlertIDs,
		AutomationLevel: remediationv1.AutomationLevel(inv.Level),
		StartedBy:       inv.StartedBy,
		Reason:          inv.Reason,
		CreateTime:      ts(inv.CreateTime),
		UpdateTime:      ts(inv.UpdateTime),
		EndTime:         ts(inv.EndTime),
		TraceContext:    traceToProto(inv.Trace),
		Actions:         actionsToProto(inv.Actions),
	}
	for _, e := range inv.Evidence {
		out.Evidence = append(out.Evidence, &remediationv1.EvidenceVerdict{
			Evidence: EvidenceToProto(e.Evidence), Verdict: remediationv1.Verdict(e.Verdict), AlertId: e.AlertID, Reason: e.Reason,
		})
	}
	return out
}

func settingToProto(s remediation.AutomationSetting) *remediationv1.AutomationLevelSetting {
	return &remediationv1.AutomationLevelSetting{DeviceGroup: s.Group, Level: remediationv1.AutomationLevel(s.Level), UpdateTime: ts(s.UpdateTime), UpdatedBy: s.UpdatedBy}
}

func agentToProto(a *remediation.Agent) *remediationv1.Agent {
	return &remediationv1.Agent{
		DeviceId: a.DeviceID, AgentVersion: a.Version, Hostname: a.Hostname, Health: remediationv1.AgentHealth(a.Health),
		LastHeartbeatTime: ts(a.LastHeartbeat), ConnectTime: ts(a.ConnectTime), DetectionRoots: a.DetectionRoots,
	}
}

func commandToProto(a *remediation.Action) *remediationv1.ActionCommand {
	cmd := &remediationv1.ActionCommand{ActionId: a.ID, Type: remediationv1.ActionType(a.Type), Target: EvidenceToProto(a.Target), QuarantineId: a.QuarantineID}
	// An administrator approved the action, or submitted it (manual actions and
	// undos): the agent may then act outside its detection roots, on this exact path.
	if (a.Approval != nil && a.Approval.Approved) || a.RequestedBy != remediation.Automation {
		cmd.AdminApproved = true
		if a.Type == remediation.ActionQuarantineFile && a.Target.File != nil {
			cmd.ApprovedPath = a.Target.File.Path
		}
	}
	return cmd
}

func resultFromProto(r *remediationv1.ActionResult) remediation.ActionResult {
	out := remediation.ActionResult{
		ActionID: r.GetActionId(), Succeeded: r.GetStatus() == remediationv1.ActionResultStatus_ACTION_RESULT_STATUS_SUCCEEDED,
		Message: r.GetMessage(), QuarantineID: r.GetQuarantineId(),
	}
	for _, f := range r.GetFindings() {
		out.Findings = append(out.Findings, EvidenceFromProto(f))
	}
	return out
}

// EventToProto converts a domain event to the published InvestigationEvent (without
// its revision, which the event log assigns).
func EventToProto(ev remediation.Event) *remediationv1.InvestigationEvent {
	out := &remediationv1.InvestigationEvent{EventTime: ts(ev.Time), TraceContext: traceToProto(ev.Trace)}
	if ev.Action != nil {
		out.Payload = &remediationv1.InvestigationEvent_ActionChanged{ActionChanged: &remediationv1.ActionChanged{Action: actionToProto(ev.Action)}}
	} else {
		out.Payload = &remediationv1.InvestigationEvent_InvestigationChanged{InvestigationChanged: &remediationv1.InvestigationChanged{Investigation: investigationToProto(ev.Investigation)}}
	}
	return out
}

// EncodeEvent is the store's event encoder: a marshalled InvestigationEvent.
func EncodeEvent(ev remediation.Event) ([]byte, error) {
	return proto.Marshal(EventToProto(ev))
}

// AlertFromProto converts a risk alert.
func AlertFromProto(a *riskv1.Alert) *remediation.Alert {
	out := &remediation.Alert{
		ID: a.GetAlertId(), DeviceID: a.GetDeviceId(), Severity: remediation.Severity(a.GetSeverity()), Title: a.GetTitle(),
		Resolved: a.GetStatus() == riskv1.AlertStatus_ALERT_STATUS_RESOLVED,
		Reporter: remediation.Reporter{Kind: remediation.ReporterKind(a.GetReporter().GetKind()), ID: a.GetReporter().GetId()},
	}
	for _, e := range a.GetEvidence() {
		if ev := EvidenceFromProto(e); !ev.IsZero() {
			out.Evidence = append(out.Evidence, ev)
		}
	}
	return out
}

// TraceFromProto converts a trace context.
func TraceFromProto(t *commonv1.TraceContext) remediation.TraceContext { return traceFromProto(t) }

// DecodeChange reads what a replica needs (remediation.Service.Observe) of an
// event payload written by EncodeEvent.
func DecodeChange(payload []byte) (remediation.Change, error) {
	ev := &remediationv1.InvestigationEvent{}
	if err := proto.Unmarshal(payload, ev); err != nil {
		return remediation.Change{}, fmt.Errorf("decode investigation event: %w", err)
	}
	if a := ev.GetActionChanged().GetAction(); a != nil {
		return remediation.Change{ActionID: a.GetActionId(), DeviceID: a.GetDeviceId(), ActionState: remediation.ActionState(a.GetState())}, nil
	}
	return remediation.Change{InvestigationState: remediation.InvestigationState(ev.GetInvestigationChanged().GetInvestigation().GetState())}, nil
}
