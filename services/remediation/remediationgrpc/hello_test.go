package remediationgrpc_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/services/remediation/remediationgrpc"
)

// silentAgent opens Connect, never sends a hello, and returns the stream's error and
// how long the server took to end it.
func silentAgent(t *testing.T, agents remediationv1.AgentServiceClient) (error, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	stream, err := agents.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	return err, time.Since(start)
}

func TestHelloTimeout(t *testing.T) {
	const d = 300 * time.Millisecond
	e := newEnv(t, options{helloTimeout: d})
	err, took := silentAgent(t, e.agents)
	if status.Code(err) != codes.DeadlineExceeded || apierr.Reason(err) != remediationgrpc.ReasonHelloTimeout {
		t.Fatalf("silent agent: %v, want DEADLINE_EXCEEDED (HELLO_TIMEOUT)", err)
	}
	if took < d || took > d+5*time.Second {
		t.Errorf("cut after %v, want about %v", took, d)
	}
	// An agent that says hello in time is acknowledged.
	e.connect("dev-hello")
}

// TestHelloTimeoutDefault checks the default: a hello never sent is cut after 10s.
func TestHelloTimeoutDefault(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 10s")
	}
	t.Parallel()
	e := newEnv(t, options{})
	err, took := silentAgent(t, e.agents)
	if status.Code(err) != codes.DeadlineExceeded || apierr.Reason(err) != remediationgrpc.ReasonHelloTimeout {
		t.Fatalf("silent agent: %v, want DEADLINE_EXCEEDED (HELLO_TIMEOUT)", err)
	}
	if took < remediationgrpc.DefaultHelloTimeout || took > remediationgrpc.DefaultHelloTimeout+5*time.Second {
		t.Errorf("cut after %v, want about %v", took, remediationgrpc.DefaultHelloTimeout)
	}
}
