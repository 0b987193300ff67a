package accessgrpc_test

import (
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/services/access/accesscore"
	"github.com/condaccess/condaccess/services/access/accessgrpc"
)

func newKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// blockedWorld is the wire example with the end-user page configured: dev-1 is HIGH
// risk, so u-1 on dev-1 is blocked from payroll.
func blockedWorld(t *testing.T, detail accessv1.BlockedDetail) (*harness, *accesscore.BlockedRefs, []byte) {
	t.Helper()
	key := newKey(t)
	refs, err := accesscore.NewBlockedRefs(key, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, options{edge: &accessgrpc.Edge{Dev: true, BlockedRefs: refs, BlockedDetail: detail,
		ConsoleURL: func() string { return "http://console.test" }}})
	seed(t, h)
	h.compliance.set("dev-1", commonv1.ComplianceState_COMPLIANCE_STATE_NONCOMPLIANT, commonv1.RiskLevel_RISK_LEVEL_HIGH, []string{"alert-1"}, nil)
	// Wait for the BLOCK that comes from dev-1's noncompliance, not the one an unknown
	// device gets before the compliance event is applied.
	eventually(t, "dev-1 known and noncompliant", func() bool {
		r := evaluate(t, h, "u-1", "dev-1", "payroll")
		return r.GetDecision() == accessv1.Decision_DECISION_BLOCK && r.GetDeviceCompliance().GetKnown()
	})
	return h, refs, key
}

var helpLink = regexp.MustCompile(`Help: http://console\.test/blocked\?ref=([A-Za-z0-9_-]+)\n`)

// blockedRef asks /authz as u-1 on dev-1 for payroll and returns the reference the
// 403 body links to, and the sign-in id.
func blockedRef(t *testing.T, h *harness) (ref, signIn string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, h.http.URL+"/authz", nil)
	req.Header.Set("x-user-id", "u-1")
	req.Header.Set("x-device-id", "dev-1")
	req.Header.Set("x-application-id", "payroll")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("GET /authz = %d, want 403", resp.StatusCode)
	}
	m := helpLink.FindStringSubmatch(string(body))
	if m == nil {
		t.Fatalf("403 body has no link to the console's end-user page:\n%s", body)
	}
	return m[1], resp.Header.Get(accessgrpc.SignInHeader)
}

// TestBlockedStatusRefs: the 403 body links to an opaque reference (it shows neither
// the sign-in id nor the user or device, and has a 128-bit tag); GetBlockedStatus
// answers it, and refuses everything else with one NOT_FOUND that tells nothing more.
func TestBlockedStatusRefs(t *testing.T) {
	h, _, key := blockedWorld(t, accessv1.BlockedDetail_BLOCKED_DETAIL_CATEGORY)
	ctx := context.Background()
	ref, signIn := blockedRef(t, h)
	for _, leak := range []string{signIn, "u-1", "dev-1", "payroll"} {
		if strings.Contains(ref, leak) {
			t.Errorf("reference %q shows %q", ref, leak)
		}
	}
	if len(ref) < 40 {
		t.Errorf("reference %q is too short to hold a 96-bit nonce and a 128-bit tag", ref)
	}

	got, err := h.acc.GetBlockedStatus(ctx, &accessv1.GetBlockedStatusRequest{Ref: ref})
	if err != nil {
		t.Fatalf("GetBlockedStatus(the 403's reference) = %v", err)
	}
	st := got.GetStatus()
	if st.GetRestored() || st.GetDeviceId() != "dev-1" || len(st.GetProblems()) != 1 || st.GetProblems()[0] != accessv1.BlockedProblem_BLOCKED_PROBLEM_THREAT {
		t.Errorf("status = %v, want blocked, dev-1, THREAT", st)
	}
	text := prototext.Format(got)
	for _, secret := range []string{"payroll-compliant", "Payroll requires", "alert-1", "max-medium", "COMPLIANT_DEVICE", "u-1"} {
		if strings.Contains(text, secret) {
			t.Errorf("status shows %q:\n%s", secret, text)
		}
	}

	// Attacks: each is the same NOT_FOUND.
	otherRefs, _ := accesscore.NewBlockedRefs(newKey(t), time.Hour)
	foreign, _ := otherRefs.Seal(accesscore.BlockedSignIn{SignInID: signIn, UserID: "u-1", DeviceID: "dev-1", AppID: "payroll", Time: time.Now()})
	sameKey, _ := accesscore.NewBlockedRefs(key, time.Hour)
	expired, _ := sameKey.Seal(accesscore.BlockedSignIn{SignInID: signIn, UserID: "u-1", DeviceID: "dev-1", AppID: "payroll", Time: time.Now().Add(-2 * time.Hour)})
	flipped := []byte(ref)
	flipped[len(flipped)/2] ^= 1
	if flipped[len(flipped)/2] == '-' || flipped[len(flipped)/2] == '_' {
		flipped[len(flipped)/2] = 'A'
	}
	var msg string
	for _, tt := range []struct{ name, ref string }{
		{"the sign-in id itself (guessable: a timestamp)", signIn},
		{"a guessed neighbour sign-in id", "si-1"},
		{"one character changed", string(flipped)},
		{"truncated", ref[:len(ref)-4]},
		{"sealed by another server's key", foreign},
		{"expired", expired},
		{"not base64", "../../etc/passwd"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.acc.GetBlockedStatus(ctx, &accessv1.GetBlockedStatusRequest{Ref: tt.ref})
			if status.Code(err) != codes.NotFound || apierr.Reason(err) != accessgrpc.ReasonBlockedRefNotFound {
				t.Fatalf("GetBlockedStatus = %v, want NOT_FOUND %s", err, accessgrpc.ReasonBlockedRefNotFound)
			}
			if msg == "" {
				msg = status.Convert(err).Message()
			} else if m := status.Convert(err).Message(); m != msg {
				t.Errorf("message %q differs from %q: it tells the cases apart", m, msg)
			}
			stream, err := h.acc.WatchBlockedStatus(ctx, &accessv1.WatchBlockedStatusRequest{Ref: tt.ref})
			if err == nil {
				_, err = stream.Recv()
			}
			if status.Code(err) != codes.NotFound {
				t.Errorf("WatchBlockedStatus = %v, want NOT_FOUND", err)
			}
		})
	}
	if _, err := h.acc.GetBlockedStatus(ctx, &accessv1.GetBlockedStatusRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("GetBlockedStatus without a reference = %v, want INVALID_ARGUMENT", err)
	}
}

// TestBlockedStatusDetail: --blocked-page-detail cuts what the status shows.
func TestBlockedStatusDetail(t *testing.T) {
	for _, tt := range []struct {
		detail              accessv1.BlockedDetail
		wantDevice, wantApp string
		wantProblems        int
	}{
		{accessv1.BlockedDetail_BLOCKED_DETAIL_MINIMAL, "", "", 0},
		{accessv1.BlockedDetail_BLOCKED_DETAIL_CATEGORY, "dev-1", "", 1},
		{accessv1.BlockedDetail_BLOCKED_DETAIL_FULL, "dev-1", "payroll", 1},
	} {
		t.Run(tt.detail.String(), func(t *testing.T) {
			h, _, _ := blockedWorld(t, tt.detail)
			ref, _ := blockedRef(t, h)
			got, err := h.acc.GetBlockedStatus(context.Background(), &accessv1.GetBlockedStatusRequest{Ref: ref})
			if err != nil {
				t.Fatal(err)
			}
			st := got.GetStatus()
			if st.GetRestored() || st.GetDetail() != tt.detail || st.GetDeviceId() != tt.wantDevice || st.GetApplicationDisplayName() != tt.wantApp || len(st.GetProblems()) != tt.wantProblems {
				t.Errorf("status = %v, want device %q, app %q, %d problems", st, tt.wantDevice, tt.wantApp, tt.wantProblems)
			}
		})
	}
}

// TestWatchBlockedStatus: the stream sends the blocked status at once and "restored"
// when the device becomes compliant, without the client asking again.
func TestWatchBlockedStatus(t *testing.T) {
	h, _, _ := blockedWorld(t, accessv1.BlockedDetail_BLOCKED_DETAIL_CATEGORY)
	ref, _ := blockedRef(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := h.acc.WatchBlockedStatus(ctx, &accessv1.WatchBlockedStatusRequest{Ref: ref})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.GetStatus().GetRestored() {
		t.Fatalf("first message = %v %v, want blocked", first, err)
	}
	h.compliance.set("dev-1", commonv1.ComplianceState_COMPLIANCE_STATE_COMPLIANT, commonv1.RiskLevel_RISK_LEVEL_NONE, nil, nil)
	for {
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("no restored status before %v", err)
		}
		if m.GetStatus().GetRestored() {
			if len(m.GetStatus().GetProblems()) != 0 {
				t.Errorf("restored status lists problems: %v", m.GetStatus())
			}
			return
		}
	}
}
