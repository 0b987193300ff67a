package riskgrpc_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/auth/authtest"
	"github.com/condaccess/condaccess/services/risk/riskgrpc"
	"github.com/condaccess/condaccess/services/risk/risktest"
)

const (
	high   = commonv1.Severity_SEVERITY_HIGH
	medium = commonv1.Severity_SEVERITY_MEDIUM
	low    = commonv1.Severity_SEVERITY_LOW
	info   = commonv1.Severity_SEVERITY_INFORMATIONAL
)

func newAlert(id, device string, sev commonv1.Severity) *riskv1.Alert {
	return &riskv1.Alert{AlertId: id, DeviceId: device, Severity: sev, Title: "Malicious file opened " + id,
		Evidence: []*commonv1.Evidence{
			{Kind: &commonv1.Evidence_File{File: &commonv1.FileEvidence{Path: `C:\Users\ada\invoice.exe`, Sha256: strings.Repeat("ab", 32)}}},
			{Kind: &commonv1.Evidence_Process{Process: &commonv1.ProcessEvidence{Pid: 4242, Name: "invoice.exe", CommandLine: "invoice.exe /s"}}},
		}}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func report(t *testing.T, c riskv1.RiskServiceClient, a *riskv1.Alert) *riskv1.ReportAlertResponse {
	t.Helper()
	res, err := c.ReportAlert(ctxT(t), &riskv1.ReportAlertRequest{Alert: a})
	if err != nil {
		t.Fatalf("ReportAlert(%s): %v", a.GetAlertId(), err)
	}
	return res
}

func resolve(t *testing.T, c riskv1.RiskServiceClient, id string) *riskv1.ResolveAlertResponse {
	t.Helper()
	res, err := c.ResolveAlert(ctxT(t), &riskv1.ResolveAlertRequest{AlertId: id, Classification: riskv1.AlertClassification_ALERT_CLASSIFICATION_TRUE_POSITIVE})
	if err != nil {
		t.Fatalf("ResolveAlert(%s): %v", id, err)
	}
	return res
}

func wantCode(t *testing.T, err error, want codes.Code, reason string) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("code = %v (%v), want %v", got, err, want)
	}
	if reason != "" && apierr.Reason(err) != reason {
		t.Errorf("reason = %q, want %q", apierr.Reason(err), reason)
	}
}

// TestDeviceRiskRule walks one device through the rule: highest active severity,
// informational excluded, NONE when nothing is active.
func TestDeviceRiskRule(t *testing.T) {
	c, _ := risktest.Start(t)
	steps := []struct {
		name       string
		do         func() *riskv1.DeviceRisk
		wantLevel  commonv1.RiskLevel
		wantActive []string
	}{
		{"informational only", func() *riskv1.DeviceRisk { return report(t, c, newAlert("i1", "dev-1", info)).GetDeviceRisk() }, commonv1.RiskLevel_RISK_LEVEL_NONE, nil},
		{"low", func() *riskv1.DeviceRisk { return report(t, c, newAlert("l1", "dev-1", low)).GetDeviceRisk() }, commonv1.RiskLevel_RISK_LEVEL_LOW, []string{"l1"}},
		{"high", func() *riskv1.DeviceRisk { return report(t, c, newAlert("h1", "dev-1", high)).GetDeviceRisk() }, commonv1.RiskLevel_RISK_LEVEL_HIGH, []string{"h1", "l1"}},
		{"medium under high", func() *riskv1.DeviceRisk { return report(t, c, newAlert("m1", "dev-1", medium)).GetDeviceRisk() }, commonv1.RiskLevel_RISK_LEVEL_HIGH, []string{"h1", "m1", "l1"}},
		{"resolve high", func() *riskv1.DeviceRisk { return resolve(t, c, "h1").GetDeviceRisk() }, commonv1.RiskLevel_RISK_LEVEL_MEDIUM, []string{"m1", "l1"}},
		{"resolve informational", func() *riskv1.DeviceRisk { return resolve(t, c, "i1").GetDeviceRisk() }, commonv1.RiskLevel_RISK_LEVEL_MEDIUM, []string{"m1", "l1"}},
		{"resolve medium", func() *riskv1.DeviceRisk { return resolve(t, c, "m1").GetDeviceRisk() }, commonv1.RiskLevel_RISK_LEVEL_LOW, []string{"l1"}},
		{"resolve low", func() *riskv1.DeviceRisk { return resolve(t, c, "l1").GetDeviceRisk() }, commonv1.RiskLevel_RISK_LEVEL_NONE, nil},
	}
	for _, tt := range steps {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.do()
			if got.GetLevel() != tt.wantLevel || !cmp.Equal(got.GetActiveAlertIds(), tt.wantActive, cmp.Comparer(func(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") })) {
				t.Errorf("risk = %v %v, want %v %v", got.GetLevel(), got.GetActiveAlertIds(), tt.wantLevel, tt.wantActive)
			}
			get, err := c.GetDeviceRisk(ctxT(t), &riskv1.GetDeviceRiskRequest{DeviceId: "dev-1"})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(got, get.GetDeviceRisk(), protocmp.Transform()); diff != "" {
				t.Errorf("GetDeviceRisk differs from the response (-resp +get):\n%s", diff)
			}
		})
	}
	hist, err := c.ListDeviceRiskHistory(ctxT(t), &riskv1.ListDeviceRiskHistoryRequest{DeviceId: "dev-1"})
	if err != nil {
		t.Fatal(err)
	}
	var levels []string
	for _, ch := range hist.GetChanges() {
		levels = append(levels, fmt.Sprintf("%s>%s", strings.TrimPrefix(ch.GetPreviousLevel().String(), "RISK_LEVEL_"), strings.TrimPrefix(ch.GetLevel().String(), "RISK_LEVEL_")))
	}
	want := "LOW>NONE MEDIUM>LOW HIGH>MEDIUM LOW>HIGH NONE>LOW UNSPECIFIED>NONE"
	if got := strings.Join(levels, " "); got != want {
		t.Errorf("history = %s, want %s", got, want)
	}
}

func TestReportAlertIdempotent(t *testing.T) {
	h := risktest.StartWith(t, risktest.Options{})
	c := h.Client
	first := report(t, c, newAlert("a-1", "dev-1", high))
	if !first.GetCreated() || first.GetAlert().GetStatus() != riskv1.AlertStatus_ALERT_STATUS_NEW {
		t.Fatalf("first report = %v", first)
	}
	rev := h.Store.Revision()
	again := report(t, c, newAlert("a-1", "dev-1", high))
	if again.GetCreated() {
		t.Error("same report again: created = true")
	}
	if diff := cmp.Diff(first.GetAlert(), again.GetAlert(), protocmp.Transform()); diff != "" {
		t.Errorf("same report again returned another alert (-first +again):\n%s", diff)
	}
	if got := h.Store.Revision(); got != rev {
		t.Errorf("same report again published events: revision %d -> %d", rev, got)
	}
	// Output-only fields are ignored: still the same report.
	withOutput := newAlert("a-1", "dev-1", high)
	withOutput.Status = riskv1.AlertStatus_ALERT_STATUS_RESOLVED
	withOutput.ResolvedBy = "someone"
	if r := report(t, c, withOutput); r.GetCreated() {
		t.Error("report with output-only fields: created = true")
	}
	tests := []struct {
		name   string
		alert  *riskv1.Alert
		code   codes.Code
		reason string
		field  string
	}{
		{"different severity", newAlert("a-1", "dev-1", low), codes.AlreadyExists, riskgrpc.ReasonAlertConflict, ""},
		{"different device", newAlert("a-1", "dev-2", high), codes.AlreadyExists, riskgrpc.ReasonAlertConflict, ""},
		{"missing title", func() *riskv1.Alert { a := newAlert("a-2", "dev-1", high); a.Title = ""; return a }(), codes.InvalidArgument, "", "alert.title"},
		{"bad alert id", newAlert("-bad id", "dev-1", high), codes.InvalidArgument, "", "alert.alert_id"},
		{"no severity", newAlert("a-2", "dev-1", commonv1.Severity_SEVERITY_UNSPECIFIED), codes.InvalidArgument, "", "alert.severity"},
		{"bad sha256", func() *riskv1.Alert {
			a := newAlert("a-2", "dev-1", high)
			a.Evidence[0].GetFile().Sha256 = "xyz"
			return a
		}(), codes.InvalidArgument, apierr.ReasonInvalidArgument, "alert.evidence[0].file.sha256"},
		{"empty evidence", func() *riskv1.Alert {
			a := newAlert("a-2", "dev-1", high)
			a.Evidence = append(a.Evidence, &commonv1.Evidence{})
			return a
		}(), codes.InvalidArgument, apierr.ReasonInvalidArgument, "alert.evidence[2]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.ReportAlert(ctxT(t), &riskv1.ReportAlertRequest{Alert: tt.alert})
			wantCode(t, err, tt.code, tt.reason)
			if tt.field != "" {
				vs := apierr.Violations(err)
				if len(vs) == 0 || vs[0].GetField() != tt.field {
					t.Errorf("violations = %v, want field %s", vs, tt.field)
				}
			}
		})
	}
	if got := h.Store.Revision(); got != rev {
		t.Errorf("refused reports published events: revision %d -> %d", rev, got)
	}
}

func TestReportAlertsBatch(t *testing.T) {
	c, _ := risktest.Start(t)
	report(t, c, newAlert("a-1", "dev-1", high))
	res, err := c.ReportAlerts(ctxT(t), &riskv1.ReportAlertsRequest{Alerts: []*riskv1.Alert{
		newAlert("a-1", "dev-1", high), // same: not created
		newAlert("a-2", "dev-2", medium),
		newAlert("a-1", "dev-1", low), // conflict
		newAlert("a-3", "dev-2", high),
		newAlert("a-3", "dev-2", high), // same within the batch
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := &riskv1.ReportAlertsResponse{Results: []*riskv1.ReportAlertsResult{
		{AlertId: "a-1"},
		{AlertId: "a-2", Created: true},
		{AlertId: "a-1", Error: &riskv1.AlertError{Code: "ALREADY_EXISTS"}},
		{AlertId: "a-3", Created: true},
		{AlertId: "a-3"},
	}}
	if diff := cmp.Diff(want, res, protocmp.Transform(), protocmp.IgnoreFields(&riskv1.AlertError{}, "message")); diff != "" {
		t.Errorf("ReportAlerts (-want +got):\n%s", diff)
	}
	dr, err := c.GetDeviceRisk(ctxT(t), &riskv1.GetDeviceRiskRequest{DeviceId: "dev-2"})
	if err != nil || dr.GetDeviceRisk().GetLevel() != commonv1.RiskLevel_RISK_LEVEL_HIGH {
		t.Errorf("dev-2 risk = %v, %v; want HIGH", dr, err)
	}
	bad := newAlert("a-9", "dev-1", high)
	bad.Evidence[0].GetFile().Sha256 = "nothex"
	_, err = c.ReportAlerts(ctxT(t), &riskv1.ReportAlertsRequest{Alerts: []*riskv1.Alert{newAlert("a-8", "dev-1", high), bad}})
	wantCode(t, err, codes.InvalidArgument, "")
	if vs := apierr.Violations(err); len(vs) != 1 || vs[0].GetField() != "alerts[1].evidence[0].file.sha256" {
		t.Errorf("violations = %v", vs)
	}
	_, err = c.GetAlert(ctxT(t), &riskv1.GetAlertRequest{AlertId: "a-8"})
	wantCode(t, err, codes.NotFound, riskgrpc.ReasonAlertNotFound)
}

func TestAlertLifecycle(t *testing.T) {
	c, _ := risktest.Start(t)
	a := report(t, c, newAlert("a-1", "dev-1", high)).GetAlert()
	ctx := ctxT(t)

	_, err := c.UpdateAlert(ctx, &riskv1.UpdateAlertRequest{AlertId: "a-1", Status: riskv1.AlertStatus_ALERT_STATUS_IN_PROGRESS, Etag: "999"})
	wantCode(t, err, codes.Aborted, riskgrpc.ReasonEtagMismatch)
	up, err := c.UpdateAlert(ctx, &riskv1.UpdateAlertRequest{AlertId: "a-1", Status: riskv1.AlertStatus_ALERT_STATUS_IN_PROGRESS, AssignedTo: "ada", Etag: a.GetEtag()})
	if err != nil {
		t.Fatal(err)
	}
	if up.GetAlert().GetStatus() != riskv1.AlertStatus_ALERT_STATUS_IN_PROGRESS || up.GetAlert().GetAssignedTo() != "ada" || up.GetAlert().GetEtag() == a.GetEtag() {
		t.Errorf("UpdateAlert = %v", up.GetAlert())
	}
	up, err = c.UpdateAlert(ctx, &riskv1.UpdateAlertRequest{AlertId: "a-1", UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"assigned_to"}}})
	if err != nil || up.GetAlert().GetAssignedTo() != "" || up.GetAlert().GetStatus() != riskv1.AlertStatus_ALERT_STATUS_IN_PROGRESS {
		t.Errorf("UpdateAlert(mask assigned_to) = %v, %v", up.GetAlert(), err)
	}
	_, err = c.UpdateAlert(ctx, &riskv1.UpdateAlertRequest{AlertId: "a-1", UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"title"}}})
	wantCode(t, err, codes.InvalidArgument, "")
	com, err := c.AddAlertComment(ctx, &riskv1.AddAlertCommentRequest{AlertId: "a-1", Text: "looking"})
	if err != nil || len(com.GetAlert().GetComments()) != 1 || com.GetAlert().GetComments()[0].GetAuthor() != "dev" {
		t.Errorf("AddAlertComment = %v, %v", com.GetAlert().GetComments(), err)
	}
	if dr, _ := c.GetDeviceRisk(ctx, &riskv1.GetDeviceRiskRequest{DeviceId: "dev-1"}); dr.GetDeviceRisk().GetLevel() != commonv1.RiskLevel_RISK_LEVEL_HIGH {
		t.Errorf("in-progress alert no longer counts: %v", dr)
	}

	res, err := c.ResolveAlert(ctx, &riskv1.ResolveAlertRequest{AlertId: "a-1",
		Classification: riskv1.AlertClassification_ALERT_CLASSIFICATION_FALSE_POSITIVE,
		Determination:  riskv1.AlertDetermination_ALERT_DETERMINATION_NOT_MALICIOUS,
		Comment:        "benign", InvestigationId: "inv-1"})
	if err != nil {
		t.Fatal(err)
	}
	ra := res.GetAlert()
	if ra.GetStatus() != riskv1.AlertStatus_ALERT_STATUS_RESOLVED || ra.GetResolvedBy() != "dev" || ra.GetResolveTime() == nil ||
		ra.GetClassification() != riskv1.AlertClassification_ALERT_CLASSIFICATION_FALSE_POSITIVE ||
		ra.GetDetermination() != riskv1.AlertDetermination_ALERT_DETERMINATION_NOT_MALICIOUS ||
		ra.GetResolutionComment() != "benign" || ra.GetInvestigationId() != "inv-1" || len(ra.GetEvidence()) != 2 {
		t.Errorf("resolved alert = %v", ra)
	}
	if res.GetDeviceRisk().GetLevel() != commonv1.RiskLevel_RISK_LEVEL_NONE {
		t.Errorf("risk after resolve = %v", res.GetDeviceRisk())
	}
	got, err := c.GetAlert(ctx, &riskv1.GetAlertRequest{AlertId: "a-1"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ra, got.GetAlert(), protocmp.Transform()); diff != "" {
		t.Errorf("GetAlert (-resolve +get):\n%s", diff)
	}
	other := report(t, c, newAlert("a-2", "dev-1", low)).GetAlert()
	// A request claiming another resolver is ignored: the resolver is the caller.
	claimed, err := c.ResolveAlert(ctx, &riskv1.ResolveAlertRequest{AlertId: other.GetAlertId(), Classification: riskv1.AlertClassification_ALERT_CLASSIFICATION_TRUE_POSITIVE, ResolvedBy: "carol-the-ciso"})
	if err != nil || claimed.GetAlert().GetResolvedBy() != "dev" {
		t.Errorf("resolved_by with a claimed resolver = %q, %v; want the caller, dev", claimed.GetAlert().GetResolvedBy(), err)
	}

	errs := []struct {
		name   string
		call   func() error
		code   codes.Code
		reason string
	}{
		{"resolve twice", func() error {
			_, err := c.ResolveAlert(ctx, &riskv1.ResolveAlertRequest{AlertId: "a-1", Classification: 1})
			return err
		}, codes.FailedPrecondition, riskgrpc.ReasonAlertResolved},
		{"resolve unknown", func() error {
			_, err := c.ResolveAlert(ctx, &riskv1.ResolveAlertRequest{AlertId: "nope", Classification: 1})
			return err
		}, codes.NotFound, riskgrpc.ReasonAlertNotFound},
		{"resolve without classification", func() error { _, err := c.ResolveAlert(ctx, &riskv1.ResolveAlertRequest{AlertId: "a-1"}); return err }, codes.InvalidArgument, ""},
		{"update resolved", func() error {
			_, err := c.UpdateAlert(ctx, &riskv1.UpdateAlertRequest{AlertId: "a-1", Status: riskv1.AlertStatus_ALERT_STATUS_NEW})
			return err
		}, codes.FailedPrecondition, riskgrpc.ReasonAlertResolved},
		{"update to resolved", func() error {
			_, err := c.UpdateAlert(ctx, &riskv1.UpdateAlertRequest{AlertId: "a-1", Status: riskv1.AlertStatus_ALERT_STATUS_RESOLVED})
			return err
		}, codes.InvalidArgument, ""},
		{"get unknown alert", func() error { _, err := c.GetAlert(ctx, &riskv1.GetAlertRequest{AlertId: "nope"}); return err }, codes.NotFound, riskgrpc.ReasonAlertNotFound},
		{"comment unknown alert", func() error {
			_, err := c.AddAlertComment(ctx, &riskv1.AddAlertCommentRequest{AlertId: "nope", Text: "x"})
			return err
		}, codes.NotFound, riskgrpc.ReasonAlertNotFound},
		{"unknown device", func() error {
			_, err := c.GetDeviceRisk(ctx, &riskv1.GetDeviceRiskRequest{DeviceId: "nope"})
			return err
		}, codes.NotFound, riskgrpc.ReasonDeviceNotFound},
		{"history of unknown device", func() error {
			_, err := c.ListDeviceRiskHistory(ctx, &riskv1.ListDeviceRiskHistoryRequest{DeviceId: "nope"})
			return err
		}, codes.NotFound, riskgrpc.ReasonDeviceNotFound},
		{"bad page token", func() error { _, err := c.ListAlerts(ctx, &riskv1.ListAlertsRequest{PageToken: "%%%"}); return err }, codes.InvalidArgument, riskgrpc.ReasonInvalidPageToken},
		{"bad time range", func() error {
			now := time.Now()
			_, err := c.ListAlerts(ctx, &riskv1.ListAlertsRequest{DetectedAfter: ts(now), DetectedBefore: ts(now.Add(-time.Hour))})
			return err
		}, codes.InvalidArgument, ""},
		{"negative watch start", func() error {
			s, err := c.WatchRiskEvents(ctx, &riskv1.WatchRiskEventsRequest{StartRevision: -1})
			if err == nil {
				_, err = s.Recv()
			}
			return err
		}, codes.InvalidArgument, ""},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) { wantCode(t, tt.call(), tt.code, tt.reason) })
	}
}

func TestListAlertsAndDeviceRisks(t *testing.T) {
	h := risktest.StartWith(t, risktest.Options{})
	c := h.Client
	ctx := ctxT(t)
	base := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	for i := range 6 {
		a := newAlert(fmt.Sprintf("a-%d", i), fmt.Sprintf("dev-%d", i%3), []commonv1.Severity{low, medium, high}[i%3])
		a.DetectTime = ts(base.Add(time.Duration(i) * time.Minute))
		report(t, c, a)
	}
	var got []string
	req := &riskv1.ListAlertsRequest{PageSize: 2, MinSeverity: medium}
	for {
		res, err := c.ListAlerts(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range res.GetAlerts() {
			got = append(got, a.GetAlertId())
		}
		if res.GetNextPageToken() == "" {
			break
		}
		req.PageToken = res.GetNextPageToken()
	}
	if want := "a-5 a-4 a-2 a-1"; strings.Join(got, " ") != want {
		t.Errorf("ListAlerts = %v, want %s", got, want)
	}
	res, err := c.ListAlerts(ctx, &riskv1.ListAlertsRequest{DeviceId: "dev-1", DetectedAfter: ts(base.Add(2 * time.Minute))})
	if err != nil || len(res.GetAlerts()) != 1 || res.GetAlerts()[0].GetAlertId() != "a-4" {
		t.Errorf("ListAlerts(dev-1, after) = %v, %v", res, err)
	}

	list, err := c.ListDeviceRisks(ctx, &riskv1.ListDeviceRisksRequest{MinLevel: commonv1.RiskLevel_RISK_LEVEL_MEDIUM})
	if err != nil {
		t.Fatal(err)
	}
	if list.GetRevision() != h.Store.Revision() || len(list.GetDeviceRisks()) != 2 ||
		list.GetDeviceRisks()[0].GetDeviceId() != "dev-1" || list.GetDeviceRisks()[1].GetDeviceId() != "dev-2" {
		t.Errorf("ListDeviceRisks = %v (store revision %d)", list, h.Store.Revision())
	}
}

// watch collects stream messages on a channel.
func watch(t *testing.T, c riskv1.RiskServiceClient, start int64) (<-chan *riskv1.WatchRiskEventsResponse, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := c.WatchRiskEvents(ctx, &riskv1.WatchRiskEventsRequest{StartRevision: start})
	if err != nil {
		t.Fatal(err)
	}
	msgs, errc := make(chan *riskv1.WatchRiskEventsResponse, 100000), make(chan error, 1)
	go func() {
		for {
			m, err := s.Recv()
			if err != nil {
				errc <- err
				return
			}
			msgs <- m
		}
	}()
	return msgs, errc
}

func nextEvent(t *testing.T, msgs <-chan *riskv1.WatchRiskEventsResponse, errc <-chan error) *riskv1.RiskEvent {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-msgs:
			if ev := m.GetEvent(); ev != nil {
				return ev
			}
		case err := <-errc:
			t.Fatalf("watch ended: %v", err)
		case <-deadline:
			t.Fatal("no event within 10s")
		}
	}
}

func TestWatchReplayAndTail(t *testing.T) {
	h := risktest.StartWith(t, risktest.Options{ProgressInterval: 20 * time.Millisecond})
	c := h.Client
	report(t, c, newAlert("a-1", "dev-1", high))
	resolve(t, c, "a-1")
	msgs, errc := watch(t, c, 0)
	var evs []*riskv1.RiskEvent
	for range 4 {
		evs = append(evs, nextEvent(t, msgs, errc))
	}
	for i, ev := range evs {
		if ev.GetRevision() != int64(i+1) {
			t.Errorf("event %d revision = %d", i, ev.GetRevision())
		}
		if ev.GetTraceContext().GetTraceparent() == "" || ev.GetEventTime() == nil {
			t.Errorf("event %d lacks trace context or time: %v", i, ev)
		}
	}
	if evs[0].GetAlertChanged().GetType() != riskv1.AlertChangeType_ALERT_CHANGE_TYPE_REPORTED ||
		len(evs[0].GetAlertChanged().GetAlert().GetEvidence()) != 2 ||
		evs[1].GetDeviceRiskChanged().GetDeviceRisk().GetLevel() != commonv1.RiskLevel_RISK_LEVEL_HIGH ||
		evs[1].GetDeviceRiskChanged().GetDeviceRisk().GetRevision() != 2 ||
		evs[1].GetDeviceRiskChanged().GetPreviousLevel() != commonv1.RiskLevel_RISK_LEVEL_UNSPECIFIED ||
		evs[2].GetAlertChanged().GetType() != riskv1.AlertChangeType_ALERT_CHANGE_TYPE_RESOLVED ||
		evs[3].GetDeviceRiskChanged().GetDeviceRisk().GetLevel() != commonv1.RiskLevel_RISK_LEVEL_NONE ||
		evs[3].GetDeviceRiskChanged().GetPreviousLevel() != commonv1.RiskLevel_RISK_LEVEL_HIGH {
		t.Errorf("events = %v", evs)
	}
	// Events carry the trace of the request that caused them.
	if evs[0].GetTraceContext().GetTraceparent() != evs[1].GetTraceContext().GetTraceparent() ||
		evs[0].GetTraceContext().GetTraceparent() == evs[2].GetTraceContext().GetTraceparent() {
		t.Errorf("trace contexts: report %q %q, resolve %q", evs[0].GetTraceContext().GetTraceparent(), evs[1].GetTraceContext().GetTraceparent(), evs[2].GetTraceContext().GetTraceparent())
	}
	// Idle: a progress message at the current revision.
	deadline := time.After(10 * time.Second)
	for progress := false; !progress; {
		select {
		case m := <-msgs:
			if p := m.GetProgress(); p != nil {
				progress = true
				if p.GetRevision() != 4 {
					t.Errorf("progress revision = %d, want 4", p.GetRevision())
				}
			} else {
				t.Errorf("unexpected message %v", m)
			}
		case err := <-errc:
			t.Fatal(err)
		case <-deadline:
			t.Fatal("no progress message")
		}
	}
	// Live tail; an idempotent repeat publishes nothing.
	report(t, c, newAlert("a-2", "dev-2", low))
	report(t, c, newAlert("a-2", "dev-2", low))
	report(t, c, newAlert("a-3", "dev-2", low))
	for i, want := range []int64{5, 6, 7} {
		if ev := nextEvent(t, msgs, errc); ev.GetRevision() != want {
			t.Errorf("live event %d revision = %d, want %d", i, ev.GetRevision(), want)
		}
	}
	if got := nextEventOrNone(msgs, 100*time.Millisecond); got != nil {
		t.Errorf("unexpected event after a-3 (same level, no risk event): %v", got)
	}
	// A watch from the middle starts right after it.
	msgs2, errc2 := watch(t, c, 5)
	if ev := nextEvent(t, msgs2, errc2); ev.GetRevision() != 6 {
		t.Errorf("watch from 5 starts at %d", ev.GetRevision())
	}
}

func nextEventOrNone(msgs <-chan *riskv1.WatchRiskEventsResponse, d time.Duration) *riskv1.RiskEvent {
	deadline := time.After(d)
	for {
		select {
		case m := <-msgs:
			if ev := m.GetEvent(); ev != nil {
				return ev
			}
		case <-deadline:
			return nil
		}
	}
}

func TestWatchCompacted(t *testing.T) {
	h := risktest.StartWith(t, risktest.Options{Retention: 2})
	c := h.Client
	for i := range 3 {
		report(t, c, newAlert(fmt.Sprint("a-", i), "dev-1", low))
	}
	if err := h.Store.Compact(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	_, errc := watch(t, c, 0)
	select {
	case err := <-errc:
		wantCode(t, err, codes.OutOfRange, "REVISION_COMPACTED")
	case <-time.After(10 * time.Second):
		t.Fatal("no error")
	}
	// List, then watch from the listed revision.
	list, err := c.ListDeviceRisks(ctxT(t), &riskv1.ListDeviceRisksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	msgs, errc := watch(t, c, list.GetRevision())
	report(t, c, newAlert("a-9", "dev-1", high))
	if ev := nextEvent(t, msgs, errc); ev.GetRevision() != list.GetRevision()+1 {
		t.Errorf("event after relist = %d, want %d", ev.GetRevision(), list.GetRevision()+1)
	}
}

// TestSlowWatcherResumes: a watcher that falls behind is cut off with
// RESOURCE_EXHAUSTED (writers never wait) and resumes from its last revision.
func TestSlowWatcherResumes(t *testing.T) {
	h := risktest.StartWith(t, risktest.Options{SubscriberBuffer: 2})
	c := h.Client
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	stream, err := c.WatchRiskEvents(ctx, &riskv1.WatchRiskEventsRequest{StartRevision: 0})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.GetProgress() == nil {
		t.Fatalf("first message = %v, %v; want progress", m, err)
	}
	var batch []*riskv1.Alert
	for i := range 500 {
		batch = append(batch, newAlert(fmt.Sprint("a-", i), fmt.Sprint("dev-", i), high))
	}
	if _, err := c.ReportAlerts(ctx, &riskv1.ReportAlertsRequest{Alerts: batch}); err != nil {
		t.Fatal(err)
	}
	total := h.Store.Revision() // 1000: one alert and one risk event per alert
	var last int64
	for {
		m, err := stream.Recv()
		if err != nil {
			wantCode(t, err, codes.ResourceExhausted, "WATCHER_TOO_SLOW")
			break
		}
		if ev := m.GetEvent(); ev != nil {
			if ev.GetRevision() != last+1 {
				t.Fatalf("revision %d after %d", ev.GetRevision(), last)
			}
			last = ev.GetRevision()
		}
	}
	if last >= total {
		t.Fatalf("watcher was not cut off (got all %d events)", total)
	}
	msgs, errc := watch(t, c, last)
	for want := last + 1; want <= total; want++ {
		if ev := nextEvent(t, msgs, errc); ev.GetRevision() != want {
			t.Fatalf("resumed revision = %d, want %d", ev.GetRevision(), want)
		}
	}
}

// TestRoles checks the allowed_roles of the contract through mutual TLS.
func TestRoles(t *testing.T) {
	ca := authtest.NewCA(t)
	srvCfg := ca.ServerConfig(t)
	h := risktest.StartWith(t, risktest.Options{Auth: &srvCfg, ClientAuth: ca.ClientConfig(t, "svc", commonv1.Role_ROLE_SERVICE)})
	sensor, _ := h.Dial(t, ca.ClientConfig(t, "agent-1", commonv1.Role_ROLE_SENSOR))
	reader, _ := h.Dial(t, ca.ClientConfig(t, "auditor", commonv1.Role_ROLE_READER))
	admin, _ := h.Dial(t, ca.ClientConfig(t, "ada", commonv1.Role_ROLE_SECOPS_ADMIN))
	ctx := ctxT(t)
	tests := []struct {
		name   string
		client riskv1.RiskServiceClient
		call   func(c riskv1.RiskServiceClient) error
		code   codes.Code
	}{
		{"sensor reports", sensor, func(c riskv1.RiskServiceClient) error {
			_, err := c.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: newAlert("a-1", "dev-1", high)})
			return err
		}, codes.OK},
		{"sensor cannot read", sensor, func(c riskv1.RiskServiceClient) error {
			_, err := c.GetDeviceRisk(ctx, &riskv1.GetDeviceRiskRequest{DeviceId: "dev-1"})
			return err
		}, codes.PermissionDenied},
		{"sensor cannot resolve", sensor, func(c riskv1.RiskServiceClient) error {
			_, err := c.ResolveAlert(ctx, &riskv1.ResolveAlertRequest{AlertId: "a-1", Classification: 1})
			return err
		}, codes.PermissionDenied},
		{"reader reads", reader, func(c riskv1.RiskServiceClient) error {
			_, err := c.GetDeviceRisk(ctx, &riskv1.GetDeviceRiskRequest{DeviceId: "dev-1"})
			return err
		}, codes.OK},
		{"reader cannot report", reader, func(c riskv1.RiskServiceClient) error {
			_, err := c.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: newAlert("a-2", "dev-1", high)})
			return err
		}, codes.PermissionDenied},
		{"reader cannot resolve", reader, func(c riskv1.RiskServiceClient) error {
			_, err := c.ResolveAlert(ctx, &riskv1.ResolveAlertRequest{AlertId: "a-1", Classification: 1})
			return err
		}, codes.PermissionDenied},
		{"admin resolves", admin, func(c riskv1.RiskServiceClient) error {
			res, err := c.ResolveAlert(ctx, &riskv1.ResolveAlertRequest{AlertId: "a-1", Classification: 1})
			if err == nil && res.GetAlert().GetResolvedBy() != "ada" {
				return fmt.Errorf("resolved_by = %q, want ada", res.GetAlert().GetResolvedBy())
			}
			return err
		}, codes.OK},
		{"service watches", h.Client, func(c riskv1.RiskServiceClient) error {
			s, err := c.WatchRiskEvents(ctx, &riskv1.WatchRiskEventsRequest{})
			if err == nil {
				_, err = s.Recv()
			}
			return err
		}, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantCode(t, tt.call(tt.client), tt.code, "") })
	}
}

func ts(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }
