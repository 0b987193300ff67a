package riskgrpc_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"

	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/services/risk/risktest"
)

// fuzzRPCs are the unary RPCs the fuzzer drives: the first input byte picks one, the
// rest is the request's wire encoding.
var fuzzRPCs = []struct {
	req  func() proto.Message
	call func(ctx context.Context, c riskv1.RiskServiceClient, m proto.Message) error
}{
	{func() proto.Message { return &riskv1.ReportAlertRequest{} }, func(ctx context.Context, c riskv1.RiskServiceClient, m proto.Message) error {
		_, err := c.ReportAlert(ctx, m.(*riskv1.ReportAlertRequest))
		return err
	}},
	{func() proto.Message { return &riskv1.ReportAlertsRequest{} }, func(ctx context.Context, c riskv1.RiskServiceClient, m proto.Message) error {
		_, err := c.ReportAlerts(ctx, m.(*riskv1.ReportAlertsRequest))
		return err
	}},
	{func() proto.Message { return &riskv1.ResolveAlertRequest{} }, func(ctx context.Context, c riskv1.RiskServiceClient, m proto.Message) error {
		_, err := c.ResolveAlert(ctx, m.(*riskv1.ResolveAlertRequest))
		return err
	}},
	{func() proto.Message { return &riskv1.UpdateAlertRequest{} }, func(ctx context.Context, c riskv1.RiskServiceClient, m proto.Message) error {
		_, err := c.UpdateAlert(ctx, m.(*riskv1.UpdateAlertRequest))
		return err
	}},
	{func() proto.Message { return &riskv1.ListAlertsRequest{} }, func(ctx context.Context, c riskv1.RiskServiceClient, m proto.Message) error {
		_, err := c.ListAlerts(ctx, m.(*riskv1.ListAlertsRequest))
		return err
	}},
	{func() proto.Message { return &riskv1.ListDeviceRisksRequest{} }, func(ctx context.Context, c riskv1.RiskServiceClient, m proto.Message) error {
		_, err := c.ListDeviceRisks(ctx, m.(*riskv1.ListDeviceRisksRequest))
		return err
	}},
	{func() proto.Message { return &riskv1.ListDeviceRiskHistoryRequest{} }, func(ctx context.Context, c riskv1.RiskServiceClient, m proto.Message) error {
		_, err := c.ListDeviceRiskHistory(ctx, m.(*riskv1.ListDeviceRiskHistoryRequest))
		return err
	}},
	{func() proto.Message { return &riskv1.AddAlertCommentRequest{} }, func(ctx context.Context, c riskv1.RiskServiceClient, m proto.Message) error {
		_, err := c.AddAlertComment(ctx, m.(*riskv1.AddAlertCommentRequest))
		return err
	}},
	{func() proto.Message { return &riskv1.GetAlertRequest{} }, func(ctx context.Context, c riskv1.RiskServiceClient, m proto.Message) error {
		_, err := c.GetAlert(ctx, m.(*riskv1.GetAlertRequest))
		return err
	}},
}

// FuzzRequests sends arbitrary requests through the production interceptor chain:
// no input may panic the service (the recovery interceptor would answer INTERNAL)
// or fail it in any way but a client error. Seed corpus: testdata/fuzz/FuzzRequests.
func FuzzRequests(f *testing.F) {
	for i := range fuzzRPCs {
		f.Add(byte(i), []byte{})
	}
	valid, _ := proto.Marshal(&riskv1.ReportAlertRequest{Alert: newAlert("a-1", "dev-1", high)})
	f.Add(byte(0), valid)
	c, _ := risktest.Start(f)
	f.Fuzz(func(t *testing.T, kind byte, data []byte) {
		rpc := fuzzRPCs[int(kind)%len(fuzzRPCs)]
		m := rpc.req()
		if err := proto.Unmarshal(data, m); err != nil {
			t.Skip()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := rpc.call(ctx, c, m)
		switch status.Code(err) {
		case codes.OK, codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.FailedPrecondition, codes.Aborted:
		default:
			t.Fatalf("request %v: %v", m, err)
		}
	})
}

// TestWriteFuzzSeeds regenerates the committed seed corpus:
// RISK_WRITE_FUZZ_SEEDS=1 go test -run TestWriteFuzzSeeds ./services/risk/riskgrpc
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("RISK_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set RISK_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz/FuzzRequests")
	}
	bad := newAlert("a-2", "dev-1", high)
	bad.Evidence[0].GetFile().Sha256 = "ZZ"
	bad.Evidence = append(bad.Evidence, &commonv1.Evidence{})
	seeds := map[string]struct {
		kind byte
		m    proto.Message
	}{
		"report":           {0, &riskv1.ReportAlertRequest{Alert: newAlert("a-1", "dev-1", high)}},
		"report-invalid":   {0, &riskv1.ReportAlertRequest{Alert: bad}},
		"report-conflict":  {0, &riskv1.ReportAlertRequest{Alert: newAlert("a-1", "dev-1", low)}},
		"report-batch":     {1, &riskv1.ReportAlertsRequest{Alerts: []*riskv1.Alert{newAlert("a-1", "dev-1", high), newAlert("a-3", "dev-2", medium), bad}}},
		"resolve":          {2, &riskv1.ResolveAlertRequest{AlertId: "a-1", Classification: 1, Determination: 1, Comment: "x"}},
		"update":           {3, &riskv1.UpdateAlertRequest{AlertId: "a-1", Status: 2, AssignedTo: "ada", UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"status", "bogus"}}, Etag: "1"}},
		"list-alerts":      {4, &riskv1.ListAlertsRequest{PageSize: 1, DeviceId: "dev-1", Status: 1, MinSeverity: 2, PageToken: "eyJ0IjoxLCJpZCI6ImEifQ"}},
		"list-devices":     {5, &riskv1.ListDeviceRisksRequest{PageSize: 1, MinLevel: 2, PageToken: "eyJyZXYiOjEsImFmdGVyIjoiZGV2LTEifQ"}},
		"history":          {6, &riskv1.ListDeviceRiskHistoryRequest{DeviceId: "dev-1", PageSize: 1, PageToken: "eyJiZWZvcmUiOi0xfQ"}},
		"comment":          {7, &riskv1.AddAlertCommentRequest{AlertId: "a-1", Text: "hello"}},
		"get":              {8, &riskv1.GetAlertRequest{AlertId: "a-1"}},
		"list-alerts-time": {4, &riskv1.ListAlertsRequest{DetectedAfter: ts(time.Unix(1<<40, 0)), DetectedBefore: ts(time.Unix(-1<<40, 0))}},
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzRequests")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, s := range seeds {
		b, err := proto.Marshal(s.m)
		if err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf("go test fuzz v1\nbyte(%q)\n[]byte(%q)\n", rune(s.kind), b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
