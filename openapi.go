// Package condaccess holds the OpenAPI 3 document of the suite's REST mappings,
// generated from the contracts by `bash .ci/gen` into gen/openapi.
package condaccess

import _ "embed"

// OpenAPI is gen/openapi/openapi.yaml: every google.api.http mapping of the condaccess
// contracts, served by the HTTP face at /openapi.yaml.
//
//go:embed gen/openapi/openapi.yaml
var OpenAPI []byte
