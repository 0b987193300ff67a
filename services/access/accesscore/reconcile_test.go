package accesscore_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/condaccess/condaccess/services/access"
	"github.com/condaccess/condaccess/services/access/accesscore"
	"github.com/condaccess/condaccess/services/access/accessstore"
)

// TestReconcileSessions: a session that reached the store ACTIVE after its device
// turned noncompliant (another replica's late write, or a replica killed before it
// followed the change) is revoked by the reconciliation with DEVICE_NONCOMPLIANT;
// sessions of compliant, in-grace and unknown devices are left alone; a second pass
// revokes nothing.
func TestReconcileSessions(t *testing.T) {
	ctx := context.Background()
	st, err := accessstore.Open(ctx, accessstore.Options{Path: filepath.Join(t.TempDir(), "access.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	devices := map[string]access.ComplianceState{
		"dev-bad":   access.ComplianceNoncompliant,
		"dev-good":  access.ComplianceCompliant,
		"dev-grace": access.ComplianceGrace,
	}
	rev := int64(0)
	for id, state := range devices {
		rev++
		if err := st.ApplyDevice(ctx, &access.DeviceCompliance{DeviceID: id, State: state, Revision: rev}, rev, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	var sessions []*access.Session
	for _, dev := range []string{"dev-bad", "dev-good", "dev-grace", "dev-unknown"} {
		sessions = append(sessions, &access.Session{ID: "s-" + dev, UserID: "u-1", DeviceID: dev, AppID: "payroll",
			State: access.SessionActive, CreateTime: now, LastAccessTime: now})
	}
	if err := st.WriteBatch(ctx, nil, sessions); err != nil {
		t.Fatal(err)
	}
	svc, err := accesscore.New(ctx, accesscore.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	n, err := svc.ReconcileSessions(ctx)
	if err != nil || n != 1 {
		t.Fatalf("ReconcileSessions = %d, %v; want 1 (the noncompliant device's session)", n, err)
	}
	for _, tt := range []struct {
		device, state, reason string
	}{
		{"dev-bad", "revoked", accesscore.ReasonDeviceNoncompliant},
		{"dev-good", "active", ""},
		{"dev-grace", "active", ""},
		{"dev-unknown", "active", ""},
	} {
		t.Run(tt.device, func(t *testing.T) {
			got, _, err := st.ListSessions(ctx, access.SessionFilter{DeviceID: tt.device}, "", 10)
			if err != nil || len(got) != 1 {
				t.Fatalf("sessions of %s: %v, %v", tt.device, got, err)
			}
			state := map[access.SessionState]string{access.SessionActive: "active", access.SessionRevoked: "revoked"}[got[0].State]
			if state != tt.state || got[0].RevokeReason != tt.reason {
				t.Fatalf("session of %s is %s (%q), want %s (%q)", tt.device, state, got[0].RevokeReason, tt.state, tt.reason)
			}
		})
	}
	if n, err := svc.ReconcileSessions(ctx); err != nil || n != 0 {
		t.Fatalf("second ReconcileSessions = %d, %v; want 0", n, err)
	}
}
