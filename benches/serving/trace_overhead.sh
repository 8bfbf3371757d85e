#!/usr/bin/env bash
# What tracing costs /predict: the serving bench's aurum mode with tracing
# off, on with the ratio sampler at 1 %, and on at 100 %, the spans exported
# over OTLP/HTTP to a collector in the bench's process. The three settings
# run in turn each round, the order rotating from round to round so drift in
# the machine's state hits all alike. Issue 22's target: < 3 % at 1 %; the
# cost at 100 % is reported.
#
# usage: benches/serving/trace_overhead.sh [SECONDS] [CONNECTIONS] [ROUNDS]
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
cargo bench --quiet --profile "${PROFILE:-bench}" --bench serving --no-run
common=(aurum --model "$work/model.onnx" --parquet "$work/features.parquet" --body-file "$work/bodies_aurum.jsonl" --seconds "$seconds" --connections "$connections")
rps() { grep -o '[0-9.]* requests/s' <<<"$1" | head -1 | cut -d' ' -f1; }
p99() { grep -o 'p99=[0-9.]*' <<<"$1" | head -1 | cut -d= -f2; }
settings=(off 0.01 1.0)
declare -A total=([off]=0 [0.01]=0 [1.0]=0)
for round in $(seq 1 "$rounds"); do
    line="round $round:"
    for i in 0 1 2; do
        setting="${settings[$(( (i + round - 1) % 3 ))]}"
        extra=()
        [ "$setting" != off ] && extra=(--trace "$setting")
        out="$(cargo bench --quiet --profile "${PROFILE:-bench}" --bench serving -- "${common[@]}" "${extra[@]}")"
        line="$line tracing $setting $(rps "$out") req/s p99 $(p99 "$out") µs;"
        total[$setting]="$(echo "${total[$setting]} + $(rps "$out")" | bc)"
        grep '^traces:' <<<"$out" | sed "s/^/  ($setting) /" || true
    done
    echo "$line"
done
off="${total[off]}"
for setting in 0.01 1.0; do
    echo "tracing $setting: mean $(echo "scale=0; ${total[$setting]} / $rounds" | bc) req/s vs off $(echo "scale=0; $off / $rounds" | bc) req/s;" \
         "cost $(echo "scale=6; (1 - ${total[$setting]} / $off) * 100" | bc | cut -c1-5)%"
done
echo "(target: < 3% at 0.01)"
