package compliancestore_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/services/compliance"
	"github.com/condaccess/condaccess/services/compliance/compliancestore"
)

// events returns the revisions, types and keys of the events after start.
func events(t *testing.T, s compliance.Store, start int64) []string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out []string
	head := s.Revision()
	if head <= start {
		return nil
	}
	err := s.Watch(ctx, start, func(e compliance.StoredEvent) error {
		out = append(out, fmt.Sprintf("%d %s %s %x", e.Revision, e.Type, e.Key, e.Payload))
		if e.Revision >= head {
			cancel()
		}
		return nil
	}, func(int64) error { return nil })
	if err != nil && ctx.Err() == nil {
		t.Fatalf("watch: %v", err)
	}
	return out
}

// TestCopyToPG: an embedded store with devices, policies, risk, an exclusion, an
// enrollment token and events is copied into PostgreSQL with its revisions, cursor,
// audit events and device CA; a watcher resuming at an old revision gets exactly the
// events it missed; a second copy into the same schema is refused and changes nothing.
func TestCopyToPG(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src, err := compliancestore.Open(ctx, compliancestore.Options{Path: filepath.Join(t.TempDir(), "compliance.db"), Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	svc := compliance.New(compliance.Config{Store: src, Encode: jsonEncode})
	go svc.Run(ctx) // policy changes wait for their sweep
	if _, err := svc.CreatePolicy(ctx, compliance.Policy{ID: "max-medium", DisplayName: "max medium", MaxDeviceRisk: compliance.RiskMedium,
		Assignment: compliance.Assignment{AllDevices: true}}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"dev-1", "dev-2", "dev-3"} {
		if _, err := svc.EnrollDevice(ctx, compliance.Device{ID: id, DisplayName: id, Platform: compliance.PlatformWindows, OSVersion: "10.0",
			OwnerUserID: "u-1", Groups: []string{"fin"}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := svc.ApplyRisk(ctx, 7, compliance.DeviceRisk{DeviceID: "dev-1", Level: compliance.RiskHigh, ActiveAlertIDs: []string{"a-1"}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.ExcludeDevice(ctx, "dev-2", "travel", time.Time{}, "admin"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.CreateEnrollmentToken(ctx, "dev-3", time.Hour); err != nil {
		t.Fatal(err)
	}
	mid := src.Revision() / 2
	wantAll, wantMissed := events(t, src, 0), events(t, src, mid)
	wantDevs, err := src.ListDevices(ctx, compliance.DeviceFilter{IncludeRetired: true})
	if err != nil {
		t.Fatal(err)
	}
	wantComp, wantRev, err := src.ListCompliance(ctx, compliance.ComplianceFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(wantAll)) != wantRev || len(wantMissed) == 0 || len(wantComp) != 3 {
		t.Fatalf("source: %d events up to revision %d, %d after %d, %d compliance rows; want every event, some after the middle, 3 rows",
			len(wantAll), wantRev, len(wantMissed), mid, len(wantComp))
	}

	url := pgtest.URL(t)
	dst := openPG(t, url)
	ca := &compliancestore.DeviceCAPEM{Cert: []byte("cert"), Key: []byte("key")}
	c, err := compliancestore.CopyToPG(ctx, src, dst, ca)
	if err != nil {
		t.Fatal(err)
	}
	if c.Revision != wantRev || c.Rows["devices"] != 3 || c.Rows["device_groups"] != 3 || c.Rows["exclusions"] != 1 || c.Rows["enrollment_tokens"] != 1 ||
		c.Rows["audit_events"] == 0 || c.Rows[compliancestore.EventTable] != wantRev || !c.DeviceCA {
		t.Fatalf("copied %+v, want revision %d, 3 devices in a group, 1 exclusion, 1 token, audit events, every event, the CA", c, wantRev)
	}
	if dst.Revision() != wantRev {
		t.Fatalf("target revision = %d, want %d", dst.Revision(), wantRev)
	}
	gotDevs, err := dst.ListDevices(ctx, compliance.DeviceFilter{Group: "fin"})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(wantDevs, gotDevs); d != "" {
		t.Errorf("devices (-source +target):\n%s", d)
	}
	gotComp, gotRev, err := dst.ListCompliance(ctx, compliance.ComplianceFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(wantComp, gotComp); d != "" || gotRev != wantRev {
		t.Errorf("compliance at revision %d, want %d (-source +target):\n%s", gotRev, wantRev, d)
	}
	if x, err := dst.ListExclusions(ctx, compliance.ExclusionFilter{ActiveOnly: true}); err != nil || len(x) != 1 || x[0].DeviceID != "dev-2" {
		t.Errorf("active exclusions = %v, %v; want dev-2's", x, err)
	}
	if cur, ok, err := dst.Cursor(ctx, compliance.RiskCursor); err != nil || !ok || cur != 7 {
		t.Errorf("risk cursor = %d, %v, %v; want 7", cur, ok, err)
	}
	if d := cmp.Diff(wantAll, events(t, dst, 0)); d != "" {
		t.Errorf("events (-source +target):\n%s", d)
	}
	if d := cmp.Diff(wantMissed, events(t, dst, mid)); d != "" {
		t.Errorf("events after revision %d (-source +target):\n%s", mid, d)
	}
	// Replicas started on the target sign with the copied CA.
	cert, key, err := compliancestore.SharedDeviceCA(ctx, url, func() ([]byte, []byte, error) { return nil, nil, errors.New("generated a new CA") })
	if err != nil || string(cert) != "cert" || string(key) != "key" {
		t.Errorf("shared device CA = %q, %q, %v; want the copied one", cert, key, err)
	}

	if _, err := compliancestore.CopyToPG(ctx, src, dst, nil); !errors.Is(err, compliancestore.ErrTargetNotEmpty) {
		t.Fatalf("second copy = %v, want ErrTargetNotEmpty", err)
	}
	if err := compliancestore.CheckEmpty(ctx, dst); !errors.Is(err, compliancestore.ErrTargetNotEmpty) {
		t.Fatalf("CheckEmpty = %v, want ErrTargetNotEmpty", err)
	}
	if got, _, err := dst.ListCompliance(ctx, compliance.ComplianceFilter{}); err != nil || len(got) != len(wantComp) || dst.Revision() != wantRev {
		t.Fatalf("a refused copy changed the target: %d rows, %v, revision %d", len(got), err, dst.Revision())
	}
}
