// Package condaccess holds the OpenAPI 3 document of the suite's REST mappings,
// generated from the contracts by `bash .ci/gen` into gen/openapi.
package condaccess

import _ "embed"

// `go generate .` (or ./...) regenerates everything generated, as `bash .ci/gen` does:
// it first fetches the pinned third-party protos into .cache/, which plain `buf lint` and
// `buf generate` need and a fresh clone does not have.
//
//go:generate bash .ci/gen

// OpenAPI is gen/openapi/openapi.yaml: every google.api.http mapping of the condaccess
// contracts, served by the HTTP face at /openapi.yaml.
//
//go:embed gen/openapi/openapi.yaml
var OpenAPI []byte
