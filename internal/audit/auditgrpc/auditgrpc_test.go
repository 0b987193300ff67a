package auditgrpc_test

import (
	"context"
	"net"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/audit/auditgrpc"
	"github.com/condaccess/condaccess/internal/auth"
)

func TestInterceptorTakesTheActorFromTheIdentityOnly(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	withPeer := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}})
	withPeer = trace.ContextWithSpanContext(withPeer, trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}))
	bob := auth.NewContext(withPeer, auth.Identity{Subject: "bob", Roles: []commonv1.Role{commonv1.Role_ROLE_SECOPS_ADMIN, commonv1.Role_ROLE_READER}})
	// An actor put into the context by anything but the interceptor (e.g. smuggled in
	// by a caller-controlled layer) is replaced by the authenticated identity.
	spoofed := audit.NewContext(bob, audit.Actor{Subject: "carol-the-ciso"})

	tests := []struct {
		name string
		ctx  context.Context
		want *audit.Actor
	}{
		{"authenticated", bob, &audit.Actor{Subject: "bob", Roles: []string{"secops-admin", "reader"}, Method: "/x.v1.S/M", Peer: "127.0.0.1:5000", TraceID: tid.String()}},
		{"actor claimed in the context", spoofed, &audit.Actor{Subject: "bob", Roles: []string{"secops-admin", "reader"}, Method: "/x.v1.S/M", Peer: "127.0.0.1:5000", TraceID: tid.String()}},
		{"unauthenticated", withPeer, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got *audit.Actor
			_, err := auditgrpc.UnaryServerInterceptor()(tt.ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/x.v1.S/M"}, func(ctx context.Context, _ any) (any, error) {
				if a, ok := audit.FromContext(ctx); ok && a.Subject != "carol-the-ciso" {
					got = &a
				}
				return nil, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("actor (-want +got):\n%s", diff)
			}
		})
	}
}
