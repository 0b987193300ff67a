package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/auth/authtest"
	"github.com/condaccess/condaccess/internal/httpface"
	"github.com/condaccess/condaccess/internal/server"
)

// restStream is a REST server stream followed as `curl -N` does: one JSON message a
// line.
type restStream struct {
	status int
	ctype  string
	body   []byte      // the whole body of a refusal (status != 200)
	lines  chan []byte // the lines of a stream (status 200), closed at its end
	cancel context.CancelFunc
}

// openRESTStream GETs url with c and, on 200, reads its lines in the background until
// Close.
func openRESTStream(t *testing.T, c *http.Client, url string) *restStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	st := &restStream{status: resp.StatusCode, ctype: resp.Header.Get("Content-Type"), cancel: cancel}
	t.Cleanup(st.Close)
	if resp.StatusCode != http.StatusOK {
		st.body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		return st
	}
	st.lines = make(chan []byte, 1024)
	go func() {
		defer close(st.lines)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 4<<20)
		for sc.Scan() {
			st.lines <- append([]byte(nil), sc.Bytes()...)
		}
	}()
	return st
}

func (s *restStream) Close() { s.cancel() }

// next returns the stream's next line, failing the test at its end or after 20 s.
func (s *restStream) next(t *testing.T) []byte {
	t.Helper()
	select {
	case l, ok := <-s.lines:
		if !ok {
			t.Fatal("the REST stream ended")
		}
		return l
	case <-time.After(20 * time.Second):
		t.Fatal("no line on the REST stream for 20 s")
	}
	return nil
}

// nextRisk returns the next line as a WatchRiskEventsResponse.
func (s *restStream) nextRisk(t *testing.T) *riskv1.WatchRiskEventsResponse {
	t.Helper()
	l := s.next(t)
	var m riskv1.WatchRiskEventsResponse
	if err := protojson.Unmarshal(l, &m); err != nil {
		t.Fatalf("line is not a WatchRiskEventsResponse: %v: %s", err, l)
	}
	return &m
}

// refusal decodes a refused stream's google.rpc.Status body.
func (s *restStream) refusal(t *testing.T) (codes.Code, string) {
	t.Helper()
	var st restStatus
	if s.ctype != "application/json" || json.Unmarshal(s.body, &st) != nil {
		t.Fatalf("refusal %d %q is not a google.rpc.Status: %s", s.status, s.ctype, s.body)
	}
	for _, d := range st.Details {
		if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo" {
			r, _ := d["reason"].(string)
			return codes.Code(st.Code), r
		}
	}
	return codes.Code(st.Code), ""
}

// TestRESTWatchRiskEvents is the README's `curl -N $H/v1/riskEvents:watch`: a REST
// client follows WatchRiskEvents as NDJSON, sees an alert reported meanwhile (the same
// JSON as protojson of the gRPC stream's message), resumes after a revision with
// ?startRevision=, and a ?deviceId= filter keeps other devices' events out.
func TestRESTWatchRiskEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", dataDir: t.TempDir(),
		services: "risk", stopTimeout: 5 * time.Second}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	base := "http://" + s.HTTPAddr()

	live := openRESTStream(t, http.DefaultClient, base+"/v1/riskEvents:watch")
	if live.status != 200 || live.ctype != httpface.NDJSONContentType {
		t.Fatalf("GET /v1/riskEvents:watch: %d %q %s", live.status, live.ctype, live.body)
	}
	if m := live.nextRisk(t); m.GetProgress() == nil {
		t.Fatalf("first message on an empty history = %v, want a progress message", m)
	}
	other := openRESTStream(t, http.DefaultClient, base+"/v1/riskEvents:watch?deviceId=dev-9")
	if other.status != 200 {
		t.Fatalf("GET ?deviceId=dev-9: %d %s", other.status, other.body)
	}

	report := func(id string) {
		t.Helper()
		body := fmt.Sprintf(`{"alertId":%q,"deviceId":"dev-1","severity":"SEVERITY_HIGH","title":"Malicious file opened"}`, id)
		if st, _, b := restCall(t, http.DefaultClient, "POST", base+"/v1/alerts", body); st != 200 {
			t.Fatalf("POST /v1/alerts %s: %d %s", id, st, b)
		}
	}
	// waitAlert reads s until the event of alert id, then returns its revision and
	// line; every event on the way must be after after.
	waitAlert := func(s *restStream, id string, after int64) (int64, []byte) {
		t.Helper()
		for {
			l := s.next(t)
			var m riskv1.WatchRiskEventsResponse
			if err := protojson.Unmarshal(l, &m); err != nil {
				t.Fatalf("line is not a WatchRiskEventsResponse: %v: %s", err, l)
			}
			if ev := m.GetEvent(); ev != nil {
				if ev.GetRevision() <= after {
					t.Fatalf("event at revision %d on a stream that starts after %d: %s", ev.GetRevision(), after, l)
				}
				if ev.GetAlertChanged().GetAlert().GetAlertId() == id {
					return ev.GetRevision(), l
				}
			}
		}
	}

	report("a-1")
	rev1, _ := waitAlert(live, "a-1", 0)
	// Up to date: a progress message at or after every event of a-1.
	var upTo int64
	for upTo == 0 {
		if p := live.nextRisk(t).GetProgress(); p != nil && p.GetRevision() >= rev1 {
			upTo = p.GetRevision()
		}
	}
	report("a-2")
	rev2, liveLine := waitAlert(live, "a-2", upTo)

	// Resume: from upTo, a-2's event comes and nothing at or before upTo (a-1's).
	resumed := openRESTStream(t, http.DefaultClient, fmt.Sprintf("%s/v1/riskEvents:watch?startRevision=%d", base, upTo))
	if resumed.status != 200 {
		t.Fatalf("GET ?startRevision=%d: %d %s", upTo, resumed.status, resumed.body)
	}
	if got, _ := waitAlert(resumed, "a-2", upTo); got != rev2 {
		t.Fatalf("resumed stream's a-2 event at revision %d, live at %d", got, rev2)
	}

	// The line is the gRPC stream's message in protojson (unpopulated fields included,
	// as every REST response).
	conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	gs, err := riskv1.NewRiskServiceClient(conn).WatchRiskEvents(ctx, &riskv1.WatchRiskEventsRequest{StartRevision: rev2 - 1})
	if err != nil {
		t.Fatal(err)
	}
	gm, err := gs.Recv()
	if err != nil || gm.GetEvent().GetRevision() != rev2 {
		t.Fatalf("gRPC WatchRiskEvents from %d: %v, %v", rev2-1, gm, err)
	}
	want, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(gm)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, liveLine, want)

	// The filtered stream saw no dev-1 event, only progress past both alerts.
	for {
		m := other.nextRisk(t)
		if m.GetEvent() != nil {
			t.Fatalf("?deviceId=dev-9 stream got %v", m)
		}
		if m.GetProgress().GetRevision() >= rev2 {
			break
		}
	}
}

// tlsSuite starts services with mutual TLS and returns it with a function
// that makes HTTPS clients presenting a certificate with roles (none: no certificate).
func tlsSuite(t *testing.T, ctx context.Context, services string, limits *limitOptions) (*runningSuite, func(name string, roles ...commonv1.Role) *http.Client) {
	t.Helper()
	ca := authtest.NewCA(t)
	sc := ca.ServerConfig(t)
	s, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", dataDir: t.TempDir(),
		services: services, stopTimeout: 5 * time.Second, tlsCert: sc.CertFile, tlsKey: sc.KeyFile, tlsClientCA: sc.ClientCAFile,
		limits: limits}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	caPEM, err := os.ReadFile(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := func(name string, roles ...commonv1.Role) *http.Client {
		cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
		if len(roles) > 0 {
			c, k := ca.Issue(t, name, roles)
			pair, err := tls.LoadX509KeyPair(c, k)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr}
	}
	return s, client
}

// connectWatchCode opens WatchRiskEvents over Connect with c and returns the code of
// its first Receive (OK when a message came).
func connectWatchCode(ctx context.Context, c *http.Client, base string) codes.Code {
	cc := connect.NewClient[riskv1.WatchRiskEventsRequest, riskv1.WatchRiskEventsResponse](c, base+"/condaccess.risk.v1.RiskService/WatchRiskEvents")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := cc.CallServerStream(ctx, connect.NewRequest(&riskv1.WatchRiskEventsRequest{}))
	if err != nil {
		return codes.Code(connect.CodeOf(err))
	}
	defer st.Close()
	if st.Receive() {
		return codes.OK
	}
	return codes.Code(connect.CodeOf(st.Err()))
}

// TestRESTWatchIdentity: a REST stream is refused exactly as the same RPC over
// Connect: no client certificate UNAUTHENTICATED (401), a certificate without a
// permitted role PERMISSION_DENIED (403); a reader follows it.
func TestRESTWatchIdentity(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, client := tlsSuite(t, ctx, "risk", nil)
	base := "https://" + s.HTTPAddr()
	tests := []struct {
		name       string
		client     *http.Client
		wantStatus int
		wantCode   codes.Code
	}{
		{"no client certificate", client(""), 401, codes.Unauthenticated},
		{"sensor certificate (not a reader)", client("sensor-1", commonv1.Role_ROLE_SENSOR), 403, codes.PermissionDenied},
		{"policy admin (not a reader of risk events)", client("pa-1", commonv1.Role_ROLE_POLICY_ADMIN), 403, codes.PermissionDenied},
		{"enforcement point", client("ep-1", commonv1.Role_ROLE_ENFORCEMENT_POINT), 403, codes.PermissionDenied},
		{"reader certificate", client("reader-1", commonv1.Role_ROLE_READER), 200, codes.OK},
		{"secops admin certificate", client("secops-1", commonv1.Role_ROLE_SECOPS_ADMIN), 200, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := connectWatchCode(ctx, tt.client, base); got != tt.wantCode {
				t.Fatalf("over Connect: %s, want %s", got, tt.wantCode)
			}
			st := openRESTStream(t, tt.client, base+"/v1/riskEvents:watch")
			defer st.Close()
			if st.status != tt.wantStatus {
				t.Fatalf("REST status = %d, want %d: %s", st.status, tt.wantStatus, st.body)
			}
			if tt.wantCode == codes.OK {
				if m := st.nextRisk(t); m.GetProgress() == nil && m.GetEvent() == nil {
					t.Fatalf("first line %v", m)
				}
				return
			}
			if code, _ := st.refusal(t); code != tt.wantCode {
				t.Fatalf("REST code = %s, want %s", code, tt.wantCode)
			}
		})
	}
}

// TestRESTWatchCap: REST streams count against --max-watches-per-identity with the
// identity's Connect and gRPC watches: past the cap a REST watch is 429
// RESOURCE_EXHAUSTED TOO_MANY_WATCHES (and so is a Connect one), another identity is
// not affected, a slot freed by a closed stream is taken again; and an open REST
// watch is a stream, not a unary call in flight (--max-calls-per-identity 1 still
// lets the same identity call).
func TestRESTWatchCap(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	limits := defaultLimits()
	limits.maxWatchesPerIdentity = 2
	limits.maxCallsPerIdentity = 1
	s, client := tlsSuite(t, ctx, "risk", &limits)
	base := "https://" + s.HTTPAddr()
	reader := client("reader-1", commonv1.Role_ROLE_READER)
	url := base + "/v1/riskEvents:watch"

	var open []*restStream
	for i := range limits.maxWatchesPerIdentity {
		st := openRESTStream(t, reader, url)
		if st.status != 200 {
			t.Fatalf("watch %d of %d: %d %s", i+1, limits.maxWatchesPerIdentity, st.status, st.body)
		}
		st.nextRisk(t)
		open = append(open, st)
	}
	over := openRESTStream(t, reader, url)
	if code, reason := over.refusal(t); over.status != http.StatusTooManyRequests || code != codes.ResourceExhausted || reason != server.ReasonTooManyWatches {
		t.Fatalf("watch past the cap: %d %s %s, want 429 RESOURCE_EXHAUSTED %s", over.status, code, reason, server.ReasonTooManyWatches)
	}
	if got := connectWatchCode(ctx, reader, base); got != codes.ResourceExhausted {
		t.Fatalf("Connect watch past the cap: %s, want RESOURCE_EXHAUSTED", got)
	}
	// Watches are not calls in flight: with a cap of one call, the identity still calls.
	if st, _, b := restCall(t, reader, "GET", base+"/v1/deviceRisks", ""); st != 200 {
		t.Fatalf("unary REST call while %d REST watches are open (cap of 1 call in flight): %d %s", len(open), st, b)
	}
	// The cap is per identity.
	if st := openRESTStream(t, client("reader-2", commonv1.Role_ROLE_READER), url); st.status != 200 {
		t.Fatalf("another reader's watch: %d %s", st.status, st.body)
	}
	// Closing a stream frees its slot (the server sees the client leave).
	open[0].Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := openRESTStream(t, reader, url)
		if st.status == 200 {
			break
		}
		if code, _ := st.refusal(t); code != codes.ResourceExhausted || time.Now().After(deadline) {
			t.Fatalf("after closing a watch: %d %s", st.status, st.body)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestRESTWatchEveryServerStream: every server stream the suite registers (derived
// from the descriptors: a new Watch… RPC is included) is followed over REST on its
// mapped path: 200 with NDJSON lines of its response message, or a request it needs
// (a required field) refused with INVALID_ARGUMENT; never the transcoder's 415.
func TestRESTWatchEveryServerStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := startSuite(ctx, serveOptions{grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", dataDir: t.TempDir(),
		services: "risk,compliance,access,remediation", stopTimeout: 5 * time.Second}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	base := "http://" + s.HTTPAddr()
	var methods []protoreflect.MethodDescriptor
	for name := range s.srv.GRPC().GetServiceInfo() {
		if !strings.HasPrefix(name, "condaccess.") {
			continue
		}
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			t.Fatal(err)
		}
		sd := d.(protoreflect.ServiceDescriptor)
		for i := 0; i < sd.Methods().Len(); i++ {
			if m := sd.Methods().Get(i); m.IsStreamingServer() && !m.IsStreamingClient() {
				methods = append(methods, m)
			}
		}
	}
	sort.Slice(methods, func(i, j int) bool { return methods[i].FullName() < methods[j].FullName() })
	if len(methods) < 9 {
		t.Fatalf("%d server streams registered, want the 9 Watch… RPCs at least", len(methods))
	}
	for _, m := range methods {
		t.Run(string(m.Name()), func(t *testing.T) {
			rule, _ := proto.GetExtension(m.Options(), annotations.E_Http).(*annotations.HttpRule)
			if rule.GetGet() == "" {
				t.Fatalf("%s has no GET mapping", m.FullName())
			}
			st := openRESTStream(t, http.DefaultClient, base+rule.GetGet())
			defer st.Close()
			switch st.status {
			case 200:
				if st.ctype != httpface.NDJSONContentType {
					t.Fatalf("Content-Type %q", st.ctype)
				}
				mt, err := protoregistry.GlobalTypes.FindMessageByName(m.Output().FullName())
				if err != nil {
					t.Fatal(err)
				}
				if l := st.next(t); protojson.Unmarshal(l, mt.New().Interface()) != nil {
					t.Fatalf("first line is not a %s: %s", m.Output().FullName(), l)
				}
			case 400:
				if code, _ := st.refusal(t); code != codes.InvalidArgument {
					t.Fatalf("400 with code %s: %s", code, st.body)
				}
			default:
				t.Fatalf("GET %s: %d %q %s", rule.GetGet(), st.status, st.ctype, st.body)
			}
		})
	}
}

// TestRESTWatchBlockedStatusOpen: the end user's WatchBlockedStatus, open without a
// certificate, is reached over REST by a stranger exactly as over Connect: a
// reference that names no blocked sign-in is 404 NOT_FOUND BLOCKED_REF_NOT_FOUND
// (not 401), and a missing one 400 INVALID_ARGUMENT.
func TestRESTWatchBlockedStatusOpen(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, client := tlsSuite(t, ctx, "risk,compliance,access", nil)
	base := "https://" + s.HTTPAddr()
	stranger := client("")
	cc := connect.NewClient[accessv1.WatchBlockedStatusRequest, accessv1.WatchBlockedStatusResponse](stranger, base+"/condaccess.access.v1.AccessService/WatchBlockedStatus")
	tests := []struct {
		name       string
		ref        string
		wantStatus int
		wantCode   codes.Code
	}{
		{"unknown reference", "not-a-reference", 404, codes.NotFound},
		{"no reference", "", 400, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := cc.CallServerStream(ctx, connect.NewRequest(&accessv1.WatchBlockedStatusRequest{Ref: tt.ref}))
			if err == nil {
				st.Receive()
				err = st.Err()
				st.Close()
			}
			if codes.Code(connect.CodeOf(err)) != tt.wantCode {
				t.Fatalf("over Connect: %v, want %s", err, tt.wantCode)
			}
			rs := openRESTStream(t, stranger, base+"/v1/blockedStatus:watch?ref="+tt.ref)
			if rs.status != tt.wantStatus {
				t.Fatalf("REST status = %d, want %d: %s", rs.status, tt.wantStatus, rs.body)
			}
			code, reason := rs.refusal(t)
			if code != tt.wantCode || (code == codes.NotFound && reason != "BLOCKED_REF_NOT_FOUND") {
				t.Fatalf("REST %s %s, want %s", code, reason, tt.wantCode)
			}
		})
	}
}
