package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	"github.com/condaccess/condaccess/internal/apierr"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/auth/authtest"
)

// refusingIdentities answers every renewal with err.
type refusingIdentities struct {
	compliancev1.DeviceIdentityServiceClient
	err   error
	calls int
}

func (r *refusingIdentities) RenewDeviceCertificate(context.Context, *compliancev1.RenewDeviceCertificateRequest, ...grpc.CallOption) (*compliancev1.RenewDeviceCertificateResponse, error) {
	r.calls++
	return nil, r.err
}

// TestRenewerStopsWhenRefusedForGood: a renewal refused because the identity was
// revoked, or because the device was enrolled again since this certificate was issued
// (CERTIFICATE_SUPERSEDED), ends the agent with its reason instead of retrying for
// the rest of the certificate's life; any other refusal is retried.
func TestRenewerStopsWhenRefusedForGood(t *testing.T) {
	dca := authtest.NewDeviceCA(t)
	certFile, _ := dca.Issue(t, "dev-1", time.Hour)
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"revoked", apierr.New(codes.Unauthenticated, auth.ReasonCertificateRevoked, "revoked"), errRevoked},
		{"superseded by a new enrollment", apierr.New(codes.Unauthenticated, auth.ReasonCertificateSuperseded, "superseded"), errSuperseded},
		{"unavailable: retried", apierr.New(codes.Unavailable, "UNAVAILABLE", "down"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			pem, err := os.ReadFile(certFile)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, deviceCertFile), pem, 0o600); err != nil {
				t.Fatal(err)
			}
			client := &refusingIdentities{err: tt.err}
			r := &renewer{dir: dir, client: client, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
				now: func() time.Time { return time.Now().Add(time.Hour) }, retry: time.Millisecond}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			err = r.run(ctx)
			if tt.want != nil {
				if !errors.Is(err, tt.want) || client.calls != 1 {
					t.Fatalf("run = %v after %d renewals, want %v after one", err, client.calls, tt.want)
				}
				return
			}
			if err != nil || client.calls < 2 {
				t.Fatalf("run = %v after %d renewals, want retries until the context ends", err, client.calls)
			}
		})
	}
}
