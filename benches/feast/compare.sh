#!/usr/bin/env bash
# Side by side on the same rows and requests: Feast's own feature server
# (`feast serve`, local provider, sqlite online store, 2 workers) and
# aurum's /get-online-features, both loaded by the same closed-loop
# generator (benches/online.rs `load`) on loopback, on the same machine.
#
# usage: benches/feast/compare.sh [ENTITIES] [SECONDS] [CONNECTIONS]
# Sets Feast up itself in the git-ignored .tools/feast-venv.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
entities="${1:-100000}"
seconds="${2:-10}"
connections="${3:-32}"
features=50
port=6566

"$root/benches/feast/setup.sh"
venv="$root/.tools/feast-venv"
work="$(mktemp -d)"
feast_pid=""
cleanup() {
    if [[ -n "$feast_pid" ]]; then kill "$feast_pid" 2>/dev/null || true; wait "$feast_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

repo="$work/repo"
parquet="$("$venv/bin/python" "$root/benches/feast/make_repo.py" "$repo" "$entities" "$features")"
cd "$repo"
"$venv/bin/feast" apply > "$work/apply.log" 2>&1
start=$(date +%s.%N)
"$venv/bin/feast" materialize "$(date -u -d '-2 hours' +%Y-%m-%dT%H:%M:%S)" "$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%S)" > "$work/materialize.log" 2>&1
echo "feast materialize of $entities entities x $features features into sqlite: $(echo "$(date +%s.%N) - $start" | bc) s"

# Generous to Feast: no access log, no periodic worker restarts.
"$venv/bin/feast" serve -h 127.0.0.1 -p "$port" -w 2 --no-access-log --max-requests 100000000 > "$work/serve.log" 2>&1 &
feast_pid=$!
for _ in $(seq 1 120); do
    if curl -fs -o /dev/null "http://127.0.0.1:$port/health"; then break; fi
    sleep 1
done
curl -fs -o /dev/null "http://127.0.0.1:$port/health" || { cat "$work/serve.log"; exit 1; }
echo "feast answers: $(curl -s -X POST -H "Content-Type: application/json" "http://127.0.0.1:$port/get-online-features" -d "$(head -1 "$repo/bodies_3.jsonl")" | head -c 400)"

cd "$root"
cargo bench --quiet --bench online --no-run
for count in 3 "$features"; do
    bodies="$repo/bodies_$count.jsonl"
    echo "== 1 entity x $count features, $connections connections, $seconds s"
    feast_out="$(cargo bench --quiet --bench online -- load --url "http://127.0.0.1:$port/get-online-features" --body-file "$bodies" --seconds "$seconds" --connections "$connections")"
    echo "feast: $feast_out"
    kill -STOP "$feast_pid" $(pgrep -P "$feast_pid" || true) # Feast idle while aurum is measured
    aurum_out="$(cargo bench --quiet --bench online -- http --parquet "$parquet" --body-file "$bodies" --seconds "$seconds" --connections "$connections")"
    kill -CONT "$feast_pid" $(pgrep -P "$feast_pid" || true)
    echo "aurum: $aurum_out"
    rps() { grep -o '[0-9.]* requests/s' <<<"$1" | head -1 | cut -d' ' -f1; }
    p99() { grep -o 'p99=[0-9.]*' <<<"$1" | head -1 | cut -d= -f2; }
    echo "ratio: throughput aurum/feast = $(echo "scale=1; $(rps "$aurum_out") / $(rps "$feast_out")" | bc)x," \
         "p99 feast/aurum = $(echo "scale=1; $(p99 "$feast_out") / $(p99 "$aurum_out")" | bc)x"
done
