// Package auth establishes who calls an RPC (mutual TLS or loopback development mode) and checks the caller's roles against each method's allowed_roles option.
package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
)

// InsecureWarning is what a binary logs, at WARN, when it starts in insecure mode.
const InsecureWarning = "INSECURE DEVELOPMENT MODE: no TLS, no client authentication; " +
	"every caller is \"dev\" with every role. Loopback only; never use this in production."

// DevSubject is the subject of every caller in insecure mode.
const DevSubject = "dev"

// RoleURIPrefix prefixes the URI SANs that grant roles: spiffe://condaccess/role/<role>.
const RoleURIPrefix = "spiffe://condaccess/role/"

// Identity is the authenticated caller of an RPC, read once from the verified
// certificate (or the development-mode configuration) by the auth interceptor.
type Identity struct {
	// Subject names the caller in logs and records (the certificate's CommonName or
	// URI SAN); nothing decides anything from it.
	Subject string
	// Roles are the roles granted.
	Roles []commonv1.Role
	// Kind is how the caller was authenticated.
	Kind Kind
	// ID is the device id (KindDevice) or the service name (KindService).
	ID string
	// Services are every service named by a service certificate (an all-in-one
	// certificate names several); ID is the first.
	Services []string
	// Issued is, for a device identity, its certificate's NotBefore (renewal refuses
	// a certificate issued before the device's latest enrollment).
	Issued time.Time
}

// HasRole reports whether id holds role r.
func (id Identity) HasRole(r commonv1.Role) bool { return slices.Contains(id.Roles, r) }

type identityKey struct{}

// NewContext returns a copy of ctx carrying id.
func NewContext(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the identity in ctx, if any.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// AllRoles lists every grantable role.
func AllRoles() []commonv1.Role {
	return []commonv1.Role{
		commonv1.Role_ROLE_SENSOR, commonv1.Role_ROLE_SECOPS_ADMIN, commonv1.Role_ROLE_POLICY_ADMIN,
		commonv1.Role_ROLE_READER, commonv1.Role_ROLE_ENFORCEMENT_POINT, commonv1.Role_ROLE_SERVICE,
	}
}

func devIdentity() Identity {
	return Identity{Subject: DevSubject, Roles: AllRoles(), Kind: KindDevelopment}
}

// RoleName returns the short name of r used in certificates, e.g. "secops-admin".
func RoleName(r commonv1.Role) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(r.String(), "ROLE_")), "_", "-")
}

// RoleURI returns the URI SAN that grants r, e.g. spiffe://condaccess/role/reader.
func RoleURI(r commonv1.Role) string { return RoleURIPrefix + RoleName(r) }

// ParseRole parses a short role name such as "enforcement-point".
func ParseRole(name string) (commonv1.Role, bool) {
	v, ok := commonv1.Role_value["ROLE_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))]
	if !ok || v == int32(commonv1.Role_ROLE_UNSPECIFIED) || RoleName(commonv1.Role(v)) != name {
		return commonv1.Role_ROLE_UNSPECIFIED, false
	}
	return commonv1.Role(v), true
}

// IdentityFromCert derives an identity from a client certificate verified against
// the role CA: the roles from its spiffe://condaccess/role/<role> URI SANs (unknown
// roles are ignored), a service identity (with ROLE_SERVICE) from its
// spiffe://condaccess/service/<name> URI SANs, the subject from certSubject (never a
// reserved actor name nor a device's subject). Device URI SANs do not count here: a
// device identity comes only from the device CA.
func IdentityFromCert(cert *x509.Certificate) Identity {
	id := Identity{Subject: certSubject(cert), Kind: KindRoleCertificate}
	for _, u := range cert.URIs {
		if r, ok := roleFromURI(u); ok && !id.HasRole(r) {
			id.Roles = append(id.Roles, r)
		}
		if name, ok := serviceFromURI(u); ok && !slices.Contains(id.Services, name) {
			id.Services = append(id.Services, name)
		}
	}
	if len(id.Services) > 0 {
		id.Kind, id.ID = KindService, id.Services[0]
		if !id.HasRole(commonv1.Role_ROLE_SERVICE) {
			id.Roles = append(id.Roles, commonv1.Role_ROLE_SERVICE)
		}
	}
	return id
}

// ReservedSubjects are the actor names the suite records for work no certificate
// did: the development identity, expiries and other system decisions, the
// automation, and the enforcement point behind the --authz-addr unix socket. No certificate's subject equals one of them, so that no caller can make
// its own action look like the system's, the automation's or development mode's.
var ReservedSubjects = []string{DevSubject, "system", "automation", "unknown", "unix"}

// certSubject names a role or service certificate in logs and records: its
// CommonName, unless that is empty, a reserved actor name (case and surrounding
// spaces ignored) or a spiffe:// URI (the form of device and service subjects); such
// a name is recorded as "cn:<name>". Without a CommonName, the certificate's first
// role or service URI SAN, else its serial number.
func certSubject(cert *x509.Certificate) string {
	cn := cert.Subject.CommonName
	if cn != "" {
		t := strings.ToLower(strings.TrimSpace(cn))
		if t == "" || slices.Contains(ReservedSubjects, t) || strings.HasPrefix(t, "spiffe:") {
			return "cn:" + cn
		}
		return cn
	}
	for _, u := range cert.URIs {
		if _, ok := roleFromURI(u); ok {
			return u.String()
		}
		if _, ok := serviceFromURI(u); ok {
			return u.String()
		}
	}
	if cert.SerialNumber != nil {
		return "serial:" + cert.SerialNumber.Text(16)
	}
	return "serial:unknown"
}

func roleFromURI(u *url.URL) (commonv1.Role, bool) {
	s := u.String()
	if !strings.HasPrefix(s, RoleURIPrefix) {
		return commonv1.Role_ROLE_UNSPECIFIED, false
	}
	return ParseRole(strings.TrimPrefix(s, RoleURIPrefix))
}

// Config is the server side of authentication and authorization.
type Config struct {
	// Insecure selects plaintext development mode: every caller is "dev" with every
	// role. Allowed only on a loopback listen address.
	Insecure bool
	// CertFile and KeyFile are the server's PEM certificate and key.
	CertFile, KeyFile string
	// ClientCAFile is the PEM bundle of CAs that role and service client
	// certificates chain to.
	ClientCAFile string
	// DeviceCAFile is the PEM device CA: client certificates chaining to it are
	// device identities only (spiffe://condaccess/device/<id>). Optional.
	DeviceCAFile string
	// Revocations refuses revoked device certificates (CERTIFICATE_REVOKED) and ends
	// their streams; nil refuses none.
	Revocations *Revocations
	// ExtraMethodRoles grants roles on methods by full name ("/pkg.Service/Method"),
	// in addition to their allowed_roles option; it is how methods of foreign protos
	// (Envoy's "/envoy.service.auth.v3.Authorization/Check") are opened to a role.
	ExtraMethodRoles map[string][]commonv1.Role
	// Files resolves service descriptors; nil means protoregistry.GlobalFiles.
	Files DescriptorResolver
}

func (cfg Config) tlsConfigured() bool {
	return cfg.CertFile != "" && cfg.KeyFile != "" && cfg.ClientCAFile != ""
}

// CheckListenAddr refuses a configuration that would serve without TLS on anything
// but a loopback address, or that has neither TLS nor insecure mode.
func CheckListenAddr(addr string, cfg Config) error {
	if !cfg.Insecure {
		if !cfg.tlsConfigured() {
			return errors.New("auth: TLS is not configured: set the server certificate, key and client CA files " +
				"(or insecure development mode on a loopback address)")
		}
		return nil
	}
	if !IsLoopback(addr) {
		return fmt.Errorf("auth: refusing insecure mode on %q: insecure mode has no authentication and is allowed "+
			"only on a loopback address (127.0.0.1, ::1, localhost); configure mutual TLS to listen elsewhere", addr)
	}
	return nil
}

// IsLoopback reports whether the host of addr ("host:port" or a bare host) is
// "localhost" or a loopback IP. An empty host (all interfaces) is not loopback.
func IsLoopback(addr string) bool {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ServerCredentials returns insecure credentials in insecure mode and ServerTLS otherwise.
func ServerCredentials(cfg Config) (credentials.TransportCredentials, error) {
	if cfg.Insecure {
		return insecure.NewCredentials(), nil
	}
	return ServerTLS(cfg)
}

// ServerTLS returns TLS 1.3 server credentials that verify a client certificate,
// when one is given, against cfg.ClientCAFile and cfg.DeviceCAFile. A certificate is
// requested but not required at the handshake (a device enrolling has none yet); the
// Authorizer refuses every method but the open ones without one. The certificate, key and client CA bundle are read
// again on the first handshake after one of the files changes (certificate
// rotation without a restart; see keyMaterial).
func ServerTLS(cfg Config) (credentials.TransportCredentials, error) {
	if !cfg.tlsConfigured() {
		return nil, errors.New("auth: server TLS needs a certificate, a key and a client CA file")
	}
	k, err := loadKeyMaterial(cfg.CertFile, cfg.KeyFile, cfg.ClientCAFile, cfg.DeviceCAFile)
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(serverTLSConfig(k)), nil
}

// ClientConfig is the client side of mutual TLS.
type ClientConfig struct {
	// Insecure dials without TLS, for a server in insecure development mode.
	Insecure bool
	// CAFile is the PEM bundle of CAs the server certificate must chain to.
	CAFile string
	// CertFile and KeyFile are this client's PEM certificate and key.
	CertFile, KeyFile string
	// ServerName overrides the name checked in the server certificate.
	ServerName string
}

// ClientCredentials returns the transport credentials for cfg.
func ClientCredentials(cfg ClientConfig) (credentials.TransportCredentials, error) {
	if cfg.Insecure {
		return insecure.NewCredentials(), nil
	}
	if cfg.CAFile == "" || cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("auth: client TLS needs a CA file, a certificate and a key (or insecure mode)")
	}
	// The client certificate and key are read again on the first handshake after
	// either changes; the CA bundle is read once.
	k, err := loadKeyMaterial(cfg.CertFile, cfg.KeyFile, "", "")
	if err != nil {
		return nil, err
	}
	pool, err := loadPool(cfg.CAFile)
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(&tls.Config{
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, _ := k.current()
			return cert, nil
		},
		RootCAs:    pool,
		ServerName: cfg.ServerName,
		MinVersion: tls.VersionTLS13,
	}), nil
}

// DialOption returns the grpc.WithTransportCredentials option for cfg.
func DialOption(cfg ClientConfig) (grpc.DialOption, error) {
	creds, err := ClientCredentials(cfg)
	if err != nil {
		return nil, err
	}
	return grpc.WithTransportCredentials(creds), nil
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("auth: read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("auth: no PEM certificate in CA file %s", file)
	}
	return pool, nil
}

// loadCerts reads every PEM certificate of file.
func loadCerts(file string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("auth: read CA file: %w", err)
	}
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("auth: CA file %s: %w", file, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("auth: no PEM certificate in CA file %s", file)
	}
	return certs, nil
}

// LoadDevicePool reads the device CA file into a pool, for a DeviceVerifier.
func LoadDevicePool(file string) (*x509.CertPool, error) { return loadPool(file) }
