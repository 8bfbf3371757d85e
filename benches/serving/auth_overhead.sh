#!/usr/bin/env bash
# What checking tokens costs /predict and /get-online-features: the serving
# bench's aurum mode without tokens and with one read token (every request
# carries `Authorization: Bearer`), alternated (and which goes first within
# a round alternates too) so drift in the machine's state hits both alike.
# Issue 21's target: < 2 % of throughput.
#
# usage: benches/serving/auth_overhead.sh [SECONDS] [CONNECTIONS] [ROUNDS]
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
for route in ${ROUTES:-predict online}; do
    extra=()
    [ "$route" = online ] && extra=(--online)
    off_total=0; on_total=0
    for round in $(seq 1 "$rounds"); do
        # Which setting runs first alternates, so a drift within a round
        # (the second run of a pair on a warmer or busier machine) falls
        # on both alike.
        if [ $((round % 2)) -eq 1 ]; then
            off="$(cargo bench --quiet --profile "${PROFILE:-bench}" --bench serving -- "${common[@]}" "${extra[@]}")"
            on="$(cargo bench --quiet --profile "${PROFILE:-bench}" --bench serving -- "${common[@]}" "${extra[@]}" --token)"
        else
            on="$(cargo bench --quiet --profile "${PROFILE:-bench}" --bench serving -- "${common[@]}" "${extra[@]}" --token)"
            off="$(cargo bench --quiet --profile "${PROFILE:-bench}" --bench serving -- "${common[@]}" "${extra[@]}")"
        fi
        echo "$route round $round: tokens off $(rps "$off") req/s p99 $(p99 "$off") µs; on $(rps "$on") req/s p99 $(p99 "$on") µs"
        off_total="$(echo "$off_total + $(rps "$off")" | bc)"
        on_total="$(echo "$on_total + $(rps "$on")" | bc)"
    done
    echo "$route mean throughput: off $(echo "scale=0; $off_total / $rounds" | bc) req/s, on $(echo "scale=0; $on_total / $rounds" | bc) req/s;" \
         "cost $(echo "scale=6; (1 - $on_total / $off_total) * 100" | bc | cut -c1-5)% (target < 2%)"
done
