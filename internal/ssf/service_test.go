package ssf

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"testing"
	"time"
)

func TestNewRefusesBadOptions(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		ok   bool
	}{
		{"defaults", Options{}, true},
		{"allow-list prefix and address", Options{PushAllow: stringList{"127.0.0.0/8", "::1"}}, true},
		{"allow-list not a prefix", Options{PushAllow: stringList{"localhost"}}, false},
		{"negative max pending", Options{MaxPending: -1}, false},
		{"inactivity timeout under a second", Options{InactivityTimeout: 500 * time.Millisecond}, false},
		{"negative inactivity timeout", Options{InactivityTimeout: -time.Second}, false},
		{"inactivity timeout", Options{InactivityTimeout: time.Hour}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(context.Background(), tt.o, Env{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:7480", Insecure: true,
				Logger: slog.New(slog.DiscardHandler), Mux: http.NewServeMux()})
			if (err == nil) != tt.ok {
				t.Fatalf("New = %v, want ok=%v", err, tt.ok)
			}
			if s != nil {
				s.Close()
			}
		})
	}
}

func TestParsePrefixes(t *testing.T) {
	got, err := ParsePrefixes([]string{"127.0.0.1", "10.1.2.3/8", "::1"})
	want := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	if err != nil || len(got) != len(want) {
		t.Fatalf("ParsePrefixes = %v, %v", got, err)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("prefix %d = %s, want %s", i, got[i], want[i])
		}
	}
}
