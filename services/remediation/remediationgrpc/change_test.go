package remediationgrpc_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/condaccess/condaccess/services/remediation"
	"github.com/condaccess/condaccess/services/remediation/remediationgrpc"
)

// TestDecodeChange: what a replica reads of each event EncodeEvent writes, and an
// undecodable payload is an error, never a zero change taken for real.
func TestDecodeChange(t *testing.T) {
	tests := []struct {
		name    string
		ev      remediation.Event
		want    remediation.Change
		payload []byte
		wantErr bool
	}{
		{name: "queued action", ev: remediation.Event{Action: &remediation.Action{ID: "act-1", DeviceID: "dev-1", State: remediation.ActionStateQueued}},
			want: remediation.Change{ActionID: "act-1", DeviceID: "dev-1", ActionState: remediation.ActionStateQueued}},
		{name: "sent action", ev: remediation.Event{Action: &remediation.Action{ID: "act-2", DeviceID: "dev-2", State: remediation.ActionStateSent}},
			want: remediation.Change{ActionID: "act-2", DeviceID: "dev-2", ActionState: remediation.ActionStateSent}},
		{name: "remediated investigation", ev: remediation.Event{Investigation: &remediation.Investigation{ID: "inv-1", DeviceID: "dev-1", State: remediation.StateRemediated}},
			want: remediation.Change{InvestigationState: remediation.StateRemediated}},
		{name: "not an event", payload: []byte{0xff, 0xff, 0xff}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.payload
			if p == nil {
				var err error
				if p, err = remediationgrpc.EncodeEvent(tt.ev); err != nil {
					t.Fatal(err)
				}
			}
			got, err := remediationgrpc.DecodeChange(p)
			if (err != nil) != tt.wantErr {
				t.Fatalf("DecodeChange err = %v, want error %v", err, tt.wantErr)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("DecodeChange (-want +got):\n%s", d)
			}
		})
	}
}
