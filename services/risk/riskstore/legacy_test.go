package riskstore_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	_ "modernc.org/sqlite"

	"github.com/condaccess/condaccess/services/risk"
	"github.com/condaccess/condaccess/services/risk/riskgrpc"
	"github.com/condaccess/condaccess/services/risk/riskstore"
)

// An alert as binaries before the version 2 content hash (and before the binary
// alert encoding) stored it: its JSON document and its version 1 content hash.
const (
	legacyHash = "3d476bf2d1aa110fea073e4f662ad3630a6a2fd24578e34097abdbb303939cf9"
	legacyData = `{"id":"old-1","device_id":"dev-1","severity":4,"status":1,"category":"Malware","title":"Malicious file opened","description":"invoice.exe ran from a mail attachment","detection_source":"condaccess-agent","detect_time":"2026-11-27T09:30:00.123456789Z","evidence":[{"file":{"path":"C:\\Users\\ada\\invoice.exe","sha256":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","size":4096}},{"process":{"pid":4242,"name":"invoice.exe","cmd":"invoice.exe /s","image_sha256":"fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"}}],"assigned_to":"ada","create_time":"2026-11-27T09:31:00.000000005Z","update_time":"2026-11-27T09:31:00.000000005Z","version":1}`
)

// legacyAlert is the alert legacyData holds, as the sensor reported it.
func legacyAlert() risk.Alert {
	return risk.Alert{
		ID: "old-1", DeviceID: "dev-1", Severity: risk.SeverityHigh, Category: "Malware", Title: "Malicious file opened",
		Description: "invoice.exe ran from a mail attachment", DetectionSource: "condaccess-agent", AssignedTo: "ada",
		DetectTime: time.Date(2026, 11, 27, 9, 30, 0, 123456789, time.UTC),
		Evidence: []risk.Evidence{
			{File: &risk.FileEvidence{Path: `C:\Users\ada\invoice.exe`, SHA256: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", SizeBytes: 4096}},
			{Process: &risk.ProcessEvidence{PID: 4242, Name: "invoice.exe", CommandLine: "invoice.exe /s", ImageSHA256: "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"}},
		},
	}
}

// TestLegacyAlert: an alert written by an older binary (JSON document, version 1
// content hash) is read back, and reporting it again is recognised as a repeat
// (created false, nothing published) while different content under its id is a
// conflict.
func TestLegacyAlert(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "risk.db")
	st, err := riskstore.Open(ctx, riskstore.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	// The older binary's writes: the event, the alert, the level.
	stored := legacyAlert()
	stored.Status, stored.Version = risk.StatusNew, 1
	stored.CreateTime = time.Date(2026, 11, 27, 9, 31, 0, 5, time.UTC)
	stored.UpdateTime = stored.CreateTime
	err = st.Update(ctx, func(tx risk.Tx) error {
		rev, err := tx.Append(ctx, risk.StoredEvent{Type: risk.EventAlertChanged, Key: stored.ID, Payload: []byte("x")})
		if err != nil {
			return err
		}
		if err := tx.InsertAlert(ctx, stored, legacyHash, rev); err != nil {
			return err
		}
		rev, err = tx.Append(ctx, risk.StoredEvent{Type: risk.EventDeviceRiskChanged, Key: stored.DeviceID, Payload: []byte("y")})
		if err != nil {
			return err
		}
		return tx.PutDeviceRisk(ctx, risk.DeviceRisk{DeviceID: stored.DeviceID, Level: risk.LevelHigh, Revision: rev, UpdateTime: stored.CreateTime, CauseAlertID: stored.ID})
	})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	// ... whose row held the JSON document.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	res, err := db.Exec(`UPDATE alerts SET data = ? WHERE alert_id = ?`, []byte(legacyData), stored.ID)
	if n, _ := res.RowsAffected(); err != nil || n != 1 {
		t.Fatalf("rewrite the row as JSON: %d rows, %v", n, err)
	}
	db.Close()

	st, err = riskstore.Open(ctx, riskstore.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got, err := st.Alert(ctx, stored.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(stored, got); diff != "" {
		t.Errorf("legacy alert read back (-want +got):\n%s", diff)
	}

	svc := risk.New(risk.Config{Store: st, Encode: riskgrpc.EncodeEvent})
	rev := st.Revision()
	r, err := svc.ReportAlert(ctx, legacyAlert())
	if err != nil {
		t.Fatalf("ReportAlert(same content): %v", err)
	}
	if r.Created {
		t.Error("ReportAlert(same content as the legacy alert) created it again")
	}
	if diff := cmp.Diff(stored, r.Alert); diff != "" {
		t.Errorf("ReportAlert(same content) alert (-want +got):\n%s", diff)
	}
	if got := st.Revision(); got != rev {
		t.Errorf("a repeat published events: revision %d -> %d", rev, got)
	}
	for _, mut := range []func(a *risk.Alert){
		func(a *risk.Alert) { a.Severity = risk.SeverityLow },
		func(a *risk.Alert) { a.Evidence[1].Process.CommandLine = "invoice.exe /x" },
		func(a *risk.Alert) { a.DetectTime = time.Time{} },
	} {
		a := legacyAlert()
		mut(&a)
		if _, err := svc.ReportAlert(ctx, a); !errors.Is(err, risk.ErrAlertConflict) {
			t.Errorf("ReportAlert(different content) = %v, want ErrAlertConflict", err)
		}
	}
	// Batches too.
	results, err := svc.ReportAlerts(ctx, []risk.Alert{legacyAlert()})
	if err != nil || len(results) != 1 || results[0].Created || results[0].Err != nil {
		t.Errorf("ReportAlerts(same content) = %+v, %v; want one repeat", results, err)
	}
	if got := st.Revision(); got != rev {
		t.Errorf("repeats and conflicts published events: revision %d -> %d", rev, got)
	}
}
