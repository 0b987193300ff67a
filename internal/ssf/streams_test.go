package ssf

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/consumer"
	"github.com/condaccess/condaccess/internal/dbtx"
)

// chanSource is a compliance feed whose events the test sends.
type chanSource chan *compliancev1.ComplianceEvent

func (s chanSource) Watch(ctx context.Context, _ int64) (consumer.Stream[*compliancev1.ComplianceEvent], error) {
	return chanStream{ctx, s}, nil
}

type chanStream struct {
	ctx context.Context
	ch  chanSource
}

func (s chanStream) Recv() (*compliancev1.ComplianceEvent, int64, bool, error) {
	select {
	case ev := <-s.ch:
		return ev, ev.GetRevision(), false, nil
	case <-s.ctx.Done():
		return nil, 0, false, s.ctx.Err()
	}
}

// complianceFlip is dev-1 becoming noncompliant (odd revisions) or compliant again.
func complianceFlip(rev int64) *compliancev1.ComplianceEvent {
	cur, prev := commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT, commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT
	if rev%2 == 0 {
		cur, prev = prev, cur
	}
	return &compliancev1.ComplianceEvent{Revision: rev, EventTime: timestamppb.Now(),
		Payload: &compliancev1.ComplianceEvent_DeviceComplianceChanged{DeviceComplianceChanged: &compliancev1.DeviceComplianceChanged{
			DeviceCompliance: &compliancev1.DeviceCompliance{DeviceId: "dev-1", State: cur}, PreviousState: prev,
		}}}
}

// runFeed runs the transmitter's compliance feed over src until the test ends.
func (f *fixture) runFeed(src chanSource) {
	f.t.Helper()
	if err := f.store.SetCursor(context.Background(), feedCompliance, 0); err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := newFeed(f.tx, feedCompliance, src, f.tx.complianceEvent)
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	f.t.Cleanup(func() { cancel(); <-done })
}

// waitCursor waits until the compliance feed applied rev.
func (f *fixture) waitCursor(rev int64) {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, _, err := f.store.Cursor(context.Background(), feedCompliance)
		if err != nil {
			f.t.Fatal(err)
		}
		if got >= rev {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("feed at %d, want %d", got, rev)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (f *fixture) status(token, id string) streamStatus {
	f.t.Helper()
	code, b := f.do("GET", "/ssf/status?stream_id="+id, token, "")
	var st streamStatus
	if code != 200 || json.Unmarshal(b, &st) != nil {
		f.t.Fatalf("status: %d %s", code, b)
	}
	return st
}

// events verifies every SET of a poll response and returns their event types by jti.
func (f *fixture) events(p pollResp, aud string) map[string]map[string]json.RawMessage {
	f.t.Helper()
	out := map[string]map[string]json.RawMessage{}
	for jti, tok := range p.Sets {
		c, err := VerifySET(tok, VerifyOptions{Issuer: f.srv.URL, Audience: aud, Keys: f.tx.cfg.Signer.JWKS(), MaxAge: time.Minute, Skew: time.Minute})
		if err != nil || c.Jti != jti {
			f.t.Fatalf("SET %s: %v", jti, err)
		}
		out[jti] = c.Events
	}
	return out
}

// meterReader installs a manual metric reader as the global meter provider for the
// test (the transmitter's counters are made from it at construction).
func meterReader(t *testing.T) *sdkmetric.ManualReader {
	t.Helper()
	r := sdkmetric.NewManualReader()
	prev := otel.GetMeterProvider()
	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(r)))
	t.Cleanup(func() { otel.SetMeterProvider(prev) })
	return r
}

// counterValue sums a counter's points whose "result" attribute is result.
func counterValue(t *testing.T, r *sdkmetric.ManualReader, name, result string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			sum, ok := m.Data.(metricdata.Sum[int64])
			if m.Name != name || !ok {
				continue
			}
			for _, dp := range sum.DataPoints {
				if v, ok := dp.Attributes.Value("result"); ok && v.AsString() == result {
					n += dp.Value
				}
			}
		}
	}
	return n
}

// TestOutboxBound: a receiver that never acknowledges gets its stream paused at the
// bound, with the reason in its status, a Stream Updated SET and a metric; the SETs it
// holds are kept; another receiver's stream goes on; after acknowledging and enabling
// again, the stream delivers what it held and new events.
func TestOutboxBound(t *testing.T) {
	reader := meterReader(t)
	f := newFixtureWith(t, "", func(c *Config) { c.MaxPending = 3 })
	evs := `{"events_requested":["` + EventDeviceComplianceChange + `"]}`
	stuck := f.createStream(f.token, evs).StreamID
	live := f.createStream(f.other, evs).StreamID
	src := make(chanSource)
	f.runFeed(src)
	pollLive := func() int {
		t.Helper()
		code, b := f.do("POST", "/ssf/poll/"+live, f.other, `{"returnImmediately":true}`)
		var p pollResp
		if code != 200 || json.Unmarshal(b, &p) != nil {
			t.Fatalf("poll: %d %s", code, b)
		}
		var ack []string
		for j := range p.Sets {
			ack = append(ack, j)
		}
		body, _ := json.Marshal(map[string]any{"ack": ack, "maxEvents": 0})
		if code, b := f.do("POST", "/ssf/poll/"+live, f.other, string(body)); code != 200 {
			t.Fatalf("ack: %d %s", code, b)
		}
		return len(ack)
	}
	for rev := int64(1); rev <= 3; rev++ {
		src <- complianceFlip(rev)
	}
	f.waitCursor(3)
	if n := pollLive(); n != 3 {
		t.Fatalf("live stream got %d SETs, want 3", n)
	}
	if st := f.status(f.token, stuck); st.Status != StatusEnabled {
		t.Fatalf("at the bound (not past it) the stream is %+v", st)
	}
	held, _, err := f.store.PendingSETs(context.Background(), stuck, 10, false)
	if err != nil || len(held) != 3 {
		t.Fatalf("held %d (%v)", len(held), err)
	}
	for rev := int64(4); rev <= 5; rev++ {
		src <- complianceFlip(rev)
	}
	f.waitCursor(5)

	st := f.status(f.token, stuck)
	if st.Status != StatusPaused || st.Reason != OutboxFullReason(3) {
		t.Fatalf("stuck stream status %+v, want paused for outbox_full", st)
	}
	if n := pollLive(); n != 2 {
		t.Fatalf("live stream got %d SETs after the other was paused, want 2", n)
	}
	if st := f.status(f.other, live); st.Status != StatusEnabled {
		t.Fatalf("live stream %+v", st)
	}
	if got := counterValue(t, reader, "condaccess.ssf.transmitter.sets", "dropped_outbox_full"); got != 2 {
		t.Errorf("dropped_outbox_full = %d, want 2", got)
	}
	if got := counterValue(t, reader, "condaccess.ssf.transmitter.stream_pauses", "outbox_full"); got != 1 {
		t.Errorf("stream_pauses{outbox_full} = %d, want 1", got)
	}
	// Paused: a poll returns only the Stream Updated SET.
	p := f.poll(stuck, `{"returnImmediately":true}`)
	events := f.events(p, "rp-a")
	if len(events) != 1 {
		t.Fatalf("paused stream delivered %d SETs, want the Stream Updated SET alone", len(events))
	}
	var notice string
	for jti, e := range events {
		var body struct{ Status, Reason string }
		if err := json.Unmarshal(e[EventStreamUpdated], &body); err != nil || body.Status != StatusPaused || body.Reason != OutboxFullReason(3) {
			t.Fatalf("Stream Updated SET %s: %s (%v)", jti, e[EventStreamUpdated], err)
		}
		notice = jti
	}
	// A verification request on the full stream is refused and stores nothing.
	if code, b := f.do("POST", "/ssf/verify", f.token, `{"stream_id":"`+stuck+`"}`); code != http.StatusTooManyRequests {
		t.Fatalf("verify on a full stream: %d %s, want 429", code, b)
	}
	if held2, _, _ := f.store.PendingSETs(context.Background(), stuck, 10, false); len(held2) != 4 {
		t.Fatalf("outbox holds %d, want the 3 held and the notice", len(held2))
	}
	// The receiver acknowledges the notice and enables the stream: it gets the three
	// held SETs (the same jtis), then new events again.
	f.poll(stuck, `{"ack":["`+notice+`"],"maxEvents":0}`)
	if code, b := f.do("POST", "/ssf/status", f.token, `{"stream_id":"`+stuck+`","status":"enabled"}`); code != 200 {
		t.Fatalf("enable: %d %s", code, b)
	}
	p = f.poll(stuck, `{"returnImmediately":true}`)
	for _, h := range held {
		if p.Sets[h.JTI] != h.Token {
			t.Fatalf("held SET %s not delivered after enabling", h.JTI)
		}
	}
	var ack []string
	for j := range p.Sets {
		ack = append(ack, j)
	}
	body, _ := json.Marshal(map[string]any{"ack": ack, "maxEvents": 0})
	f.poll(stuck, string(body))
	src <- complianceFlip(6)
	f.waitCursor(6)
	if p := f.poll(stuck, `{"returnImmediately":true}`); len(p.Sets) != 1 {
		t.Fatalf("after catching up the stream got %d SETs, want 1", len(p.Sets))
	}
	if st := f.status(f.token, stuck); st.Status != StatusEnabled {
		t.Fatalf("status %+v", st)
	}
}

// identityHeader names the test identity (testIdentities) the fixture's server puts in
// each request's context, as auth.HTTPIdentity does from a verified certificate.
const identityHeader = "X-Test-Identity"

var testIdentities = map[string]auth.Identity{
	"secops-admin":         {Subject: "alice", Kind: auth.KindRoleCertificate, Roles: []commonv1.Role{commonv1.Role_ROLE_SECOPS_ADMIN}},
	"reader":               {Subject: "rita", Kind: auth.KindRoleCertificate, Roles: []commonv1.Role{commonv1.Role_ROLE_READER}},
	"policy-admin":         {Subject: "paul", Kind: auth.KindRoleCertificate, Roles: []commonv1.Role{commonv1.Role_ROLE_POLICY_ADMIN}},
	"service":              {Subject: "risk", Kind: auth.KindService, ID: "risk", Roles: []commonv1.Role{commonv1.Role_ROLE_SERVICE, commonv1.Role_ROLE_SECOPS_ADMIN}},
	"console secops-admin": {Subject: "alice@example.com", Kind: auth.KindConsoleSession, Roles: []commonv1.Role{commonv1.Role_ROLE_SECOPS_ADMIN}},
	"development":          {Subject: auth.DevSubject, Kind: auth.KindDevelopment, Roles: auth.AllRoles()},
	"device":               {Subject: "dev-1", Kind: auth.KindDevice, ID: "dev-1", Roles: []commonv1.Role{commonv1.Role_ROLE_SENSOR}},
}

func withTestIdentity(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, ok := testIdentities[r.Header.Get(identityHeader)]; ok {
			r = r.WithContext(auth.NewContext(r.Context(), id))
		}
		next.ServeHTTP(w, r)
	})
}

// doAs sends a request as a test identity (no bearer token unless token is set).
func (f *fixture) doAs(identity, method, path, token, body string) (int, []byte) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set(identityHeader, identity)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestStreamManagementByAdminCertificate(t *testing.T) {
	f := newFixtureWith(t, "", func(c *Config) { c.AdminCertificates = true })
	own := f.createStream(f.token, `{}`).StreamID
	// Refused: everyone but an admin certificate, with the same 401 a caller without a
	// token gets; nothing is created.
	refused := []struct{ name, identity, token string }{
		{"no identity", "", ""},
		{"reader certificate", "reader", ""},
		{"policy-admin certificate", "policy-admin", ""},
		{"service certificate with the role", "service", ""},
		{"console session with the role", "console secops-admin", ""},
		{"development identity", "development", ""},
		{"device certificate", "device", ""},
		{"admin certificate with a wrong bearer token", "secops-admin", "not-a-token"},
	}
	for _, tt := range refused {
		t.Run("refused: "+tt.name, func(t *testing.T) {
			for _, e := range []struct{ method, path, body string }{
				{"POST", "/ssf/stream", `{"aud":"rp-a"}`},
				{"GET", "/ssf/stream", ""},
				{"GET", "/ssf/status?stream_id=" + own, ""},
				{"POST", "/ssf/status", `{"stream_id":"` + own + `","status":"disabled"}`},
				{"DELETE", "/ssf/stream?stream_id=" + own, ""},
			} {
				if code, b := f.doAs(tt.identity, e.method, e.path, tt.token, e.body); code != http.StatusUnauthorized {
					t.Fatalf("%s %s: %d %s, want 401", e.method, e.path, code, b)
				}
			}
		})
	}
	if sts, _ := f.store.ListStreams(context.Background(), ""); len(sts) != 1 || sts[0].Status != StatusEnabled {
		t.Fatalf("refused calls changed the streams: %+v", sts)
	}
	t.Run("admin certificates off (development mode)", func(t *testing.T) {
		g := newFixtureWith(t, "", nil)
		if code, b := g.doAs("secops-admin", "GET", "/ssf/stream", "", ""); code != http.StatusUnauthorized {
			t.Fatalf("%d %s, want 401", code, b)
		}
		if strings.Contains(mustGet(t, g, "/.well-known/ssf-configuration"), "8705") {
			t.Error("metadata advertises mutual TLS while admin certificates are off")
		}
	})
	if !strings.Contains(mustGet(t, f, "/.well-known/ssf-configuration"), `"spec_urn":"urn:ietf:rfc:8705"`) {
		t.Error("metadata does not advertise mutual TLS")
	}

	// Create: an admin names a registered receiver in aud.
	for _, tt := range []struct{ name, body string }{
		{"no aud", `{}`},
		{"unknown receiver", `{"aud":"rp-unknown"}`},
		{"two receivers", `{"aud":["rp-a","rp-b"]}`},
	} {
		t.Run("create refused: "+tt.name, func(t *testing.T) {
			if code, b := f.doAs("secops-admin", "POST", "/ssf/stream", "", tt.body); code != http.StatusBadRequest {
				t.Fatalf("%d %s, want 400", code, b)
			}
		})
	}
	code, b := f.doAs("secops-admin", "POST", "/ssf/stream", "", `{"aud":"rp-b","description":"made by an admin"}`)
	var made StreamConfig
	if code != http.StatusCreated || json.Unmarshal(b, &made) != nil || len(made.Aud) != 1 || made.Aud[0] != "rp-b" {
		t.Fatalf("admin create: %d %s", code, b)
	}
	// The receiver owns it; the other receiver does not see it.
	if code, _ := f.do("GET", "/ssf/stream?stream_id="+made.StreamID, f.other, ""); code != 200 {
		t.Fatalf("rp-b reads the stream made for it: %d", code)
	}
	if code, _ := f.do("GET", "/ssf/stream?stream_id="+made.StreamID, f.token, ""); code != 404 {
		t.Fatalf("rp-a reads rp-b's stream: %d, want 404", code)
	}
	// An admin lists every receiver's streams.
	code, b = f.doAs("secops-admin", "GET", "/ssf/stream", "", "")
	var all []StreamConfig
	if code != 200 || json.Unmarshal(b, &all) != nil || len(all) != 2 {
		t.Fatalf("admin list: %d %s", code, b)
	}
	// An admin may not poll (polling acknowledges): 403.
	if code, b := f.doAs("secops-admin", "POST", "/ssf/poll/"+own, "", `{"returnImmediately":true}`); code != http.StatusForbidden {
		t.Fatalf("admin poll: %d %s, want 403", code, b)
	}

	// Status changed by an admin: the receiver gets a Stream Updated SET even while
	// paused; its own change sends none.
	if code, b := f.doAs("secops-admin", "POST", "/ssf/status", "", `{"stream_id":"`+own+`","status":"paused","reason":"maintenance"}`); code != 200 {
		t.Fatalf("admin pause: %d %s", code, b)
	}
	f.verifyEvent(own, "held while paused")
	p := f.poll(own, `{"returnImmediately":true}`)
	ev := f.events(p, "rp-a")
	if len(ev) != 1 {
		t.Fatalf("paused stream delivered %d SETs, want the Stream Updated SET alone", len(ev))
	}
	var ack []string
	for jti, e := range ev {
		if !strings.Contains(string(e[EventStreamUpdated]), `"status":"paused"`) || !strings.Contains(string(e[EventStreamUpdated]), "maintenance") {
			t.Fatalf("Stream Updated SET: %s", e[EventStreamUpdated])
		}
		ack = append(ack, jti)
	}
	f.poll(own, `{"ack":["`+ack[0]+`"],"maxEvents":0}`)
	if code, b := f.do("POST", "/ssf/status", f.token, `{"stream_id":"`+own+`","status":"enabled"}`); code != 200 {
		t.Fatalf("receiver enables: %d %s", code, b)
	}
	p = f.poll(own, `{"returnImmediately":true}`)
	for _, e := range f.events(p, "rp-a") {
		if e[EventStreamUpdated] != nil {
			t.Fatal("the receiver's own status change sent a Stream Updated SET")
		}
	}
	if len(p.Sets) != 1 {
		t.Fatalf("after enabling: %d SETs, want the held verification SET", len(p.Sets))
	}
	// An admin deletes a receiver's stream; a push stream's authorization header is a
	// secret the audit log does not keep.
	if code, b := f.doAs("secops-admin", "DELETE", "/ssf/stream?stream_id="+made.StreamID, "", ""); code != http.StatusNoContent {
		t.Fatalf("admin delete: %d %s", code, b)
	}
	if _, err := f.store.GetStream(context.Background(), "", made.StreamID); err == nil {
		t.Fatal("stream still there")
	}
	code, b = f.doAs("secops-admin", "POST", "/ssf/stream", "", `{"aud":"rp-a","delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"https://rx.example/events","authorization_header":"Bearer rx-secret"}}`)
	if code != http.StatusCreated {
		t.Fatalf("admin create push: %d %s", code, b)
	}
	sub := `{"stream_id":"` + own + `","subject":{"format":"opaque","id":"dev-9"}}`
	if code, b := f.doAs("secops-admin", "POST", "/ssf/subjects:remove", "", sub); code != http.StatusNoContent {
		t.Fatalf("admin remove subject: %d %s", code, b)
	}
	if code, b := f.doAs("secops-admin", "POST", "/ssf/subjects:add", "", sub); code != http.StatusOK {
		t.Fatalf("admin add subject: %d %s", code, b)
	}

	// The admin's changes, and only they, are in the audit log with the certificate's
	// subject and roles; the receivers' own changes are not admin changes.
	evs, _, err := audit.List(context.Background(), []*audit.Log{f.store.Audit()}, audit.Filter{}, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := len(evs) - 1; i >= 0; i-- { // oldest first
		e := evs[i]
		if e.Actor.Subject != "alice" || len(e.Actor.Roles) != 1 || e.Actor.Roles[0] != "secops-admin" || e.Source != "ssf" {
			t.Errorf("event %+v: actor or source wrong", e)
		}
		if strings.Contains(string(e.Before)+string(e.After), "rx-secret") {
			t.Errorf("the audit log holds a push authorization header: %s", e.After)
		}
		got = append(got, e.Action+" "+e.ResourceType+" "+e.Actor.Method)
	}
	want := []string{
		audit.ActionCreate + " ssf_stream POST /ssf/stream",
		audit.ActionUpdate + " ssf_stream POST /ssf/status",
		audit.ActionDelete + " ssf_stream DELETE /ssf/stream",
		audit.ActionCreate + " ssf_stream POST /ssf/stream",
		audit.ActionCreate + " ssf_subject_exclusion POST /ssf/subjects:remove",
		audit.ActionDelete + " ssf_subject_exclusion POST /ssf/subjects:add",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func mustGet(t *testing.T, f *fixture, path string) string {
	t.Helper()
	code, b := f.do("GET", path, "", "")
	if code != 200 {
		t.Fatalf("GET %s: %d", path, code)
	}
	return string(b)
}

// TestPushDeliversStreamUpdatedWhilePaused: a paused push stream sends its Stream
// Updated SET, and nothing else until it is enabled again.
func TestPushDeliversStreamUpdatedWhilePaused(t *testing.T) {
	var mu sync.Mutex
	var got []map[string]json.RawMessage
	arrived := make(chan struct{}, 10)
	f := newFixtureWith(t, "", func(c *Config) { c.AdminCertificates = true })
	rx := newPushReceiver(t, f, func(ev map[string]json.RawMessage) {
		mu.Lock()
		got = append(got, ev)
		mu.Unlock()
		arrived <- struct{}{}
	})
	id := f.createStream(f.token, `{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"`+rx+`"}}`).StreamID
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = f.tx.RunPush(ctx) }()
	defer func() { cancel(); <-done }()
	if code, b := f.doAs("secops-admin", "POST", "/ssf/status", "", `{"stream_id":"`+id+`","status":"paused"}`); code != 200 {
		t.Fatalf("pause: %d %s", code, b)
	}
	f.verifyEvent(id, "held")
	wait := func() {
		t.Helper()
		select {
		case <-arrived:
		case <-time.After(10 * time.Second):
			t.Fatal("nothing pushed")
		}
	}
	wait()
	mu.Lock()
	if len(got) != 1 || !strings.Contains(string(got[0][EventStreamUpdated]), `"paused"`) {
		t.Fatalf("pushed %v, want the Stream Updated SET", got)
	}
	mu.Unlock()
	// The notice is acknowledged (202); the verification SET is still held.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		ps, _, err := f.store.PendingSETs(ctx, id, 10, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox %d, want the held verification SET", len(ps))
		}
	}
	if code, b := f.do("POST", "/ssf/status", f.token, `{"stream_id":"`+id+`","status":"enabled"}`); code != 200 {
		t.Fatalf("enable: %d %s", code, b)
	}
	wait()
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[1][EventVerification] == nil {
		t.Fatalf("after enabling pushed %v, want the held verification SET", got)
	}
}

// newPushReceiver starts an RFC 8935 receiver that verifies each SET and hands its
// events to got; it returns its URL.
func newPushReceiver(t *testing.T, f *fixture, got func(map[string]json.RawMessage)) string {
	t.Helper()
	srv := newHTTPServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		c, err := VerifySET(string(b), VerifyOptions{Issuer: f.srv.URL, Audience: "rp-a", Keys: f.tx.cfg.Signer.JWKS(), MaxAge: time.Minute, Skew: time.Minute})
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"err":"invalid_request"}`))
			return
		}
		w.WriteHeader(http.StatusAccepted)
		got(c.Events)
	}))
	return srv
}

func TestInactivityTimeout(t *testing.T) {
	reader := meterReader(t)
	f := newFixtureWith(t, "", func(c *Config) { c.InactivityTimeout = time.Hour })
	idle := f.createStream(f.token, `{}`)
	busy := f.createStream(f.other, `{}`).StreamID
	if idle.InactivityTimeout != 3600 {
		t.Fatalf("inactivity_timeout = %d, want 3600", idle.InactivityTimeout)
	}
	// inactivity_timeout is transmitter-supplied: sent back unchanged it is accepted.
	if code, b := f.do("PATCH", "/ssf/stream", f.token, `{"stream_id":"`+idle.StreamID+`","inactivity_timeout":60}`); code != http.StatusBadRequest {
		t.Fatalf("PATCH inactivity_timeout 60: %d %s, want 400", code, b)
	}
	if code, b := f.do("PATCH", "/ssf/stream", f.token, `{"stream_id":"`+idle.StreamID+`","inactivity_timeout":3600}`); code != 200 {
		t.Fatalf("PATCH inactivity_timeout unchanged: %d %s", code, b)
	}
	// Both were last active two hours ago; then rp-b reads its stream's status.
	if err := f.store.write(context.Background(), func(tx dbtx.Tx) error {
		_, err := tx.ExecContext(context.Background(), `UPDATE streams SET activity_time = activity_time - 7200`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	f.status(f.other, busy)
	n, err := f.tx.SweepInactive(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("SweepInactive = %d, %v; want 1", n, err)
	}
	st := f.status(f.token, idle.StreamID)
	if st.Status != StatusPaused || !strings.HasPrefix(st.Reason, "inactivity_timeout") {
		t.Fatalf("idle stream %+v, want paused for inactivity", st)
	}
	if st := f.status(f.other, busy); st.Status != StatusEnabled {
		t.Fatalf("active stream %+v", st)
	}
	if got := counterValue(t, reader, "condaccess.ssf.transmitter.stream_pauses", "inactivity_timeout"); got != 1 {
		t.Errorf("stream_pauses{inactivity_timeout} = %d, want 1", got)
	}
	p := f.poll(idle.StreamID, `{"returnImmediately":true}`)
	for _, e := range f.events(p, "rp-a") {
		if !strings.Contains(string(e[EventStreamUpdated]), `"status":"paused"`) {
			t.Fatalf("SET %v, want Stream Updated paused", e)
		}
	}
	if len(p.Sets) != 1 {
		t.Fatalf("paused idle stream delivered %d SETs, want its Stream Updated SET", len(p.Sets))
	}
	// A paused stream is not swept again.
	if n, err := f.tx.SweepInactive(context.Background()); err != nil || n != 0 {
		t.Fatalf("second sweep = %d, %v; want 0", n, err)
	}
}

func TestAddSubjectVerified(t *testing.T) {
	f := newFixture(t, "")
	id := f.createStream(f.token, `{}`).StreamID
	sub := &Subject{Format: "email", Email: "ada@example.com"}
	subJSON, _ := json.Marshal(sub)
	if code, b := f.do("POST", "/ssf/subjects:remove", f.token, `{"stream_id":"`+id+`","subject":`+string(subJSON)+`}`); code != 204 {
		t.Fatalf("remove: %d %s", code, b)
	}
	excluded := func() bool {
		t.Helper()
		ex, err := f.store.Excluded(context.Background(), id, sub)
		if err != nil {
			t.Fatal(err)
		}
		return ex
	}
	tests := []struct {
		name, verified string
		want           int
		excludedAfter  bool
	}{
		{"unverified is refused", `,"verified":false`, 400, true},
		{"verified is added", `,"verified":true`, 200, false},
		{"omitted counts as verified", ``, 200, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !excluded() {
				if code, b := f.do("POST", "/ssf/subjects:remove", f.token, `{"stream_id":"`+id+`","subject":`+string(subJSON)+`}`); code != 204 {
					t.Fatalf("remove: %d %s", code, b)
				}
			}
			code, b := f.do("POST", "/ssf/subjects:add", f.token, `{"stream_id":"`+id+`","subject":`+string(subJSON)+tt.verified+`}`)
			if code != tt.want {
				t.Fatalf("%d %s, want %d", code, b, tt.want)
			}
			if excluded() != tt.excludedAfter {
				t.Fatalf("excluded = %v, want %v", !tt.excludedAfter, tt.excludedAfter)
			}
		})
	}
}

func newHTTPServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}
