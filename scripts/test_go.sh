#!/usr/bin/env bash
# The Go checks of the test command: fresh generated stubs, gofmt, go vet, and go test
# (whose TestMain starts real inferbridge servers with the venv's Python) of the client
# module, then gofmt, go vet and go test of its OpenTelemetry module (clients/go/otelib)
# and of the gateway module (the single-server front end and its pool-mode packages under
# internal/: balancer, breaker, clock, config, h1server, health, httpwire, pool, retry).
#
# Needs Go (PATH or /usr/local/go/bin) and the Go module proxy (or a warm module cache);
# the race detector runs when cgo works (a C compiler is present) unless IB_GO_RACE=0.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$PATH:/usr/local/go/bin"
export INFERBRIDGE_PYTHON="${INFERBRIDGE_PYTHON:-$root/.venv/bin/python}"
cd "$root/clients/go"

echo "== go: generated stubs are fresh"
scripts/gen.sh --check

echo "== go: gofmt -l"
unformatted="$(gofmt -l .)"
if [[ -n "$unformatted" ]]; then
  echo "gofmt would change:" >&2
  echo "$unformatted" >&2
  exit 1
fi

echo "== go: go vet ./..."
go vet ./...

echo "== go: the SDK does not depend on OpenTelemetry (clients/go/otelib does)"
if grep -q 'go.opentelemetry.io' go.mod || go list -deps ./... | grep '^go.opentelemetry.io/' >/dev/null; then
  echo "clients/go must not require go.opentelemetry.io; trace propagation lives in clients/go/otelib" >&2
  exit 1
fi

race=()
if [[ "${IB_GO_RACE:-1}" != "0" ]] && [[ "$(go env CGO_ENABLED)" == "1" ]] && command -v "$(go env CC)" >/dev/null 2>&1; then
  race=(-race)
fi
echo "== go: go test ${race[*]:-(no race detector)} ./..."
go test "${race[@]}" -count=1 -timeout 10m ./...

cd "$root/clients/go/otelib"
echo "== go (otelib): gofmt -l"
unformatted="$(gofmt -l .)"
if [[ -n "$unformatted" ]]; then
  echo "gofmt would change (otelib):" >&2
  echo "$unformatted" >&2
  exit 1
fi
echo "== go (otelib): go vet ./..."
go vet ./...
echo "== go (otelib): go test ${race[*]:-(no race detector)} ./..."
go test "${race[@]}" -count=1 -timeout 5m ./...

gateway="$root/src/inferbridge/frontends/gateway/go"
cd "$gateway"
echo "== go (gateway): gofmt -l"
unformatted="$(gofmt -l .)"
if [[ -n "$unformatted" ]]; then
  echo "gofmt would change (gateway):" >&2
  echo "$unformatted" >&2
  exit 1
fi
echo "== go (gateway): go vet ./..."
go vet ./...
echo "== go (gateway): go test ${race[*]:-(no race detector)} ./..."
go test "${race[@]}" -count=1 -timeout 5m ./...

# The fleet's node agent (issue #13): unit tests of its reconciler, downloads and parsers.
agent="$root/src/inferbridge/fleet/agent"
cd "$agent"
echo "== go (agent): gofmt -l"
unformatted="$(gofmt -l .)"
if [[ -n "$unformatted" ]]; then
  echo "gofmt would change (agent):" >&2
  echo "$unformatted" >&2
  exit 1
fi
echo "== go (agent): go vet ./..."
go vet ./...
echo "== go (agent): go test ${race[*]:-(no race detector)} ./..."
go test "${race[@]}" -count=1 -timeout 5m ./...

# Bounded fuzzing (issue #16): every native fuzz target runs its seed corpus in go test
# above; here each one also mutates inputs for a bounded number of executions. A crasher is
# written to the package's testdata/fuzz/<target>/ and fails the run: fix it and commit that
# file as a regression input. IB_GO_FUZZTIME=0 skips this part.
#
# The bound is a count (Nx), not a duration: Go 1.26's fuzz coordinator can report its own
# -fuzztime deadline as a failure ("context deadline exceeded", no crasher written) when a
# worker is busy at the boundary, which a loaded 2-core machine hits (golang/go#75804, fixed
# in Go 1.27). A count has no deadline; and should a run still fail without writing a
# crasher, that is the harness, not an input, so it is retried once.
fuzztime="${IB_GO_FUZZTIME:-50000x}"
if [[ "$fuzztime" != "0" ]]; then
  fuzz_targets() {  # module dir, package: each Fuzz function of the package's tests
    (cd "$1" && grep -ho '^func Fuzz[A-Za-z0-9_]*' "$2"/*_test.go | sed 's/^func //')
  }
  crashers() {  # module dir, package, target: the inputs the fuzzer has written
    if [[ -d "$1/$2/testdata/fuzz/$3" ]]; then find "$1/$2/testdata/fuzz/$3" -type f | sort; fi
  }
  for spec in "$gateway:./internal/local" "$gateway:./internal/h1server" "$gateway:./internal/pool" "$root/clients/go:."; do
    dir="${spec%%:*}"
    pkg="${spec#*:}"
    for target in $(fuzz_targets "$dir" "$pkg"); do
      for try in 1 2; do
        echo "== go fuzz: $target ($pkg, $fuzztime, try $try)"
        before="$(crashers "$dir" "$pkg" "$target")"
        if (cd "$dir" && go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"); then
          break
        fi
        if [[ "$(crashers "$dir" "$pkg" "$target")" != "$before" ]] || [[ "$try" == 2 ]]; then
          echo "fuzz target $target failed (an input it wrote is under $pkg/testdata/fuzz/$target/, if any)" >&2
          exit 1
        fi
        echo "fuzz target $target failed without writing an input: the Go fuzz harness, retrying once" >&2
      done
    done
  done
fi
