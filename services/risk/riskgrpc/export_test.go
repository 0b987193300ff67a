package riskgrpc

import (
	"context"

	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
)

// ReporterOf exposes reporterOf to the external tests, as the proto message.
func ReporterOf(s *Server, ctx context.Context, deviceID string) *riskv1.AlertReporter {
	r := s.reporterOf(ctx, deviceID)
	return &riskv1.AlertReporter{Kind: riskv1.ReporterKind(r.Kind), Id: r.ID}
}
