// Package suite defines how a condaccess service plugs into the condaccess binary.
package suite

import (
	"context"
	"flag"
	"log/slog"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"

	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/auth"
)

// Peers are the gRPC addresses of the four services. When the services run in one
// process every address is that process's own gRPC address: they still talk over gRPC,
// so both shapes run the same code.
type Peers struct {
	Risk, Compliance, Access, Remediation string
}

// Env is what the binary gives a service when it starts.
type Env struct {
	// Logger is the service's logger (trace ids are added per record).
	Logger *slog.Logger
	// DataDir is the service's own data directory (created, writable).
	DataDir string
	// DatabaseURL is the PostgreSQL URL of --database-url: when set, a service whose
	// Factory implements PostgresReady keeps its store there (in its own schema)
	// instead of in DataDir; serve refuses to start any other service with it.
	DatabaseURL string
	// LeaseDuration is --lease-duration: how long a replica's leadership of once-only
	// background work lasts without renewal (PostgreSQL only).
	LeaseDuration time.Duration
	// Peers are the addresses of the other services.
	Peers Peers
	// Dial opens a client connection to a peer with the suite's credentials and
	// OpenTelemetry instrumentation (trace context propagates).
	Dial func(addr string) (*grpc.ClientConn, error)
	// HTTPMux is the HTTP mux served on --http-addr (/metrics is already mounted).
	HTTPMux *http.ServeMux
	// Health is the gRPC health server; a service may set its own serving status.
	Health *health.Server
	// DeviceCAFile is the PEM device CA (--device-ca-cert) that device certificates
	// chain to; empty when not configured.
	DeviceCAFile string
	// DevMode is insecure development mode (no TLS, every caller is "dev").
	DevMode bool
	// AuthzMux, when not nil, is served on --authz-addr (a unix socket whose callers
	// count as enforcement points): a service mounts its forward-auth handler there too.
	AuthzMux *http.ServeMux
	// DeviceCAKeyFile is the device CA's private key (PEM), which the compliance
	// service signs device certificates with.
	DeviceCAKeyFile string
	// ServerCABundleFile is the CA bundle the suite's server certificates chain to,
	// handed to enrolling devices; empty in insecure mode.
	ServerCABundleFile string
	// Revocations is the process's set of revoked device identities, fed by the
	// compliance event stream; the auth layer refuses revoked device certificates
	// and the access service blocks revoked devices.
	Revocations *auth.Revocations
	// ConsoleURL returns the base URL (scheme://host:port) of the console on the HTTP
	// address, or "" when no HTTP address is served. It is known once the process
	// listens, so call it when serving, not while building the service.
	ConsoleURL func() string
}

// Service is one condaccess service running inside the binary.
type Service interface {
	// Register registers the service's gRPC servers.
	Register(s grpc.ServiceRegistrar)
	// Run does the service's background work (event consumers, timers) until ctx ends.
	// It returns nil when ctx ends.
	Run(ctx context.Context) error
	// Close releases the service's resources (its store); called after the gRPC server
	// has stopped.
	Close() error
}

// Audited is implemented by a Service whose store keeps an audit log of admin changes;
// the process serves condaccess.audit.v1.AuditService over the logs of its services.
type Audited interface {
	Audit() *audit.Log
}

// PostgresReady is implemented by a Factory whose service can keep its store in
// PostgreSQL (Env.DatabaseURL).
type PostgresReady interface {
	SupportsPostgres()
}

// Factory builds one service from its flags.
type Factory interface {
	// Name is the service name used by --services: risk, compliance, access, remediation.
	Name() string
	// RegisterFlags registers the service's own flags (each with an environment
	// override) on fs.
	RegisterFlags(fs *flag.FlagSet)
	// New opens the service's store and builds it.
	New(ctx context.Context, env Env) (Service, error)
}
