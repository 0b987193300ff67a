// Package riskapp plugs the risk service into the condaccess binary.
package riskapp

import (
	"context"
	"flag"

	"google.golang.org/grpc"

	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/suite"
)

// Factory builds the risk service. Placeholder: every RPC answers UNIMPLEMENTED.
type Factory struct{}

// Name implements suite.Factory.
func (*Factory) Name() string { return "risk" }

// RegisterFlags implements suite.Factory.
func (*Factory) RegisterFlags(fs *flag.FlagSet) {}

// New implements suite.Factory.
func (*Factory) New(ctx context.Context, env suite.Env) (suite.Service, error) {
	return &service{}, nil
}

type service struct{}

func (*service) Register(s grpc.ServiceRegistrar) {
	riskv1.RegisterRiskServiceServer(s, riskv1.UnimplementedRiskServiceServer{})
}
func (*service) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (*service) Close() error                  { return nil }
