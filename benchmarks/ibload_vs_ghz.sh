#!/usr/bin/env bash
# ibload against ghz on the same scenario: iris_onnx ModelInfer over gRPC (raw FP32 input
# [1, 4] = 5.1 3.5 1.4 0.2), closed loop at a fixed concurrency over one connection, on a
# fresh `inferbridge serve` of the bundled examples. The two tools alternate for ROUNDS
# rounds after a warm-up, and a markdown table of their numbers is printed at the end.
#
#   benchmarks/ibload_vs_ghz.sh                 # CONCURRENCY=8 DURATION=15s ROUNDS=2
#   CONCURRENCY=16 DURATION=30s ROUNDS=3 benchmarks/ibload_vs_ghz.sh
#
# Needs Go (ghz is installed with `go install github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION`
# into .cache/) and the project's venv. Both load generators share the machine with the
# server: compare them with each other within one run, not across machines.
set -euo pipefail

CONCURRENCY="${CONCURRENCY:-8}"
DURATION="${DURATION:-15s}"
ROUNDS="${ROUNDS:-2}"
GHZ_VERSION="${GHZ_VERSION:-v0.93.0}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="$PATH:/usr/local/go/bin"
python="${INFERBRIDGE_PYTHON:-$root/.venv/bin/python}"
work="$(mktemp -d)"
bin="$root/.cache/bench-bin"
mkdir -p "$bin"

ghz="$bin/ghz-$GHZ_VERSION"
if [[ ! -x "$ghz" ]]; then
  GOBIN="$work/gobin" go install "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION"
  mv "$work/gobin/ghz" "$ghz"
fi
(cd clients/go && go build -o "$bin/ibload" ./cmd/ibload)

"$python" -m inferbridge serve --http-port 0 --grpc-port 0 --log-level warning >"$work/server.log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 600); do
  grep -q "inferbridge: serving" "$work/server.log" && break
  kill -0 $server 2>/dev/null || { cat "$work/server.log"; exit 1; }
  sleep 0.2
done
target="$(sed -n 's/^inferbridge: gRPC listening on \([^ ]*\)$/\1/p' "$work/server.log")"
[[ -n "$target" ]] || { cat "$work/server.log"; exit 1; }

row='[5.1,3.5,1.4,0.2]'
raw="$("$python" -c "import base64, struct; print(base64.b64encode(struct.pack('<4f', *$row)).decode())")"
data="{\"model_name\":\"iris_onnx\",\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[1,4]}],\"raw_input_contents\":[\"$raw\"]}"

run_ibload() {  # $1: JSON report file; $2: duration
  /usr/bin/time -f "%U %S" -o "$1.cpu" "$bin/ibload" -protocol grpc -target "$target" -model iris_onnx \
    -data "$row" -concurrency "$CONCURRENCY" -connections 1 -duration "$2" -warmup 0s -timeout 5s -json - >"$1"
}
run_ghz() {  # $1: JSON report file; $2: duration
  /usr/bin/time -f "%U %S" -o "$1.cpu" "$ghz" --insecure --proto proto/grpc_service.proto --import-paths proto \
    --call inference.GRPCInferenceService.ModelInfer -d "$data" \
    -c "$CONCURRENCY" --connections 1 -z "$2" -t 5s -O json "$target" >"$1"
}

echo "server: inferbridge (bundled examples) at $target; scenario: iris_onnx ModelInfer, raw FP32 [1,4], concurrency $CONCURRENCY, 1 connection, $DURATION per run, $ROUNDS rounds" >&2
echo "ibload: $bin/ibload -protocol grpc -target $target -model iris_onnx -data '$row' -concurrency $CONCURRENCY -connections 1 -duration $DURATION -warmup 0s -timeout 5s -json -" >&2
echo "ghz:    $ghz --insecure --proto proto/grpc_service.proto --import-paths proto --call inference.GRPCInferenceService.ModelInfer -d '$data' -c $CONCURRENCY --connections 1 -z $DURATION -t 5s -O json $target" >&2
run_ibload "$work/warm-ibload.json" 3s
run_ghz "$work/warm-ghz.json" 3s
for round in $(seq "$ROUNDS"); do
  echo "round $round: ibload" >&2
  run_ibload "$work/ibload-$round.json" "$DURATION"
  echo "round $round: ghz" >&2
  run_ghz "$work/ghz-$round.json" "$DURATION"
done

"$python" - "$work" "$ROUNDS" "$DURATION" <<'PY'
import json
import sys
from pathlib import Path

work, rounds, duration = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
print("| round | tool | requests | errors | req/s | mean ms | p50 ms | p90 ms | p99 ms | max ms | client CPU s |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in range(1, rounds + 1):
    for tool in ("ibload", "ghz"):
        path = work / f"{tool}-{r}.json"
        d = json.loads(path.read_text())
        user, system = (float(x) for x in (work / f"{tool}-{r}.json.cpu").read_text().split()[-2:])
        if tool == "ibload":
            lat = d["latency_ms"]
            row = [d["requests"], d["requests"] - d["ok"], d["requests_per_s"], lat["mean"], lat["p50"],
                   lat["p90"], lat["p99"], lat["max"]]
        else:
            dist = {p["percentage"]: p["latency"] / 1e6 for p in d.get("latencyDistribution") or []}
            errors = sum(n for code, n in d.get("statusCodeDistribution", {}).items() if code != "OK")
            row = [d["count"], errors, d["rps"], d["average"] / 1e6, dist.get(50, 0), dist.get(90, 0),
                   dist.get(99, 0), d["slowest"] / 1e6]
        cells = [str(row[0]), str(row[1]), f"{row[2]:.0f}"] + [f"{x:.2f}" for x in row[3:]]
        print(f"| {r} | {tool} | " + " | ".join(cells) + f" | {user + system:.1f} |")
PY
