package auth_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/auth/authtest"
	"github.com/condaccess/condaccess/internal/server/servertest"
)

// replaceFile writes src's content over dst, as a certificate renewal does, and
// moves dst's modification time forward so that the change is seen whatever the
// file system's time resolution.
func replaceFile(t *testing.T, dst, src string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
	next := fi.ModTime().Add(time.Second)
	if err := os.Chtimes(dst, next, next); err != nil {
		t.Fatal(err)
	}
}

// TestCertificateRotation: certificates, keys and the server's client CA bundle
// written over the files in use take effect on the next handshake, without a
// restart; a half-written rotation keeps the previous certificate.
func TestCertificateRotation(t *testing.T) {
	ca := authtest.NewCA(t)
	cfg := ca.ServerConfig(t)
	// The server's client CA bundle is its own file (clients keep trusting ca for
	// the server's certificate while the client CA is rotated).
	cfg.ClientCAFile = filepath.Join(t.TempDir(), "client-ca.pem")
	b, err := os.ReadFile(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.ClientCAFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := startTLSServer(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// call makes a new connection (a new handshake) and returns the outcome of one
	// call of method and the serial number of the server's certificate.
	call := func(t *testing.T, cc auth.ClientConfig, method string) (codes.Code, int64) {
		t.Helper()
		var p peer.Peer
		err := dialTLS(t, addr, cc).Invoke(ctx, method, servertest.NewRequest("d1", ""), servertest.NewResponse(), grpc.Peer(&p))
		var serial int64
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
			serial = info.State.PeerCertificates[0].SerialNumber.Int64()
		}
		return status.Code(err), serial
	}

	reader := ca.ClientConfig(t, "reader-1", commonv1.Role_ROLE_READER)
	code, first := call(t, reader, servertest.MethodEcho)
	if code != codes.OK || first == 0 {
		t.Fatalf("before rotation: %v, server serial %d", code, first)
	}

	// The server's certificate is renewed.
	newCert, newKey := ca.Issue(t, "server", []commonv1.Role{commonv1.Role_ROLE_SERVICE})
	replaceFile(t, cfg.CertFile, newCert)
	replaceFile(t, cfg.KeyFile, newKey)
	code, second := call(t, reader, servertest.MethodEcho)
	if code != codes.OK || second == first {
		t.Fatalf("after server rotation: %v, server serial %d (was %d), want a new one", code, second, first)
	}

	// Half-written: a new certificate whose key has not arrived yet. The previous
	// pair stays in use.
	halfCert, _ := ca.Issue(t, "server", []commonv1.Role{commonv1.Role_ROLE_SERVICE})
	replaceFile(t, cfg.CertFile, halfCert)
	if code, serial := call(t, reader, servertest.MethodEcho); code != codes.OK || serial != second {
		t.Fatalf("half-written rotation: %v, server serial %d, want the previous %d", code, serial, second)
	}
	replaceFile(t, cfg.CertFile, newCert) // back to the matching pair

	// The client's certificate is renewed with another role: the next connection
	// presents it.
	if code, _ := call(t, reader, servertest.MethodAdmin); code != codes.PermissionDenied {
		t.Fatalf("reader Admin: %v, want PermissionDenied", code)
	}
	adminCert, adminKey := ca.Issue(t, "reader-1", []commonv1.Role{commonv1.Role_ROLE_SECOPS_ADMIN})
	replaceFile(t, reader.CertFile, adminCert)
	replaceFile(t, reader.KeyFile, adminKey)
	if code, _ := call(t, reader, servertest.MethodAdmin); code != codes.OK {
		t.Fatalf("Admin after the client certificate's rotation: %v, want OK", code)
	}

	// The client CA is rotated: certificates of the old CA are refused, those of the
	// new one accepted.
	next := authtest.NewCA(t)
	replaceFile(t, cfg.ClientCAFile, next.CertFile)
	if code, _ := call(t, reader, servertest.MethodEcho); code != codes.Unavailable {
		t.Fatalf("old CA's client after the client CA rotation: %v, want Unavailable", code)
	}
	fresh := next.ClientConfig(t, "reader-2", commonv1.Role_ROLE_READER)
	fresh.CAFile = ca.CertFile // the server's certificate is still from ca
	if code, _ := call(t, fresh, servertest.MethodEcho); code != codes.OK {
		t.Fatalf("new CA's client: %v, want OK", code)
	}
}
