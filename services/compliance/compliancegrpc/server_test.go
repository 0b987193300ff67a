package compliancegrpc_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/server"
	"github.com/condaccess/condaccess/services/compliance/compliancetest"
)

func TestMain(m *testing.M) {
	otel.SetTracerProvider(sdktrace.NewTracerProvider())
	otel.SetTextMapPropagator(propagation.TraceContext{})
	os.Exit(m.Run())
}

const (
	stateCompliant    = commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT
	stateNoncompliant = commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT
	stateGrace        = commonv1.ComplianceState_COMPLIANCE_STATE_IN_GRACE_PERIOD
	stateExcluded     = commonv1.ComplianceState_COMPLIANCE_STATE_EXCLUDED
	stateNotEvaluated = commonv1.ComplianceState_COMPLIANCE_STATE_NOT_EVALUATED
)

type env struct {
	t    *testing.T
	ctx  context.Context
	risk *compliancetest.FakeRisk
	rc   riskv1.RiskServiceClient
	addr string
	h    *compliancetest.Harness
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	risk, addr := compliancetest.StartRisk(t)
	h := compliancetest.Start(t, addr, compliancetest.Options{})
	return &env{t: t, ctx: ctx, risk: risk, rc: compliancetest.RiskClient(t, addr), addr: addr, h: h}
}

func (e *env) enroll(id string, groups ...string) *compliancev1.Device {
	e.t.Helper()
	resp, err := e.h.Devices.EnrollDevice(e.ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
		DeviceId: id, DisplayName: "Laptop " + id, Platform: commonv1.Platform_PLATFORM_WINDOWS,
		OsVersion: "10.0.22631", OwnerUserId: "u-1", Groups: groups,
	}})
	if err != nil {
		e.t.Fatalf("EnrollDevice(%s): %v", id, err)
	}
	return resp.GetDevice()
}

func (e *env) maxMedium() *compliancev1.CompliancePolicy {
	e.t.Helper()
	resp, err := e.h.Policies.CreateCompliancePolicy(e.ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
		PolicyId: "max-medium", DisplayName: "Device risk at or under medium",
		MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_MEDIUM,
		Assignment:    &compliancev1.PolicyAssignment{AllDevices: true},
	}})
	if err != nil {
		e.t.Fatalf("CreateCompliancePolicy: %v", err)
	}
	return resp.GetPolicy()
}

func (e *env) report(alertID, deviceID string, sev commonv1.Severity) {
	e.t.Helper()
	if _, err := e.rc.ReportAlert(e.ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
		AlertId: alertID, DeviceId: deviceID, Severity: sev, Title: "Malicious file opened",
	}}); err != nil {
		e.t.Fatalf("ReportAlert: %v", err)
	}
}

func (e *env) resolve(alertID string) {
	e.t.Helper()
	if _, err := e.rc.ResolveAlert(e.ctx, &riskv1.ResolveAlertRequest{
		AlertId: alertID, Classification: riskv1.AlertClassification_ALERT_CLASSIFICATION_TRUE_POSITIVE,
	}); err != nil {
		e.t.Fatalf("ResolveAlert: %v", err)
	}
}

func (e *env) compliance(id string) *compliancev1.DeviceCompliance {
	e.t.Helper()
	resp, err := e.h.Compliance.GetDeviceCompliance(e.ctx, &compliancev1.GetDeviceComplianceRequest{DeviceId: id})
	if err != nil {
		e.t.Fatalf("GetDeviceCompliance(%s): %v", id, err)
	}
	return resp.GetDeviceCompliance()
}

// watcher follows WatchComplianceEvents from the current revision.
type watcher struct {
	t      *testing.T
	stream grpc.ServerStreamingClient[compliancev1.WatchComplianceEventsResponse]
}

func (e *env) watch() *watcher {
	e.t.Helper()
	list, err := e.h.Compliance.ListDeviceCompliance(e.ctx, &compliancev1.ListDeviceComplianceRequest{PageSize: 1})
	if err != nil {
		e.t.Fatal(err)
	}
	s, err := e.h.Compliance.WatchComplianceEvents(e.ctx, &compliancev1.WatchComplianceEventsRequest{StartRevision: list.GetRevision()})
	if err != nil {
		e.t.Fatal(err)
	}
	return &watcher{t: e.t, stream: s}
}

// next waits for the next compliance change of deviceID (skipping others and progress).
func (w *watcher) next(deviceID string) *compliancev1.ComplianceEvent {
	w.t.Helper()
	for {
		m, err := w.stream.Recv()
		if err != nil {
			w.t.Fatalf("waiting for a compliance change of %s: %v", deviceID, err)
		}
		ev := m.GetEvent()
		if c := ev.GetDeviceComplianceChanged(); c != nil && c.GetDeviceCompliance().GetDeviceId() == deviceID {
			return ev
		}
	}
}

// until waits for a compliance change of deviceID to state.
func (w *watcher) until(deviceID string, state commonv1.ComplianceState) *compliancev1.ComplianceEvent {
	w.t.Helper()
	for {
		ev := w.next(deviceID)
		if ev.GetDeviceComplianceChanged().GetDeviceCompliance().GetState() == state {
			return ev
		}
	}
}

// TestFlow is issue #4's definition of done, through real gRPC clients.
func TestFlow(t *testing.T) {
	e := newEnv(t)
	e.enroll("dev-1", "finance")
	e.maxMedium()
	if got := e.compliance("dev-1"); got.GetState() != stateCompliant {
		t.Fatalf("before any alert: state %v (%s), want COMPLIANT", got.GetState(), got.GetReason())
	}
	w := e.watch()

	tr := otel.Tracer("test")
	ctx, span := tr.Start(e.ctx, "report")
	if _, err := e.rc.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
		AlertId: "a-1", DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_HIGH, Title: "Malicious file opened",
	}}); err != nil {
		t.Fatal(err)
	}
	span.End()
	ev := w.until("dev-1", stateNoncompliant)
	if got, want := ev.GetTraceContext().GetTraceparent(), span.SpanContext().TraceID().String(); !strings.Contains(got, want) {
		t.Errorf("compliance event traceparent %q does not continue the alert's trace %s", got, want)
	}
	dc := e.compliance("dev-1")
	if dc.GetState() != stateNoncompliant || !strings.Contains(dc.GetReason(), "risk HIGH above allowed MEDIUM, from alert a-1") {
		t.Fatalf("after HIGH alert: %v %q, want NONCOMPLIANT with the cause", dc.GetState(), dc.GetReason())
	}
	if dc.GetRevision() != ev.GetRevision() {
		t.Errorf("compliance revision %d, event revision %d", dc.GetRevision(), ev.GetRevision())
	}
	wantSetting := &compliancev1.SettingResult{
		Setting: "max_device_risk", Expected: "RISK_LEVEL_MEDIUM or lower", Actual: "RISK_LEVEL_HIGH",
		Reason: "risk HIGH above allowed MEDIUM, from alert a-1",
	}
	if ps := dc.GetPolicies(); len(ps) != 1 || len(ps[0].GetSettings()) != 1 || ps[0].GetState() != stateNoncompliant ||
		ps[0].GetSettings()[0].String() != wantSetting.String() {
		t.Errorf("per-policy explanation = %v, want one policy with %v", ps, wantSetting)
	}
	if got := dc.GetRiskAlertIds(); len(got) != 1 || got[0] != "a-1" || dc.GetDeviceRisk() != commonv1.RiskLevel_RISK_LEVEL_HIGH {
		t.Errorf("risk cause = %v %v, want HIGH [a-1]", dc.GetDeviceRisk(), got)
	}

	e.resolve("a-1")
	w.until("dev-1", stateCompliant)

	e.report("a-2", "dev-1", commonv1.Severity_SEVERITY_HIGH)
	w.until("dev-1", stateNoncompliant)
	ex, err := e.h.Compliance.ExcludeDevice(e.ctx, &compliancev1.ExcludeDeviceRequest{DeviceId: "dev-1", Reason: "known false positive, ticket 42"})
	if err != nil {
		t.Fatal(err)
	}
	if ex.GetDeviceCompliance().GetState() != stateExcluded || ex.GetExclusion().GetCreatedBy() != "dev" {
		t.Errorf("ExcludeDevice = %v by %q, want EXCLUDED by dev", ex.GetDeviceCompliance().GetState(), ex.GetExclusion().GetCreatedBy())
	}
	w.until("dev-1", stateExcluded)
	rm, err := e.h.Compliance.RemoveExclusion(e.ctx, &compliancev1.RemoveExclusionRequest{DeviceId: "dev-1", Comment: "done"})
	if err != nil {
		t.Fatal(err)
	}
	if rm.GetDeviceCompliance().GetState() != stateNoncompliant || rm.GetExclusion().GetEndTime() == nil {
		t.Errorf("RemoveExclusion = %v, end %v; want NONCOMPLIANT and an end time", rm.GetDeviceCompliance().GetState(), rm.GetExclusion().GetEndTime())
	}

	// An expiring exclusion lapses by itself.
	if _, err := e.h.Compliance.ExcludeDevice(e.ctx, &compliancev1.ExcludeDeviceRequest{
		DeviceId: "dev-1", Reason: "short", ExpireTime: timestamppb.New(time.Now().Add(300 * time.Millisecond)),
	}); err != nil {
		t.Fatal(err)
	}
	w.until("dev-1", stateExcluded)
	w.until("dev-1", stateNoncompliant)
	xs, err := e.h.Compliance.ListExclusions(e.ctx, &compliancev1.ListExclusionsRequest{DeviceId: "dev-1"})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(xs.GetExclusions()); n != 2 || xs.GetExclusions()[0].GetEndedBy() != "system" || xs.GetExclusions()[1].GetEndedBy() != "dev" {
		t.Errorf("exclusions audit trail = %v, want the expired one (ended by system) then the removed one (by dev)", xs.GetExclusions())
	}
}

// TestCauseFollowsAlerts: the risk service publishes a level change only when the level
// changes; the explanation still follows the alerts behind the level.
func TestCauseFollowsAlerts(t *testing.T) {
	e := newEnv(t)
	e.enroll("dev-1")
	e.maxMedium()
	w := e.watch()
	e.report("a-1", "dev-1", commonv1.Severity_SEVERITY_HIGH)
	w.until("dev-1", stateNoncompliant)
	e.report("l-1", "dev-1", commonv1.Severity_SEVERITY_LOW)
	e.report("a-2", "dev-1", commonv1.Severity_SEVERITY_HIGH)
	for {
		dc := w.next("dev-1").GetDeviceComplianceChanged().GetDeviceCompliance()
		if strings.Join(dc.GetRiskAlertIds(), ",") == "a-1,a-2" {
			if !strings.Contains(dc.GetReason(), "from alerts a-1, a-2") {
				t.Fatalf("two HIGH alerts: reason %q", dc.GetReason())
			}
			break
		}
	}
	e.resolve("a-1")
	dc := w.next("dev-1").GetDeviceComplianceChanged().GetDeviceCompliance()
	if dc.GetState() != stateNoncompliant || strings.Join(dc.GetRiskAlertIds(), ",") != "a-2" || !strings.Contains(dc.GetReason(), "from alert a-2") {
		t.Fatalf("after resolving a-1: %v %v %q, want NONCOMPLIANT from alert a-2 only", dc.GetState(), dc.GetRiskAlertIds(), dc.GetReason())
	}
	// Resolving the last HIGH alert drops the level to LOW: one change, to COMPLIANT,
	// caused by the LOW alert, with no passing explanation in between.
	e.resolve("a-2")
	dc = w.next("dev-1").GetDeviceComplianceChanged().GetDeviceCompliance()
	if dc.GetState() != stateCompliant || dc.GetDeviceRisk() != commonv1.RiskLevel_RISK_LEVEL_LOW || strings.Join(dc.GetRiskAlertIds(), ",") != "l-1" {
		t.Fatalf("after resolving a-2: %v %v %v, want COMPLIANT at LOW from l-1", dc.GetState(), dc.GetDeviceRisk(), dc.GetRiskAlertIds())
	}
}

func TestRiskBeforeEnrollment(t *testing.T) {
	e := newEnv(t)
	e.maxMedium()
	e.report("a-9", "dev-late", commonv1.Severity_SEVERITY_HIGH)
	if err := e.h.App.Consumer.WaitRevision(e.ctx, e.risk.Revision()); err != nil {
		t.Fatal(err)
	}
	e.enroll("dev-late")
	if dc := e.compliance("dev-late"); dc.GetState() != stateNoncompliant || !strings.Contains(dc.GetReason(), "from alert a-9") {
		t.Fatalf("enrolled after a HIGH alert: %v %q, want NONCOMPLIANT from alert a-9", dc.GetState(), dc.GetReason())
	}
}

func TestGracePeriods(t *testing.T) {
	e := newEnv(t)
	e.enroll("dev-g")
	if _, err := e.h.Policies.CreateCompliancePolicy(e.ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
		PolicyId: "max-low", DisplayName: "Risk at most low", MaxDeviceRisk: commonv1.RiskLevel_RISK_LEVEL_LOW,
		Assignment: &compliancev1.PolicyAssignment{AllDevices: true},
		Actions: &compliancev1.NoncomplianceActions{
			GracePeriod: durationpb.New(time.Hour),
			RiskGracePeriods: []*compliancev1.RiskGracePeriod{{
				RiskLevel: commonv1.RiskLevel_RISK_LEVEL_MEDIUM, GracePeriod: durationpb.New(400 * time.Millisecond),
			}},
		},
	}}); err != nil {
		t.Fatal(err)
	}
	w := e.watch()
	e.report("m-1", "dev-g", commonv1.Severity_SEVERITY_MEDIUM)
	ev := w.until("dev-g", stateGrace)
	dc := ev.GetDeviceComplianceChanged().GetDeviceCompliance()
	if dc.GetNextEvaluateTime() == nil || dc.GetPolicies()[0].GetGraceExpireTime() == nil {
		t.Fatalf("in grace without a deadline: %v", dc)
	}
	// The grace period for MEDIUM ends and the timer makes the device noncompliant.
	w.until("dev-g", stateNoncompliant)

	// HIGH has no grace entry: noncompliant at once, even with a default grace of 1h.
	e.resolve("m-1")
	w.until("dev-g", stateCompliant)
	e.report("h-1", "dev-g", commonv1.Severity_SEVERITY_HIGH)
	if got := w.next("dev-g").GetDeviceComplianceChanged().GetDeviceCompliance().GetState(); got != stateNoncompliant {
		t.Fatalf("HIGH risk: first change is %v, want NONCOMPLIANT at once", got)
	}
}

func TestDevicesWithoutPolicySetting(t *testing.T) {
	e := newEnv(t)
	e.enroll("dev-n")
	if dc := e.compliance("dev-n"); dc.GetState() != stateNoncompliant || !strings.Contains(dc.GetReason(), "no compliance policy assigned") {
		t.Fatalf("no policy, default setting: %v %q, want NONCOMPLIANT", dc.GetState(), dc.GetReason())
	}
	st, err := e.h.Compliance.GetComplianceSettings(e.ctx, &compliancev1.GetComplianceSettingsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.h.Compliance.UpdateComplianceSettings(e.ctx, &compliancev1.UpdateComplianceSettingsRequest{
		Settings: &compliancev1.ComplianceSettings{DevicesWithoutPolicyCompliant: true, Etag: st.GetSettings().GetEtag()},
	}); err != nil {
		t.Fatal(err)
	}
	if dc := e.compliance("dev-n"); dc.GetState() != stateCompliant {
		t.Fatalf("no policy, setting on: %v, want COMPLIANT", dc.GetState())
	}
	_, err = e.h.Compliance.UpdateComplianceSettings(e.ctx, &compliancev1.UpdateComplianceSettingsRequest{
		Settings: &compliancev1.ComplianceSettings{Etag: st.GetSettings().GetEtag()},
	})
	if status.Code(err) != codes.Aborted {
		t.Fatalf("stale settings etag: %v, want ABORTED", err)
	}
}

func TestPolicyAssignmentAndOSVersion(t *testing.T) {
	e := newEnv(t)
	e.enroll("fin-1", "finance")
	e.enroll("fin-kiosk", "finance", "kiosk")
	e.enroll("hr-1", "hr")
	if _, err := e.h.Policies.CreateCompliancePolicy(e.ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: &compliancev1.CompliancePolicy{
		PolicyId: "win-min", DisplayName: "Windows 11 23H2", MinOsVersion: "10.0.22632",
		Platforms:  []commonv1.Platform{commonv1.Platform_PLATFORM_WINDOWS},
		Assignment: &compliancev1.PolicyAssignment{IncludeGroups: []string{"finance"}, ExcludeGroups: []string{"kiosk"}},
	}}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		device string
		want   commonv1.ComplianceState
		reason string
	}{
		{"fin-1", stateNoncompliant, "OS version 10.0.22631 below minimum 10.0.22632"},
		{"fin-kiosk", stateNoncompliant, "no compliance policy assigned"},
		{"hr-1", stateNoncompliant, "no compliance policy assigned"},
	}
	for _, tt := range tests {
		t.Run(tt.device, func(t *testing.T) {
			dc := e.compliance(tt.device)
			if dc.GetState() != tt.want || !strings.Contains(dc.GetReason(), tt.reason) {
				t.Errorf("%s: %v %q, want %v containing %q", tt.device, dc.GetState(), dc.GetReason(), tt.want, tt.reason)
			}
		})
	}
	// A change to a group-scoped policy re-evaluates only the devices it can apply to.
	before, err := e.h.Compliance.ListDeviceCompliance(e.ctx, &compliancev1.ListDeviceComplianceRequest{})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := e.h.Policies.GetCompliancePolicy(e.ctx, &compliancev1.GetCompliancePolicyRequest{PolicyId: "win-min"})
	if err != nil {
		t.Fatal(err)
	}
	pol.Policy.MinOsVersion = "10.0.22633"
	if _, err := e.h.Policies.UpdateCompliancePolicy(e.ctx, &compliancev1.UpdateCompliancePolicyRequest{Policy: pol.GetPolicy()}); err != nil {
		t.Fatal(err)
	}
	after, err := e.h.Compliance.ListDeviceCompliance(e.ctx, &compliancev1.ListDeviceComplianceRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := after.GetRevision() - before.GetRevision(); n != 1 {
		t.Errorf("changing the finance policy's minimum wrote %d events, want 1 (fin-1's explanation)", n)
	}
	// A newer OS version (compared as versions: 10.0.100000 > 10.0.22632) fixes it.
	d, err := e.h.Devices.GetDevice(e.ctx, &compliancev1.GetDeviceRequest{DeviceId: "fin-1"})
	if err != nil {
		t.Fatal(err)
	}
	dev := d.GetDevice()
	dev.OsVersion = "10.0.100000"
	if _, err := e.h.Devices.UpdateDevice(e.ctx, &compliancev1.UpdateDeviceRequest{
		Device: dev, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"os_version"}},
	}); err != nil {
		t.Fatal(err)
	}
	if dc := e.compliance("fin-1"); dc.GetState() != stateCompliant {
		t.Errorf("after OS update: %v %q, want COMPLIANT", dc.GetState(), dc.GetReason())
	}
	// Stale etag.
	_, err = e.h.Devices.UpdateDevice(e.ctx, &compliancev1.UpdateDeviceRequest{
		Device: dev, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"display_name"}},
	})
	if status.Code(err) != codes.Aborted {
		t.Errorf("stale device etag: %v, want ABORTED", err)
	}
}

func TestErrors(t *testing.T) {
	e := newEnv(t)
	e.enroll("dev-1")
	if _, err := e.h.Devices.RetireDevice(e.ctx, &compliancev1.RetireDeviceRequest{DeviceId: "dev-1"}); err != nil {
		t.Fatal(err)
	}
	if dc := e.compliance("dev-1"); dc.GetState() != stateNotEvaluated {
		t.Errorf("retired device: %v, want NOT_EVALUATED", dc.GetState())
	}
	e.enroll("dev-2")
	p := e.maxMedium()
	dev := func(f func(d *compliancev1.Device)) *compliancev1.Device {
		d := &compliancev1.Device{DeviceId: "dev-x", Platform: commonv1.Platform_PLATFORM_LINUX}
		f(d)
		return d
	}
	pol := func(f func(p *compliancev1.CompliancePolicy)) *compliancev1.CompliancePolicy {
		p := &compliancev1.CompliancePolicy{PolicyId: "p-x", DisplayName: "X", Assignment: &compliancev1.PolicyAssignment{AllDevices: true}}
		f(p)
		return p
	}
	tests := []struct {
		name      string
		call      func() error
		code      codes.Code
		violation string // a field violation expected, if any
	}{
		{"enroll empty id", func() error {
			_, err := e.h.Devices.EnrollDevice(e.ctx, &compliancev1.EnrollDeviceRequest{Device: dev(func(d *compliancev1.Device) { d.DeviceId = "" })})
			return err
		}, codes.InvalidArgument, "device.device_id"},
		{"enroll unknown platform", func() error {
			_, err := e.h.Devices.EnrollDevice(e.ctx, &compliancev1.EnrollDeviceRequest{Device: dev(func(d *compliancev1.Device) { d.Platform = 42 })})
			return err
		}, codes.InvalidArgument, "device.platform"},
		{"enroll no platform", func() error {
			_, err := e.h.Devices.EnrollDevice(e.ctx, &compliancev1.EnrollDeviceRequest{Device: dev(func(d *compliancev1.Device) { d.Platform = 0 })})
			return err
		}, codes.InvalidArgument, "device.platform"},
		{"enroll malformed os version", func() error {
			_, err := e.h.Devices.EnrollDevice(e.ctx, &compliancev1.EnrollDeviceRequest{Device: dev(func(d *compliancev1.Device) { d.OsVersion = "10..1" })})
			return err
		}, codes.InvalidArgument, "device.os_version"},
		{"enroll twice", func() error {
			_, err := e.h.Devices.EnrollDevice(e.ctx, &compliancev1.EnrollDeviceRequest{Device: dev(func(d *compliancev1.Device) { d.DeviceId = "dev-2" })})
			return err
		}, codes.AlreadyExists, ""},
		{"get unknown device", func() error {
			_, err := e.h.Devices.GetDevice(e.ctx, &compliancev1.GetDeviceRequest{DeviceId: "nope"})
			return err
		}, codes.NotFound, ""},
		{"update unknown device", func() error {
			_, err := e.h.Devices.UpdateDevice(e.ctx, &compliancev1.UpdateDeviceRequest{Device: dev(func(d *compliancev1.Device) { d.DeviceId = "nope" })})
			return err
		}, codes.NotFound, ""},
		{"update retired device", func() error {
			_, err := e.h.Devices.UpdateDevice(e.ctx, &compliancev1.UpdateDeviceRequest{Device: dev(func(d *compliancev1.Device) { d.DeviceId = "dev-1" })})
			return err
		}, codes.FailedPrecondition, ""},
		{"update device immutable field", func() error {
			_, err := e.h.Devices.UpdateDevice(e.ctx, &compliancev1.UpdateDeviceRequest{
				Device:     dev(func(d *compliancev1.Device) { d.DeviceId = "dev-2" }),
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"enroll_time"}},
			})
			return err
		}, codes.InvalidArgument, "update_mask"},
		{"retire twice", func() error {
			_, err := e.h.Devices.RetireDevice(e.ctx, &compliancev1.RetireDeviceRequest{DeviceId: "dev-1"})
			return err
		}, codes.FailedPrecondition, ""},
		{"policy empty name", func() error {
			_, err := e.h.Policies.CreateCompliancePolicy(e.ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: pol(func(p *compliancev1.CompliancePolicy) { p.DisplayName = "" })})
			return err
		}, codes.InvalidArgument, "policy.display_name"},
		{"policy unknown risk level", func() error {
			_, err := e.h.Policies.CreateCompliancePolicy(e.ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: pol(func(p *compliancev1.CompliancePolicy) { p.MaxDeviceRisk = 9 })})
			return err
		}, codes.InvalidArgument, "policy.max_device_risk"},
		{"policy malformed min os version", func() error {
			_, err := e.h.Policies.CreateCompliancePolicy(e.ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: pol(func(p *compliancev1.CompliancePolicy) { p.MinOsVersion = "ten" })})
			return err
		}, codes.InvalidArgument, "policy.min_os_version"},
		{"policy duplicate risk grace", func() error {
			_, err := e.h.Policies.CreateCompliancePolicy(e.ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: pol(func(p *compliancev1.CompliancePolicy) {
				g := &compliancev1.RiskGracePeriod{RiskLevel: commonv1.RiskLevel_RISK_LEVEL_LOW, GracePeriod: durationpb.New(time.Hour)}
				p.Actions = &compliancev1.NoncomplianceActions{RiskGracePeriods: []*compliancev1.RiskGracePeriod{g, g}}
			})})
			return err
		}, codes.InvalidArgument, "policy.actions.risk_grace_periods[1].risk_level"},
		{"policy exists", func() error {
			_, err := e.h.Policies.CreateCompliancePolicy(e.ctx, &compliancev1.CreateCompliancePolicyRequest{Policy: pol(func(p *compliancev1.CompliancePolicy) { p.PolicyId = "max-medium" })})
			return err
		}, codes.AlreadyExists, ""},
		{"policy stale etag", func() error {
			_, err := e.h.Policies.UpdateCompliancePolicy(e.ctx, &compliancev1.UpdateCompliancePolicyRequest{Policy: pol(func(q *compliancev1.CompliancePolicy) {
				q.PolicyId, q.Etag = "max-medium", `"0"`
			})})
			return err
		}, codes.Aborted, ""},
		{"update unknown policy", func() error {
			_, err := e.h.Policies.UpdateCompliancePolicy(e.ctx, &compliancev1.UpdateCompliancePolicyRequest{Policy: pol(func(*compliancev1.CompliancePolicy) {})})
			return err
		}, codes.NotFound, ""},
		{"delete policy stale etag", func() error {
			_, err := e.h.Policies.DeleteCompliancePolicy(e.ctx, &compliancev1.DeleteCompliancePolicyRequest{PolicyId: p.GetPolicyId(), Etag: `"7"`})
			return err
		}, codes.Aborted, ""},
		{"exclude retired device", func() error {
			_, err := e.h.Compliance.ExcludeDevice(e.ctx, &compliancev1.ExcludeDeviceRequest{DeviceId: "dev-1", Reason: "r"})
			return err
		}, codes.FailedPrecondition, ""},
		{"exclude without reason", func() error {
			_, err := e.h.Compliance.ExcludeDevice(e.ctx, &compliancev1.ExcludeDeviceRequest{DeviceId: "dev-2"})
			return err
		}, codes.InvalidArgument, "reason"},
		{"exclude expiring in the past", func() error {
			_, err := e.h.Compliance.ExcludeDevice(e.ctx, &compliancev1.ExcludeDeviceRequest{DeviceId: "dev-2", Reason: "r", ExpireTime: timestamppb.New(time.Now().Add(-time.Hour))})
			return err
		}, codes.InvalidArgument, "expire_time"},
		{"exclude expiring after year 9999 (found by FuzzUnaryRPCs; was INTERNAL)", func() error {
			_, err := e.h.Compliance.ExcludeDevice(e.ctx, &compliancev1.ExcludeDeviceRequest{DeviceId: "dev-2", Reason: "r", ExpireTime: timestamppb.New(time.Unix(1<<40, 0))})
			return err
		}, codes.InvalidArgument, "expire_time"},
		{"exclude unknown device", func() error {
			_, err := e.h.Compliance.ExcludeDevice(e.ctx, &compliancev1.ExcludeDeviceRequest{DeviceId: "nope", Reason: "r"})
			return err
		}, codes.NotFound, ""},
		{"remove missing exclusion", func() error {
			_, err := e.h.Compliance.RemoveExclusion(e.ctx, &compliancev1.RemoveExclusionRequest{DeviceId: "dev-2"})
			return err
		}, codes.NotFound, ""},
		{"compliance of unknown device", func() error {
			_, err := e.h.Compliance.GetDeviceCompliance(e.ctx, &compliancev1.GetDeviceComplianceRequest{DeviceId: "nope"})
			return err
		}, codes.NotFound, ""},
		{"bad page token", func() error {
			_, err := e.h.Devices.ListDevices(e.ctx, &compliancev1.ListDevicesRequest{PageToken: "!!"})
			return err
		}, codes.InvalidArgument, "page_token"},
		{"list unknown state", func() error {
			_, err := e.h.Compliance.ListDeviceCompliance(e.ctx, &compliancev1.ListDeviceComplianceRequest{State: 77})
			return err
		}, codes.InvalidArgument, "state"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if got := status.Code(err); got != tt.code {
				t.Fatalf("code %v (%v), want %v", got, err, tt.code)
			}
			if tt.violation == "" {
				return
			}
			var fields []string
			for _, v := range apierr.Violations(err) {
				fields = append(fields, v.GetField())
			}
			if !strings.Contains(strings.Join(fields, " "), tt.violation) {
				t.Errorf("violations %v, want %q", fields, tt.violation)
			}
		})
	}
}

func TestListDevicesPaging(t *testing.T) {
	e := newEnv(t)
	for i := range 5 {
		g := "even"
		if i%2 == 1 {
			g = "odd"
		}
		e.enroll(fmt.Sprintf("d-%d", i), g)
	}
	var got []string
	tok := ""
	for {
		resp, err := e.h.Devices.ListDevices(e.ctx, &compliancev1.ListDevicesRequest{PageSize: 2, PageToken: tok, Group: "even"})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range resp.GetDevices() {
			got = append(got, d.GetDeviceId())
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
	if strings.Join(got, ",") != "d-0,d-2,d-4" {
		t.Errorf("paged group listing = %v, want d-0,d-2,d-4", got)
	}
}

func TestRiskResyncAfterCompaction(t *testing.T) {
	e := newEnv(t)
	e.maxMedium()
	e.enroll("dev-r")
	e.report("c-1", "dev-r", commonv1.Severity_SEVERITY_HIGH)
	if err := e.h.App.Consumer.WaitRevision(e.ctx, e.risk.Revision()); err != nil {
		t.Fatal(err)
	}
	// Stop compliance, change risk and compact the history, restart: the consumer's
	// cursor is compacted, so it lists the risks again and re-evaluates.
	e.h.Stop()
	e.resolve("c-1")
	e.risk.Compact()
	e.h = compliancetest.Start(t, e.addr, compliancetest.Options{DataDir: e.h.DataDir})
	w := e.watch() // from the listing's revision: a change after it arrives on w
	if dc := e.compliance("dev-r"); dc.GetState() != stateCompliant {
		w.until("dev-r", stateCompliant)
	}
}

// TestStopEndsWatchers: stopping the server ends WatchComplianceEvents streams at once
// with UNAVAILABLE (SHUTTING_DOWN), instead of holding the graceful stop for its whole
// timeout.
func TestStopEndsWatchers(t *testing.T) {
	e := newEnv(t)
	e.enroll("dev-1")
	conn, err := grpc.NewClient(e.h.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := compliancev1.NewComplianceServiceClient(conn).WatchComplianceEvents(e.ctx, &compliancev1.WatchComplianceEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil { // the stream is up
		t.Fatal(err)
	}
	start := time.Now()
	stopped := make(chan struct{})
	go func() { e.h.Stop(); close(stopped) }()
	for err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.Unavailable || apierr.Reason(err) != server.ReasonShuttingDown {
		t.Fatalf("watch ended with %v, want UNAVAILABLE %s", err, server.ReasonShuttingDown)
	}
	<-stopped
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stop took %v with a watcher open", d)
	}
}

// TestListDeviceComplianceCarriesRiskAsOf: the resync listing says how fresh the
// compliance service's view of risk was when the page was read (its risk consumer's
// last contact, read before the page), as every watch message does, so that a reader
// resyncing from it still bounds the age of the whole chain.
func TestListDeviceComplianceCarriesRiskAsOf(t *testing.T) {
	e := newEnv(t)
	e.enroll("dev-1")
	e.enroll("dev-2")
	if err := e.h.App.Consumer.WaitRevision(e.ctx, e.risk.Revision()); err != nil {
		t.Fatal(err)
	}
	tok := ""
	for page := 0; ; page++ {
		before := e.h.App.Consumer.Status().LastContact
		resp, err := e.h.Compliance.ListDeviceCompliance(e.ctx, &compliancev1.ListDeviceComplianceRequest{PageSize: 1, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		after := e.h.App.Consumer.Status().LastContact
		if resp.GetRiskAsOf() == nil {
			t.Fatalf("page %d has no risk_as_of", page)
		}
		got := resp.GetRiskAsOf().AsTime()
		if before.IsZero() || got.Before(before) || got.After(after) {
			t.Errorf("page %d: risk_as_of %v, want the risk consumer's last contact (between %v and %v)", page, got, before, after)
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
}
