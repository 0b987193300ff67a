package auth

import (
	"crypto/tls"
	"errors"
	"net/http"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
)

// HTTPServerTLS returns the HTTP listener's TLS configuration: TLS 1.3, the server
// certificate of cfg, and a client certificate asked for but not required (browsers
// have none); a presented one must chain to cfg.ClientCAFile. Each path decides what
// it requires (RequireHTTPRoles). Files are read again after they change.
func HTTPServerTLS(cfg Config) (*tls.Config, error) {
	if !cfg.tlsConfigured() {
		return nil, errors.New("auth: HTTP TLS needs a certificate, a key and a client CA file")
	}
	k, err := loadKeyMaterial(cfg.CertFile, cfg.KeyFile, cfg.ClientCAFile, "") // device certificates are not HTTP callers
	if err != nil {
		return nil, err
	}
	base := &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS13, NextProtos: []string{"h2", "http/1.1"}}
	out := base.Clone()
	out.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cert, pool := k.current()
		c := base.Clone()
		c.Certificates = []tls.Certificate{*cert}
		c.ClientCAs = pool
		return c, nil
	}
	return out, nil
}

// HTTPIdentity puts the caller's identity in each request's context: "dev" with
// every role in insecure mode, else the identity of the verified TLS client
// certificate, when one was presented (none otherwise).
func HTTPIdentity(insecure bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case insecure:
			r = r.WithContext(NewContext(r.Context(), devIdentity()))
		case r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0:
			r = r.WithContext(NewContext(r.Context(), IdentityFromCert(r.TLS.VerifiedChains[0][0])))
		}
		next.ServeHTTP(w, r)
	})
}

// WithIdentity gives every request the identity id: for a listener that
// authenticates by other means (a unix socket guarded by its file permissions).
func WithIdentity(id Identity, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), id)))
	})
}

// RequireHTTPRoles serves next only to a caller with one of roles or ROLE_SERVICE:
// 401 without an identity, 403 without such a role.
func RequireHTTPRoles(next http.Handler, roles ...commonv1.Role) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := FromContext(r.Context())
		if !ok {
			http.Error(w, "authentication required: present a client certificate", http.StatusUnauthorized)
			return
		}
		if id.HasRole(commonv1.Role_ROLE_SERVICE) {
			next.ServeHTTP(w, r)
			return
		}
		for _, role := range roles {
			if id.HasRole(role) {
				next.ServeHTTP(w, r)
				return
			}
		}
		http.Error(w, "forbidden: your certificate's roles do not allow this path", http.StatusForbidden)
	})
}
