// Package remediationapp plugs the remediation service into the condaccess binary.
package remediationapp

import (
	"context"
	"flag"

	"google.golang.org/grpc"

	remediationv1 "github.com/condaccess/condaccess/gen/go/condaccess/remediation/v1"
	"github.com/condaccess/condaccess/internal/suite"
)

// Factory builds the remediation service. Placeholder: every RPC answers UNIMPLEMENTED.
type Factory struct{}

// Name implements suite.Factory.
func (*Factory) Name() string { return "remediation" }

// RegisterFlags implements suite.Factory.
func (*Factory) RegisterFlags(fs *flag.FlagSet) {}

// New implements suite.Factory.
func (*Factory) New(ctx context.Context, env suite.Env) (suite.Service, error) {
	return &service{}, nil
}

type service struct{}

func (*service) Register(s grpc.ServiceRegistrar) {
	remediationv1.RegisterRemediationServiceServer(s, remediationv1.UnimplementedRemediationServiceServer{})
	remediationv1.RegisterAgentServiceServer(s, remediationv1.UnimplementedAgentServiceServer{})
}
func (*service) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (*service) Close() error                  { return nil }
