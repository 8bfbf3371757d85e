#!/usr/bin/env bash
# /predict side by side on the same model, requests and load generator:
# FastAPI + uvicorn (2 workers) + onnxruntime given the 8 feature values in
# the request, and aurum fetching them from its online store by entity key
# (with its prediction log on, as `aurum serve` runs by default). Both
# servers answer a 50-tree depth-3 GradientBoostingClassifier exported by
# skl2onnx (zipmap off). Then aurum again with a hot swap of the served
# version in the middle of the run, and with micro-batching on.
#
# usage: benches/serving/compare_fastapi.sh [SECONDS] [CONNECTIONS] [ENTITIES]
# Sets the Python side up itself in the git-ignored .tools/serving-venv.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
seconds="${1:-10}"
connections="${2:-16}"
entities="${3:-100000}"

"$root/scripts/install-onnxruntime.sh" > /dev/null
"$root/scripts/setup-python.sh" "$root/.tools/serving-venv" "$root/benches/serving/requirements.txt"
venv="$root/.tools/serving-venv"
work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]]; then
        kill -CONT "$server_pid" $(pgrep -P "$server_pid" || true) 2>/dev/null || true
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

"$venv/bin/python" "$root/benches/serving/make_model.py" "$work" "$entities"
port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
(cd "$root/benches/serving" && MODEL="$work/model.onnx" exec "$venv/bin/uvicorn" fastapi_app:app \
    --host 127.0.0.1 --port "$port" --workers 2 --no-access-log --log-level warning) > "$work/uvicorn.log" 2>&1 &
server_pid=$!
first="$(head -1 "$work/bodies_fastapi.jsonl")"
for _ in $(seq 1 120); do
    if curl -fs -o /dev/null -X POST -H 'Content-Type: application/json' -d "$first" "http://127.0.0.1:$port/predict"; then break; fi
    sleep 0.5
done
curl -fs -X POST -H 'Content-Type: application/json' -d "$first" "http://127.0.0.1:$port/predict" > /dev/null || { cat "$work/uvicorn.log"; exit 1; }

cd "$root"
cargo bench --quiet --bench serving --no-run
bench() { cargo bench --quiet --bench serving -- "$@"; }
echo "== FastAPI + uvicorn (2 workers) + onnxruntime, $connections connections, $seconds s"
fastapi_out="$(bench load --url "http://127.0.0.1:$port/predict" --body-file "$work/bodies_fastapi.jsonl" --seconds "$seconds" --connections "$connections")"
echo "$fastapi_out"
# The same three requests' answers, to check both servers agree.
fastapi_check="$(head -3 "$work/bodies_fastapi.jsonl" | while read -r body; do
    curl -fs -X POST -H 'Content-Type: application/json' -d "$body" "http://127.0.0.1:$port/predict"; echo; done)"
kill -STOP "$server_pid" $(pgrep -P "$server_pid" || true) # idle while aurum is measured

common=(--model "$work/model.onnx" --parquet "$work/features.parquet" --body-file "$work/bodies_aurum.jsonl" --seconds "$seconds" --connections "$connections")
echo "== aurum, $connections connections, $seconds s"
aurum_out="$(bench aurum "${common[@]}")"
echo "$aurum_out"

"$venv/bin/python" - "$fastapi_check" "$aurum_out" <<'PY'
import json, re, sys
fastapi = [json.loads(l)["prediction"] for l in sys.argv[1].splitlines() if l.strip()]
aurum = [float(m) for m in re.findall(r"^check: .* -> (\S+)$", sys.argv[2], re.M)]
worst = max(abs(a - b) for a, b in zip(fastapi, aurum))
print(f"answers: fastapi {fastapi} aurum {aurum}; largest difference {worst:.2e}")
sys.exit(0 if len(aurum) == len(fastapi) == 3 and worst < 1e-5 else "the servers disagree")
PY

rps() { grep -o '[0-9.]* requests/s' <<<"$1" | head -1 | cut -d' ' -f1; }
p99() { grep -o 'p99=[0-9.]*' <<<"$1" | head -1 | cut -d= -f2; }
echo "ratio: throughput aurum/fastapi = $(echo "scale=2; $(rps "$aurum_out") / $(rps "$fastapi_out")" | bc)x," \
     "p99 fastapi/aurum = $(echo "scale=2; $(p99 "$fastapi_out") / $(p99 "$aurum_out")" | bc)x"

echo "== aurum with a hot swap of the served version mid-run"
bench aurum "${common[@]}" --swap
echo "== aurum without the prediction log"
bench aurum "${common[@]}" --no-log
for batch in 8:100 16:500; do
    echo "== aurum with micro-batching (max rows:max delay µs = $batch)"
    bench aurum "${common[@]}" --batch "$batch"
done
