package ssf

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
)

type fakeSink struct {
	mu      sync.Mutex
	signals []Signal
}

func (s *fakeSink) Apply(_ context.Context, sig Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.signals = append(s.signals, sig)
	return nil
}

func (s *fakeSink) all() []Signal {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Signal(nil), s.signals...)
}

func TestReceiver(t *testing.T) {
	tx := testSigner(t, 0)
	// The trusted transmitter publishes its configuration and keys.
	var txURL string
	txSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/ssf-configuration":
			_ = json.NewEncoder(w).Encode(Metadata{Issuer: txURL, JWKSURI: txURL + "/jwks"})
		case "/jwks":
			_ = json.NewEncoder(w).Encode(tx.JWKS())
		default:
			http.NotFound(w, r)
		}
	}))
	defer txSrv.Close()
	txURL = txSrv.URL

	st := openTestStore(t, t.TempDir())
	defer st.Close()
	sink := &fakeSink{}
	rc := NewReceiver(ReceiverConfig{Issuers: []TrustedIssuer{{Issuer: txURL}}, Audience: "https://condaccess.example",
		Store: st, Sink: sink, Logger: slog.New(slog.DiscardHandler)})
	mux := http.NewServeMux()
	rc.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	n := 0
	set := func(signer *Signer, mod func(map[string]any)) string {
		n++
		c := map[string]any{
			"iss": txURL, "jti": "jti-" + string(rune('a'+n)), "iat": time.Now().Unix(), "aud": "https://condaccess.example",
			"sub_id": map[string]any{"format": "complex", "device": map[string]any{"format": "opaque", "id": "dev-1"}},
			"events": map[string]any{EventRiskLevelChange: map[string]any{"current_level": "HIGH", "principal": "DEVICE"}},
		}
		if mod != nil {
			mod(c)
		}
		tok, err := signer.Sign(c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	push := func(body, ctype string) (int, string) {
		resp, err := http.Post(srv.URL+"/ssf/receiver", ctype, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var e struct {
			Err string `json:"err"`
		}
		_ = json.Unmarshal(b, &e)
		return resp.StatusCode, e.Err
	}
	const ct = "application/secevent+jwt"
	replayed := set(tx, nil)
	if code, e := push(replayed, ct); code != 202 {
		t.Fatalf("first push: %d %s", code, e)
	}
	if got := sink.all(); len(got) != 1 || got[0].DeviceID != "dev-1" || got[0].Severity != commonv1.Severity_SEVERITY_HIGH || got[0].Source != txURL {
		t.Fatalf("signals = %+v", got)
	}

	bad := []struct {
		name, body, ctype, code string
	}{
		{"replayed jti", replayed, ct, ErrCodeInvalidRequest},
		{"wrong content type", set(tx, nil), "application/json", ErrCodeInvalidRequest},
		{"unsigned", "eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.", ct, ErrCodeInvalidRequest},
		{"garbage", "hello", ct, ErrCodeInvalidRequest},
		{"signed by another key", set(testSigner(t, 1), nil), ct, ErrCodeInvalidKey},
		{"untrusted issuer", set(tx, func(c map[string]any) { c["iss"] = "https://evil.example" }), ct, ErrCodeInvalidIssuer},
		{"wrong aud", set(tx, func(c map[string]any) { c["aud"] = "https://other.example" }), ct, ErrCodeInvalidAud},
		{"stale iat", set(tx, func(c map[string]any) { c["iat"] = time.Now().Add(-2 * time.Hour).Unix() }), ct, ErrCodeInvalidRequest},
		{"bad level", set(tx, func(c map[string]any) {
			c["events"] = map[string]any{EventRiskLevelChange: map[string]any{"current_level": "EXTREME"}}
		}), ct, ErrCodeInvalidRequest},
		{"bad status", set(tx, func(c map[string]any) {
			c["events"] = map[string]any{EventDeviceComplianceChange: map[string]any{"current_status": "meh"}}
		}), ct, ErrCodeInvalidRequest},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			code, e := push(tt.body, tt.ctype)
			if code != 400 || e != tt.code {
				t.Fatalf("%d %q, want 400 %q", code, e, tt.code)
			}
			if got := len(sink.all()); got != 1 {
				t.Fatalf("a refused SET reached the sink (%d signals)", got)
			}
		})
	}

	// Unknown event types are acknowledged and counted, not applied.
	if code, e := push(set(tx, func(c map[string]any) {
		c["events"] = map[string]any{"https://schemas.openid.net/secevent/risc/event-type/account-disabled": map[string]any{}}
	}), ct); code != 202 {
		t.Fatalf("unknown event: %d %s", code, e)
	}
	if rc.Unknown.Load() != 1 || len(sink.all()) != 1 {
		t.Fatalf("unknown = %d, signals = %d", rc.Unknown.Load(), len(sink.all()))
	}
	// Back to compliant: a resolving signal (no severity) for the same source.
	if code, e := push(set(tx, func(c map[string]any) {
		c["events"] = map[string]any{EventDeviceComplianceChange: map[string]any{"current_status": "compliant", "previous_status": "not-compliant"}}
	}), ct); code != 202 {
		t.Fatalf("compliant: %d %s", code, e)
	}
	// Two events in one SET become two alerts (distinct ids from one jti).
	if code, e := push(set(tx, func(c map[string]any) {
		c["events"] = map[string]any{
			EventRiskLevelChange:        map[string]any{"current_level": "MEDIUM", "principal": "DEVICE"},
			EventDeviceComplianceChange: map[string]any{"current_status": "not-compliant", "previous_status": "compliant"},
		}
	}), ct); code != 202 {
		t.Fatalf("two events: %d %s", code, e)
	}
	if got := sink.all(); len(got) != 4 || got[2].AlertID == got[3].AlertID || got[2].Category == got[3].Category {
		t.Fatalf("two events gave %+v", got[2:])
	}
	// Back to compliant: a resolving signal (no severity) for the same source.
	if code, e := push(set(tx, func(c map[string]any) {
		c["events"] = map[string]any{EventDeviceComplianceChange: map[string]any{"current_status": "compliant", "previous_status": "not-compliant"}}
	}), ct); code != 202 {
		t.Fatalf("compliant: %d %s", code, e)
	}
	got := sink.all()
	if last := got[len(got)-1]; last.Severity != commonv1.Severity_SEVERITY_UNSPECIFIED || last.Category != "ssf-device-compliance" || last.DeviceID != "dev-1" {
		t.Fatalf("resolve signal = %+v", last)
	}
}
