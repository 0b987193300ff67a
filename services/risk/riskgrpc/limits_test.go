package riskgrpc_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/services/risk"
	"github.com/condaccess/condaccess/services/risk/riskgrpc"
	"github.com/condaccess/condaccess/services/risk/risktest"
)

// TestCommentsPerAlert: an alert takes at most risk.MaxCommentsPerAlert comments; the
// next is RESOURCE_EXHAUSTED and changes nothing stored.
func TestCommentsPerAlert(t *testing.T) {
	client, _ := risktest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	_, err := client.ReportAlert(ctx, &riskv1.ReportAlertRequest{Alert: &riskv1.Alert{
		AlertId: "a-comments", DeviceId: "dev-1", Severity: commonv1.Severity_SEVERITY_LOW, Title: "t",
	}})
	if err != nil {
		t.Fatal(err)
	}
	comment := func() error {
		_, err := client.AddAlertComment(ctx, &riskv1.AddAlertCommentRequest{AlertId: "a-comments", Text: "c"})
		return err
	}
	// Ten writers at once: the store commits concurrent writes together, so the
	// thousand durable writes take a fraction of the time one writer would, and the
	// cap is checked under concurrency (exactly MaxCommentsPerAlert are admitted).
	var wg sync.WaitGroup
	errs := make(chan error, risk.MaxCommentsPerAlert)
	next := make(chan int, risk.MaxCommentsPerAlert)
	for i := range risk.MaxCommentsPerAlert {
		next <- i
	}
	close(next)
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := comment(); err != nil {
					errs <- fmt.Errorf("comment %d: %w", i+1, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	before, err := client.GetAlert(ctx, &riskv1.GetAlertRequest{AlertId: "a-comments"})
	if err != nil {
		t.Fatal(err)
	}
	err = comment()
	if status.Code(err) != codes.ResourceExhausted || apierr.Reason(err) != riskgrpc.ReasonTooManyComments {
		t.Fatalf("comment past the cap: %v, want RESOURCE_EXHAUSTED (TOO_MANY_COMMENTS)", err)
	}
	after, err := client.GetAlert(ctx, &riskv1.GetAlertRequest{AlertId: "a-comments"})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(after.GetAlert().GetComments()); n != risk.MaxCommentsPerAlert || after.GetAlert().GetEtag() != before.GetAlert().GetEtag() {
		t.Errorf("after the refused comment: %d comments, etag %q (was %q)", n, after.GetAlert().GetEtag(), before.GetAlert().GetEtag())
	}
}
