#!/usr/bin/env bash
# Generate the Go stubs (inferencepb/, aipb/) from the project's proto/ directory.
#
#   scripts/gen.sh          rewrite the checked-in stubs
#   scripts/gen.sh --check  exit 1 if regenerating would change them (CI freshness check)
#
# protoc is grpcio-tools' bundled compiler (`python -m grpc_tools.protoc`, from the project's
# virtual environment: no system package needed); the Go plugins are pinned below and
# installed with `go install` into a private GOBIN, so the output never depends on whatever
# protoc-gen-go happens to be on PATH.
set -euo pipefail

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
MODULE=github.com/inferbridge/inferbridge/clients/go

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"   # clients/go
root="$(cd "$here/../.." && pwd)"                          # repository root
python="${INFERBRIDGE_PYTHON:-$root/.venv/bin/python}"
go="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"

gobin="${IB_GEN_GOBIN:-$root/.cache/go-protoc-plugins/$PROTOC_GEN_GO_VERSION-$PROTOC_GEN_GO_GRPC_VERSION}"
if [[ ! -x "$gobin/protoc-gen-go" || ! -x "$gobin/protoc-gen-go-grpc" ]]; then
  mkdir -p "$gobin"
  GOBIN="$gobin" "$go" install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
  GOBIN="$gobin" "$go" install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
fi

generate() {  # $1: output directory standing in for clients/go
  local out="$1"
  PATH="$gobin:$PATH" "$python" -m grpc_tools.protoc \
    -I"$root/proto" \
    --plugin=protoc-gen-go="$gobin/protoc-gen-go" \
    --plugin=protoc-gen-go-grpc="$gobin/protoc-gen-go-grpc" \
    --go_out="$out" --go_opt=module="$MODULE" \
    --go-grpc_out="$out" --go-grpc_opt=module="$MODULE" \
    grpc_service.proto model_config.proto ai_service.proto
}

if [[ "${1:-}" == "--check" ]]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  generate "$tmp"
  status=0
  for pkg in inferencepb aipb; do
    if ! diff -r "$tmp/$pkg" "$here/$pkg" >/dev/null 2>&1; then
      echo "stale Go stubs in clients/go/$pkg:" >&2
      diff -r "$tmp/$pkg" "$here/$pkg" | head -20 >&2 || true
      status=1
    fi
  done
  if [[ $status -ne 0 ]]; then
    echo "run: clients/go/scripts/gen.sh" >&2
  fi
  exit $status
fi

rm -rf "$here/inferencepb" "$here/aipb"
generate "$here"
