package auth

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	commonv1 "github.com/condaccess/condaccess/gen/go/condaccess/common/v1"
	"github.com/condaccess/condaccess/internal/apierr"
)

// Error reasons returned by the interceptors.
const (
	ReasonUnauthenticated = "UNAUTHENTICATED"
	ReasonRoleNotAllowed  = "ROLE_NOT_ALLOWED"
)

// DescriptorResolver finds descriptors by full name; *protoregistry.Files is one.
type DescriptorResolver interface {
	FindDescriptorByName(protoreflect.FullName) (protoreflect.Descriptor, error)
}

// openServices may be called by anyone, authenticated or not.
var openServices = map[string]bool{
	"grpc.health.v1.Health":                    true,
	"grpc.reflection.v1.ServerReflection":      true,
	"grpc.reflection.v1alpha.ServerReflection": true,
}

// openMethods may be called without a client certificate. EnrollDeviceIdentity is
// authenticated by its single-use enrollment token instead (the device has no
// certificate yet); GetBlockedStatus and WatchBlockedStatus by the sealed,
// unguessable reference an end user got in a 403 body (and they tell only what the
// end user's page shows).
var openMethods = map[string]bool{
	"/condaccess.compliance.v1.DeviceIdentityService/EnrollDeviceIdentity": true,
	"/condaccess.access.v1.AccessService/GetBlockedStatus":                 true,
	"/condaccess.access.v1.AccessService/WatchBlockedStatus":               true,
}

// policy is the resolved rule for one method.
type policy struct {
	open     bool            // anyone may call
	roles    []commonv1.Role // allowed_roles (and Config.ExtraMethodRoles)
	services []string        // allowed_services
}

// Authorizer resolves and caches each method's allowed roles and checks callers.
type Authorizer struct {
	cfg         Config
	files       DescriptorResolver
	cache       sync.Map // full method -> policy
	deviceRoots []*x509.Certificate
	now         func() time.Time
}

// NewAuthorizer returns an Authorizer for cfg.
func NewAuthorizer(cfg Config) *Authorizer {
	files := cfg.Files
	if files == nil {
		files = protoregistry.GlobalFiles
	}
	a := &Authorizer{cfg: cfg, files: files, now: time.Now}
	if cfg.DeviceCAFile != "" {
		// An unreadable file fails ServerTLS first; here it only means that no
		// certificate is a device identity.
		a.deviceRoots, _ = loadCerts(cfg.DeviceCAFile)
	}
	return a
}

// AllowedRoles returns the roles that may call fullMethod ("/pkg.Service/Method"):
// its allowed_roles option plus Config.ExtraMethodRoles. open is true for health,
// reflection and EnrollDeviceIdentity, which callers without a certificate may call.
func (a *Authorizer) AllowedRoles(fullMethod string) (roles []commonv1.Role, open bool) {
	p := a.policy(fullMethod)
	return p.roles, p.open
}

// AllowedServices returns the condaccess services whose service identity may call
// fullMethod: its allowed_services option.
func (a *Authorizer) AllowedServices(fullMethod string) []string {
	return a.policy(fullMethod).services
}

func (a *Authorizer) policy(fullMethod string) policy {
	if p, ok := a.cache.Load(fullMethod); ok {
		return p.(policy)
	}
	p := a.resolve(fullMethod)
	a.cache.Store(fullMethod, p)
	return p
}

// IsOpen reports whether anyone may call fullMethod without a client certificate
// (health, reflection, enrollment). Unlike AllowedRoles it caches nothing, so it may
// be asked about any method name a stranger sends.
func IsOpen(fullMethod string) bool {
	name := strings.TrimPrefix(fullMethod, "/")
	svc, _, _ := strings.Cut(name, "/")
	return openServices[svc] || openMethods["/"+name]
}

// HasVerifiedCertificate reports whether the connection in ctx presented a client
// certificate that verified at the TLS handshake (against the role or the device CA).
// It is not an identity: the Authorizer still checks expiry, revocation and roles.
func HasVerifiedCertificate(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return false
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	return ok && len(ti.State.VerifiedChains) > 0 && len(ti.State.VerifiedChains[0]) > 0
}

func (a *Authorizer) resolve(fullMethod string) policy {
	name := strings.TrimPrefix(fullMethod, "/")
	svc, method, _ := strings.Cut(name, "/")
	if openServices[svc] || openMethods["/"+name] {
		return policy{open: true}
	}
	var p policy
	if d, err := a.files.FindDescriptorByName(protoreflect.FullName(svc)); err == nil {
		if sd, ok := d.(protoreflect.ServiceDescriptor); ok {
			if md := sd.Methods().ByName(protoreflect.Name(method)); md != nil {
				if opts := md.Options(); opts != nil {
					if rs, ok := proto.GetExtension(opts, commonv1.E_AllowedRoles).([]commonv1.Role); ok {
						p.roles = append(p.roles, rs...)
					}
					if ss, ok := proto.GetExtension(opts, commonv1.E_AllowedServices).([]string); ok {
						p.services = append(p.services, ss...)
					}
				}
			}
		}
	}
	for _, key := range []string{fullMethod, "/" + name, name} {
		if rs, ok := a.cfg.ExtraMethodRoles[key]; ok {
			p.roles = append(p.roles, rs...)
			break
		}
	}
	return p
}

// Authenticate returns ctx carrying the caller's identity: the development identity
// (every role) in insecure mode, else read from the verified TLS client certificate.
// ok is false when the caller presented no verified certificate or a refused one.
func (a *Authorizer) Authenticate(ctx context.Context) (context.Context, bool) {
	id, err := a.identify(ctx)
	if err != nil || id.Kind == KindUnknown {
		return ctx, false
	}
	return NewContext(ctx, id), true
}

// identify reads the caller's identity once: from the configuration in insecure
// mode, else from the verified certificate chain. A chain rooted in the device CA is
// a device identity only (its one device URI SAN, nothing else); any other verified
// chain is a role or service certificate, whose device URI SANs do not count. It
// returns KindUnknown without a verified certificate, and CERTIFICATE_EXPIRED /
// CERTIFICATE_REVOKED errors for a certificate past its NotAfter on a long-lived
// connection or of a revoked device.
func (a *Authorizer) identify(ctx context.Context) (Identity, error) {
	if a.cfg.Insecure {
		return devIdentity(), nil
	}
	// A console session, established by the HTTP face in this process (nothing that
	// arrives over the network can put a value in the context).
	session, hasSession := FromContext(ctx)
	hasSession = hasSession && session.Kind == KindConsoleSession
	p, ok := peer.FromContext(ctx)
	if !ok {
		if hasSession {
			return session, nil
		}
		return Identity{}, nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		if hasSession {
			return session, nil
		}
		return Identity{}, nil
	}
	leaf := ti.State.VerifiedChains[0][0]
	if now := a.now(); now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		return Identity{}, apierr.New(codes.Unauthenticated, ReasonCertificateExpired,
			"the client certificate expired at "+leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if !a.deviceChain(ti.State.VerifiedChains) {
		return IdentityFromCert(leaf), nil
	}
	devID, ok := DeviceIDFromCert(leaf)
	if !ok {
		return Identity{}, nil
	}
	if a.cfg.Revocations != nil && !a.cfg.Revocations.Current() {
		return Identity{}, apierr.New(codes.Unauthenticated, ReasonRevocationStatusUnknown,
			"device revocations are not known here yet (the compliance event feed is catching up or unreachable); retry")
	}
	if a.cfg.Revocations != nil && a.cfg.Revocations.Revoked(devID, leaf.NotBefore) {
		return Identity{}, apierr.WithMetadata(codes.Unauthenticated, ReasonCertificateRevoked,
			"the identity of device "+devID+" was revoked", map[string]string{"device_id": devID})
	}
	return deviceIdentity(devID, leaf.NotBefore), nil
}

// deviceChain reports whether every verified chain ends in a device CA.
func (a *Authorizer) deviceChain(chains [][]*x509.Certificate) bool {
	if len(a.deviceRoots) == 0 {
		return false
	}
	for _, ch := range chains {
		root := ch[len(ch)-1]
		if !slices.ContainsFunc(a.deviceRoots, root.Equal) {
			return false
		}
	}
	return true
}

// Authorize authenticates the caller and checks it may call fullMethod. It returns
// UNAUTHENTICATED without an identity (CERTIFICATE_EXPIRED / CERTIFICATE_REVOKED for
// a refused certificate) and PERMISSION_DENIED (reason ROLE_NOT_ALLOWED, metadata
// "allowed_roles") without an allowed role.
func (a *Authorizer) Authorize(ctx context.Context, fullMethod string) (context.Context, error) {
	id, idErr := a.identify(ctx)
	if idErr == nil && id.Kind != KindUnknown {
		ctx = NewContext(ctx, id)
	}
	p := a.policy(fullMethod)
	roles := p.roles
	if p.open {
		return ctx, nil
	}
	if idErr != nil {
		return ctx, idErr
	}
	if id.Kind == KindUnknown {
		return ctx, apierr.New(codes.Unauthenticated, ReasonUnauthenticated,
			"a verified client certificate is required")
	}
	if id.Kind == KindDevelopment {
		return ctx, nil
	}
	for _, r := range roles {
		if id.HasRole(r) {
			return ctx, nil
		}
	}
	// A service identity may call what the contracts let its service call; a role
	// certificate with the legacy spiffe://condaccess/role/service URI counts as
	// every service (the all-in-one identity), no more.
	if id.HasRole(commonv1.Role_ROLE_SERVICE) {
		services := id.Services
		if len(services) == 0 {
			services = ServiceNames
		}
		for _, svc := range services {
			if slices.Contains(p.services, svc) {
				return ctx, nil
			}
		}
	}
	names := make([]string, len(roles))
	for i, r := range roles {
		names[i] = r.String()
	}
	list := strings.Join(names, ",")
	svcs := strings.Join(p.services, ",")
	return ctx, apierr.WithMetadata(codes.PermissionDenied, ReasonRoleNotAllowed,
		fmt.Sprintf("%s may be called only by the roles [%s] and the services [%s]", fullMethod, list, svcs),
		map[string]string{"allowed_roles": list, "allowed_services": svcs, "method": fullMethod})
}

// UnaryServerInterceptor authenticates and authorizes each unary call.
func UnaryServerInterceptor(cfg Config) grpc.UnaryServerInterceptor {
	return NewAuthorizer(cfg).UnaryServerInterceptor()
}

// StreamServerInterceptor authenticates and authorizes each streaming call.
func StreamServerInterceptor(cfg Config) grpc.StreamServerInterceptor {
	return NewAuthorizer(cfg).StreamServerInterceptor()
}

// UnaryServerInterceptor authenticates and authorizes each unary call.
func (a *Authorizer) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := a.Authorize(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor authenticates and authorizes each streaming call, and ends
// a device's stream when its identity is revoked (DeviceStreamInterceptor).
func (a *Authorizer) StreamServerInterceptor() grpc.StreamServerInterceptor {
	cut := a.DeviceStreamInterceptor()
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := a.Authorize(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		return cut(srv, &ctxStream{ServerStream: ss, ctx: ctx}, info, handler)
	}
}

// DeviceStreamInterceptor ends the stream of a device (identity already in the
// stream's context, after authentication) when the device's identity is revoked:
// the handler's context is cancelled and the stream ends UNAUTHENTICATED
// (CERTIFICATE_REVOKED). Other callers' streams pass through. A server chain that
// authenticates with another interceptor adds it right after authentication.
func (a *Authorizer) DeviceStreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx := ss.Context()
		id, _ := FromContext(ctx)
		if id.Kind != KindDevice || a.cfg.Revocations == nil {
			return handler(srv, ss)
		}
		revoked, stop := a.cfg.Revocations.Watch(id.ID)
		defer stop()
		if _, err := a.identify(ctx); err != nil { // revoked before the watch began
			return err
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			select {
			case <-revoked:
				cancel()
			case <-ctx.Done():
			}
		}()
		err := handler(srv, &ctxStream{ServerStream: ss, ctx: ctx})
		select {
		case <-revoked:
			return apierr.WithMetadata(codes.Unauthenticated, ReasonCertificateRevoked,
				"the identity of device "+id.ID+" was revoked", map[string]string{"device_id": id.ID})
		default:
			return err
		}
	}
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }
