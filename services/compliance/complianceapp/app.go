// Package complianceapp plugs the compliance service into the condaccess binary.
package complianceapp

import (
	"context"
	"flag"

	"google.golang.org/grpc"

	compliancev1 "github.com/condaccess/condaccess/gen/go/condaccess/compliance/v1"
	"github.com/condaccess/condaccess/internal/suite"
)

// Factory builds the compliance service. Placeholder: every RPC answers UNIMPLEMENTED.
type Factory struct{}

// Name implements suite.Factory.
func (*Factory) Name() string { return "compliance" }

// RegisterFlags implements suite.Factory.
func (*Factory) RegisterFlags(fs *flag.FlagSet) {}

// New implements suite.Factory.
func (*Factory) New(ctx context.Context, env suite.Env) (suite.Service, error) {
	return &service{}, nil
}

type service struct{}

func (*service) Register(s grpc.ServiceRegistrar) {
	compliancev1.RegisterDeviceServiceServer(s, compliancev1.UnimplementedDeviceServiceServer{})
	compliancev1.RegisterCompliancePolicyServiceServer(s, compliancev1.UnimplementedCompliancePolicyServiceServer{})
	compliancev1.RegisterComplianceServiceServer(s, compliancev1.UnimplementedComplianceServiceServer{})
}
func (*service) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (*service) Close() error                  { return nil }
