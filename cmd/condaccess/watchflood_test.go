package main

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/server"
)

// TestWatchFloodSuite is the audit's 5,000 watch streams on one connection, against
// the real risk service over loopback TCP: one identity (development mode) gets
// --max-watches-per-identity open streams, every other attempt is RESOURCE_EXHAUSTED
// TOO_MANY_WATCHES, and the process's goroutines and heap stay bounded (the audit saw
// 10,000 goroutines and 700 MB).
func TestWatchFloodSuite(t *testing.T) {
	const attempts = 5000
	// Bounds: each open watch costs a few goroutines on each side (client stream,
	// server handler, drain, replay) and a replay buffer; refused attempts cost none.
	const maxGoroutineGrowth = 64*8 + 200
	const maxHeapGrowth = 128 << 20
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	o := serveOptions{grpcAddr: "127.0.0.1:0", dataDir: t.TempDir(), services: "risk", stopTimeout: 5 * time.Second}
	s, err := startSuite(ctx, o, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	opts, err := server.DialOptions(auth.ClientConfig{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(s.GRPCAddr(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	risk := riskv1.NewRiskServiceClient(conn)
	// Warm the connection before measuring.
	if _, err := risk.ListDeviceRisks(ctx, &riskv1.ListDeviceRisksRequest{}); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()

	var mu sync.Mutex
	byCode := map[codes.Code]int{}
	wrongReason := 0
	next := make(chan struct{})
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range next {
				st, err := risk.WatchRiskEvents(ctx, &riskv1.WatchRiskEventsRequest{StartRevision: 0})
				if err == nil {
					_, err = st.Recv() // the first progress message, or the refusal
				}
				mu.Lock()
				byCode[status.Code(err)]++
				if err != nil && apierr.Reason(err) != server.ReasonTooManyWatches {
					wrongReason++
				}
				mu.Unlock()
			}
		})
	}
	for range attempts {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()

	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	growth := runtime.NumGoroutine() - g0
	heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("5,000 attempts: %v; goroutines +%d (bound %d), heap %+d KiB (bound %d MiB)", byCode, growth, maxGoroutineGrowth, heap>>10, maxHeapGrowth>>20)
	if byCode[codes.OK] != server.DefaultMaxWatchesPerIdentity || byCode[codes.ResourceExhausted] != attempts-server.DefaultMaxWatchesPerIdentity || wrongReason > 0 {
		t.Errorf("outcomes %v (%d without TOO_MANY_WATCHES); want %d open, the rest RESOURCE_EXHAUSTED TOO_MANY_WATCHES", byCode, wrongReason, server.DefaultMaxWatchesPerIdentity)
	}
	if growth > maxGoroutineGrowth {
		t.Errorf("goroutines grew by %d, bound %d", growth, maxGoroutineGrowth)
	}
	if heap > maxHeapGrowth {
		t.Errorf("heap grew by %d bytes, bound %d", heap, maxHeapGrowth)
	}
}
