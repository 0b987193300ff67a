package httpface

import (
	"testing"

	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
)

func TestUnknownFieldPath(t *testing.T) {
	md := (&riskv1.ReportAlertRequest{}).ProtoReflect().Descriptor()
	tests := []struct{ name, body, want string }{
		{"none", `{"alert":{"alertId":"a-1","title":"x"}}`, ""},
		{"proto spelling is known", `{"alert":{"alert_id":"a-1","detect_time":"2026-01-01T00:00:00Z"}}`, ""},
		{"top level", `{"alert":{},"allert":{}}`, "allert"},
		{"nested", `{"alert":{"alertId":"a-1","titel":"x"}}`, "alert.titel"},
		{"in a list", `{"alert":{"comments":[{},{"nope":1}]}}`, "alert.comments[1].nope"},
		{"well-known types are not entered", `{"alert":{"detectTime":"2026-01-01T00:00:00Z"}}`, ""},
		{"first in name order", `{"zz":1,"aa":2}`, "aa"},
		{"not an object", `[1,2]`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := unknownFieldPath([]byte(tt.body), md, ""); got != tt.want {
				t.Fatalf("unknownFieldPath(%s) = %q, want %q", tt.body, got, tt.want)
			}
		})
	}
}
