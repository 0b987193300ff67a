package compliancegrpc

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/services/compliance"
	"github.com/condaccess/condaccess/services/compliance/compliancestore"
)

// TestSensorUpdatesOnlyItsFields: a device identity may change last_seen_time and
// os_version of its own device, nothing else; a static sensor certificate, even one
// whose subject is a device id, changes no device (the interceptor admits the role;
// the handler narrows it).
func TestSensorUpdatesOnlyItsFields(t *testing.T) {
	ctx := context.Background()
	st, err := compliancestore.Open(ctx, compliancestore.Options{Path: filepath.Join(t.TempDir(), "c.db"), Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := &deviceServer{Server: New(compliance.New(compliance.Config{Store: st, Encode: EncodeEvent}))}
	if _, err := s.EnrollDevice(ctx, &compliancev1.EnrollDeviceRequest{Device: &compliancev1.Device{
		DeviceId: "dev-1", Platform: commonv1.Platform_PLATFORM_LINUX, OsVersion: "6.1",
	}}); err != nil {
		t.Fatal(err)
	}
	device := func(id string) context.Context {
		return auth.NewContext(ctx, auth.Identity{Subject: auth.DeviceURI(id), Kind: auth.KindDevice, ID: id, Roles: []commonv1.Role{commonv1.Role_ROLE_SENSOR}})
	}
	sensor, otherSensor := device("dev-1"), device("dev-2")
	staticSensor := auth.NewContext(ctx, auth.Identity{Subject: "dev-1", Kind: auth.KindRoleCertificate, Roles: []commonv1.Role{commonv1.Role_ROLE_SENSOR}})
	admin := auth.NewContext(ctx, auth.Identity{Subject: "pa", Roles: []commonv1.Role{commonv1.Role_ROLE_SENSOR, commonv1.Role_ROLE_POLICY_ADMIN}})
	// A sensor certificate that also carries the legacy service role: the interceptor
	// admits it for the sensor role; the service role must not widen it to an admin's.
	sensorService := auth.NewContext(ctx, auth.Identity{Subject: "siem", Kind: auth.KindRoleCertificate, Roles: []commonv1.Role{commonv1.Role_ROLE_SENSOR, commonv1.Role_ROLE_SERVICE}})
	dev := &compliancev1.Device{DeviceId: "dev-1", Platform: commonv1.Platform_PLATFORM_LINUX, OsVersion: "6.8", DisplayName: "renamed",
		LastSeenTime: timestamppb.New(time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC))}
	tests := []struct {
		name  string
		ctx   context.Context
		paths []string
		want  codes.Code
	}{
		{"sensor: last seen and os version", sensor, []string{"last_seen_time", "os_version"}, codes.OK},
		{"sensor: display name", sensor, []string{"display_name"}, codes.PermissionDenied},
		{"sensor: whole device", sensor, nil, codes.PermissionDenied},
		{"sensor of another device", otherSensor, []string{"last_seen_time"}, codes.PermissionDenied},
		{"static sensor whose subject is the device id", staticSensor, []string{"last_seen_time"}, codes.PermissionDenied},
		{"attack: sensor with the service role sets groups", sensorService, []string{"groups"}, codes.PermissionDenied},
		{"attack: sensor with the service role, whole device", sensorService, nil, codes.PermissionDenied},
		{"policy admin: whole device", admin, nil, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mask *fieldmaskpb.FieldMask
			if tt.paths != nil {
				mask = &fieldmaskpb.FieldMask{Paths: tt.paths}
			}
			_, err := s.UpdateDevice(tt.ctx, &compliancev1.UpdateDeviceRequest{Device: dev, UpdateMask: mask})
			if got := status.Code(err); got != tt.want {
				t.Fatalf("UpdateDevice = %v, want %v", err, tt.want)
			}
		})
	}
	got, err := s.GetDevice(ctx, &compliancev1.GetDeviceRequest{DeviceId: "dev-1"})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetDevice().GetOsVersion() != "6.8" || got.GetDevice().GetDisplayName() != "renamed" {
		t.Errorf("device after updates = %v", got.GetDevice())
	}
}
