package revocation_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/devca"
	"github.com/condaccess/condaccess/internal/revocation"
	"github.com/condaccess/condaccess/services/compliance/compliancetest"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // poll cadence
	}
}

// TestFeed: the set is not current until the feed listed the identities (a
// revocation made before the feed started is found by the listing), follows a
// revocation and a new enrollment from the stream, and stops being current when the
// compliance service goes away.
func TestFeed(t *testing.T) {
	_, riskAddr := compliancetest.StartRisk(t)
	dir := t.TempDir()
	caFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if _, err := devca.Generate(caFile, keyFile, "test"); err != nil {
		t.Fatal(err)
	}
	h := compliancetest.Start(t, riskAddr, compliancetest.Options{DeviceCAFile: caFile, DeviceCAKeyFile: keyFile})
	ids := compliancev1.NewDeviceIdentityServiceClient(h.Conn)
	ctx := context.Background()
	enroll := func(id string) {
		t.Helper()
		tok, err := ids.CreateEnrollmentToken(ctx, &compliancev1.CreateEnrollmentTokenRequest{DeviceId: id})
		if err != nil {
			t.Fatal(err)
		}
		_, csr, err := devca.NewCSR()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ids.EnrollDeviceIdentity(ctx, &compliancev1.EnrollDeviceIdentityRequest{Token: tok.GetToken(), CsrPem: string(csr)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"dev-1", "dev-2"} {
		if _, err := h.Devices.EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{DeviceId: id, Platform: commonv1.Platform_PLATFORM_LINUX}}); err != nil {
			t.Fatal(err)
		}
		enroll(id)
	}
	if _, err := ids.RevokeDeviceIdentity(ctx, &compliancev1.RevokeDeviceIdentityRequest{DeviceId: "dev-1"}); err != nil {
		t.Fatal(err)
	}

	set := auth.NewRevocations()
	set.SetCurrent(false) // as serve does before it serves
	f := &revocation.Feed{Compliance: h.Compliance, Identities: ids, Set: set, StaleAfter: 2 * time.Second}
	fctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = f.Run(fctx) }()
	t.Cleanup(func() { stop(); <-done })

	waitFor(t, "the set current", set.Current)
	if !set.IsRevoked("dev-1") || set.IsRevoked("dev-2") {
		t.Fatalf("after the listing: dev-1 revoked %v, dev-2 revoked %v; want true, false", set.IsRevoked("dev-1"), set.IsRevoked("dev-2"))
	}
	if _, err := ids.RevokeDeviceIdentity(ctx, &compliancev1.RevokeDeviceIdentityRequest{DeviceId: "dev-2"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "dev-2 revoked from the stream", func() bool { return set.IsRevoked("dev-2") })
	enroll("dev-2")
	waitFor(t, "dev-2 enrolled again", func() bool { return !set.IsRevoked("dev-2") })

	h.Stop()
	waitFor(t, "the set no longer current", func() bool { return !set.Current() })
}
