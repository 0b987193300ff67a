package accessgrpc

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkEdgeResolve isolates the enforcement points' identity work per request
// (mapping, token and certificate verification, both cached by hash) from the HTTP
// round trip and the decision: verified credentials vs the same identities in
// trusted headers.
//
//	go test -run '^$' -bench EdgeResolve -benchtime 200000x ./services/access/accessgrpc/
func BenchmarkEdgeResolve(b *testing.B) {
	s, is, dev := fuzzEdge(b)
	s.edge.TrustHeaders = true
	token := is.Token(map[string]any{"sub": "alice", "aud": "condaccess", "amr": []string{"mfa"}})
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		hdr  map[string]string
		want string
	}{
		{"headers", map[string]string{"x-user-id": "alice", "x-device-id": "dev-a", "x-mfa-done": "true"}, "alice"},
		{"verified", map[string]string{"Authorization": "Bearer " + token, DefaultCertHeader: dev.Escaped}, "alice"},
	} {
		b.Run(tt.name, func(b *testing.B) {
			r := httptest.NewRequest(http.MethodGet, "/authz", nil)
			r.RemoteAddr = "127.0.0.1:40000"
			r.Header.Set("x-application-id", "payroll")
			r.Header.Set("X-Forwarded-For", "203.0.113.9")
			for k, v := range tt.hdr {
				r.Header.Set(k, v)
			}
			// A token's user is its subject here (Decide resolves it to the directory user).
			if id := s.resolve(ctx, forwardedFromHTTP(r, DefaultCertHeader), ep, time.Now()); max(id.req.UserID, id.opts.TokenSubject) != tt.want || id.opts.Block != nil {
				b.Fatalf("resolve: %+v", id)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				s.resolve(ctx, forwardedFromHTTP(r, DefaultCertHeader), ep, time.Now())
			}
		})
	}
}
