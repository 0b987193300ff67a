package auth_test

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	_ "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	_ "github.com/condaccess/condaccess/gen/go/condaccess/audit/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	_ "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	_ "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	_ "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/auth"
)

// deviceBound are the RPCs a device certificate (the sensor role) may reach, each
// with the handler check that binds it to its own device. A new RPC granting
// ROLE_SENSOR fails TestWhatADeviceReaches until it is bound and listed here.
var deviceBound = map[string]string{
	"/condaccess.risk.v1.RiskService/ReportAlert":                            "auth.CheckDevice on the alert's device",
	"/condaccess.risk.v1.RiskService/ReportAlerts":                           "auth.CheckDevice on every alert, before any is stored",
	"/condaccess.compliance.v1.DeviceService/UpdateDevice":                   "checkOwnDevice; last_seen_time and os_version only",
	"/condaccess.compliance.v1.DeviceIdentityService/RenewDeviceCertificate": "the device id from the certificate, never the request",
	"/condaccess.remediation.v1.AgentService/Connect":                        "auth.RequireDevice on the hello",
	// Open to anyone; the single-use token authenticates it.
	"/condaccess.compliance.v1.DeviceIdentityService/EnrollDeviceIdentity": "open: its token names the device",
	// Open to anyone (the end user's page); the sealed reference of a 403 names the
	// sign-in, and the answer carries no policy, reason or alert.
	"/condaccess.access.v1.AccessService/GetBlockedStatus":   "open: its sealed reference names the sign-in",
	"/condaccess.access.v1.AccessService/WatchBlockedStatus": "open: its sealed reference names the sign-in",
}

// TestWhatADeviceReaches walks every condaccess RPC in the contracts: a device
// identity (the sensor role, no service) may reach exactly deviceBound.
func TestWhatADeviceReaches(t *testing.T) {
	a := auth.NewAuthorizer(auth.Config{})
	var reached []string
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		if !strings.HasPrefix(string(fd.Package()), "condaccess.") {
			return true
		}
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				m := "/" + string(sd.FullName()) + "/" + string(sd.Methods().Get(j).Name())
				roles, open := a.AllowedRoles(m)
				if open || slices.Contains(roles, commonv1.Role_ROLE_SENSOR) {
					reached = append(reached, m)
				}
			}
		}
		return true
	})
	if len(reached) == 0 {
		t.Fatal("no RPC found: are the contracts registered?")
	}
	for _, m := range reached {
		if _, ok := deviceBound[m]; !ok {
			t.Errorf("a device certificate reaches %s, which is not bound to its own device (or not reviewed)", m)
		}
	}
	for m := range deviceBound {
		if !slices.Contains(reached, m) {
			t.Errorf("%s is listed as reachable by a device but is not", m)
		}
	}
}
