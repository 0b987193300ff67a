#!/usr/bin/env bash
# Installs the pinned code-generation and test tools. Sourced by .ci/run and .ci/gen.
set -euo pipefail
BUF_VERSION=v1.75.0
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.0
PROTOVALIDATE_PROTO_VERSION=v1.2.2
# gnostic gives both the OpenAPI 3 generator and the google/api HTTP annotation protos.
GNOSTIC_VERSION=v0.7.1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export GOBIN="${GOBIN:-$(go env GOPATH)/bin}"
export PATH="$GOBIN:$PATH"

install_go_tool() { # name module@version
  local name=$1 mod=$2
  local want=${mod##*@}
  if [ -x "$GOBIN/$name" ] && go version -m "$GOBIN/$name" 2>/dev/null | grep -q "[[:space:]]$want[[:space:]]"; then
    return
  fi
  echo "installing $mod" >&2
  go install "$mod"
}
install_go_tool buf github.com/bufbuild/buf/cmd/buf@$BUF_VERSION
install_go_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION
install_go_tool protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION
install_go_tool protoc-gen-openapi github.com/google/gnostic/cmd/protoc-gen-openapi@$GNOSTIC_VERSION

# protovalidate's validate.proto, from the Go module cache (never committed).
pv_dir=$(go mod download -json github.com/bufbuild/protovalidate@$PROTOVALIDATE_PROTO_VERSION | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
mkdir -p "$root/.cache/protovalidate/buf/validate"
cp -f "$pv_dir/proto/protovalidate/buf/validate/validate.proto" "$root/.cache/protovalidate/buf/validate/validate.proto"
chmod u+w "$root/.cache/protovalidate/buf/validate/validate.proto"

# google/api's http.proto and annotations.proto (the google.api.http option), from the
# same pinned gnostic module, which ships googleapis' copies next to its generator.
gn_dir=$(go mod download -json github.com/google/gnostic@$GNOSTIC_VERSION | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
mkdir -p "$root/.cache/googleapis/google/api"
for f in http.proto annotations.proto; do
  cp -f "$gn_dir/cmd/protoc-gen-openapi/examples/google/api/$f" "$root/.cache/googleapis/google/api/$f"
  chmod u+w "$root/.cache/googleapis/google/api/$f"
done

# Node tools: protoc-gen-es and the TypeScript client runtime (pinned in package.json).
if command -v npm >/dev/null 2>&1; then
  if [ ! -x "$root/.ci/node/node_modules/.bin/protoc-gen-es" ]; then
    (cd "$root/.ci/node" && npm ci --no-audit --no-fund >&2)
  fi
fi
