#!/usr/bin/env bash
# What live drift monitoring costs /predict: the serving bench's aurum mode
# (prediction log on, as `aurum serve` runs) with and without the monitor
# (evaluating every second against a reference profile of the served
# features — 30x more often than `aurum serve`'s default), alternated so
# drift in the machine's state hits both alike.
#
# usage: benches/serving/monitor_overhead.sh [SECONDS] [CONNECTIONS] [ROUNDS]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
seconds="${1:-10}"
connections="${2:-16}"
rounds="${3:-3}"

"$root/scripts/install-onnxruntime.sh" > /dev/null
"$root/scripts/setup-python.sh" "$root/.tools/serving-venv" "$root/benches/serving/requirements.txt"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$root/.tools/serving-venv/bin/python" "$root/benches/serving/make_model.py" "$work" 100000

cd "$root"
cargo bench --quiet --bench serving --no-run
common=(aurum --model "$work/model.onnx" --parquet "$work/features.parquet" --body-file "$work/bodies_aurum.jsonl" --seconds "$seconds" --connections "$connections")
rps() { grep -o '[0-9.]* requests/s' <<<"$1" | head -1 | cut -d' ' -f1; }
p99() { grep -o 'p99=[0-9.]*' <<<"$1" | head -1 | cut -d= -f2; }
off_total=0; on_total=0
for round in $(seq 1 "$rounds"); do
    off="$(cargo bench --quiet --bench serving -- "${common[@]}")"
    on="$(cargo bench --quiet --bench serving -- "${common[@]}" --monitor)"
    echo "round $round: monitor off $(rps "$off") req/s p99 $(p99 "$off") µs; monitor on $(rps "$on") req/s p99 $(p99 "$on") µs"
    off_total="$(echo "$off_total + $(rps "$off")" | bc)"
    on_total="$(echo "$on_total + $(rps "$on")" | bc)"
done
echo "mean throughput: off $(echo "scale=0; $off_total / $rounds" | bc) req/s, on $(echo "scale=0; $on_total / $rounds" | bc) req/s;" \
     "cost $(echo "scale=6; (1 - $on_total / $off_total) * 100" | bc | cut -c1-5)% (target < 5%)"
