// Package accessapp plugs the access service into the condaccess binary.
package accessapp

import (
	"context"
	"flag"

	"google.golang.org/grpc"

	accessv1 "github.com/condaccess/condaccess/gen/go/condaccess/access/v1"
	"github.com/condaccess/condaccess/internal/suite"
)

// Factory builds the access service. Placeholder: every RPC answers UNIMPLEMENTED.
type Factory struct{}

// Name implements suite.Factory.
func (*Factory) Name() string { return "access" }

// RegisterFlags implements suite.Factory.
func (*Factory) RegisterFlags(fs *flag.FlagSet) {}

// New implements suite.Factory.
func (*Factory) New(ctx context.Context, env suite.Env) (suite.Service, error) {
	return &service{}, nil
}

type service struct{}

func (*service) Register(s grpc.ServiceRegistrar) {
	accessv1.RegisterDirectoryServiceServer(s, accessv1.UnimplementedDirectoryServiceServer{})
	accessv1.RegisterConditionalAccessPolicyServiceServer(s, accessv1.UnimplementedConditionalAccessPolicyServiceServer{})
	accessv1.RegisterAccessServiceServer(s, accessv1.UnimplementedAccessServiceServer{})
}
func (*service) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (*service) Close() error                  { return nil }
