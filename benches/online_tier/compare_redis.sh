#!/usr/bin/env bash
# Issue 20's figures, in one run on this machine, against one real Redis
# (Debian's redis-server from .tools/redis, started here on a loopback port
# without persistence):
#   1. redis-benchmark's own pipelined SET rate (the ceiling of any writer);
#   2. aurum materializing a gold table into Redis (benches/online.rs
#      `materialize --redis`);
#   3. /get-online-features, 1 entity x 50 features, through Redis with
#      every read an L1 miss (--l1-mib 0) and with L1 hits;
#   4. Feast's own feature server (`feast serve`, 2 workers) with its Redis
#      online store over the same rows and requests, loaded by the same
#      generator; ratios printed.
#
# usage: benches/online_tier/compare_redis.sh [ENTITIES] [SECONDS] [CONNECTIONS] [GOLD_ROWS]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
entities="${1:-100000}"
seconds="${2:-10}"
connections="${3:-32}"
gold_rows="${4:-10000000}"
# The dev profile (dependencies at opt-level 1) is what the other recent
# benches ran with; AURUM_BENCH_PROFILE=release for a release build.
profile="${AURUM_BENCH_PROFILE:-dev}"
features=50

"$root/scripts/install-redis.sh" >/dev/null
"$root/benches/feast/setup.sh"
venv="$root/.tools/feast-venv"
redis_bin="$root/.tools/redis/bin"
work="$(mktemp -d)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port="$(free_port)"
feast_port="$(free_port)"
redis_pid=""
feast_pid=""
cleanup() {
    for pid in "$feast_pid" "$redis_pid"; do
        if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    done
    rm -rf "$work"
}
trap cleanup EXIT

"$redis_bin/redis-server" --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
    --dir "$work" > "$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 1 50); do
    [[ "$("$redis_bin/redis-cli" -p "$redis_port" ping 2>/dev/null)" == "PONG" ]] && break
    sleep 0.1
done
redis_url="redis://127.0.0.1:$redis_port"
echo "redis-server $("$redis_bin/redis-server" --version | cut -d' ' -f3) on 127.0.0.1:$redis_port"

echo "== redis-benchmark: pipelined SET (-P 64, 200-byte values, 2,000,000 requests, 32 clients)"
"$redis_bin/redis-benchmark" -h 127.0.0.1 -p "$redis_port" -t set -P 64 -d 200 -n 2000000 -c 32 -r 10000000 -q
"$redis_bin/redis-cli" -p "$redis_port" flushall >/dev/null

cd "$root"
cargo bench --quiet --profile "$profile" --bench online --no-run
echo "== aurum materialize: $gold_rows gold rows x 18 features, one row per entity, into Redis"
cargo bench --quiet --profile "$profile" --bench online -- materialize --redis "$redis_url" \
    --gold-rows "$gold_rows" --gold-entities "$gold_rows" --gold-features 18
echo "memory used by Redis: $("$redis_bin/redis-cli" -p "$redis_port" info memory | grep '^used_memory_human' | tr -d '\r')"
"$redis_bin/redis-cli" -p "$redis_port" flushall >/dev/null

repo="$work/repo"
parquet="$("$venv/bin/python" "$root/benches/feast/make_repo.py" "$repo" "$entities" "$features" "127.0.0.1:$redis_port")"
bodies="$repo/bodies_$features.jsonl"
echo "== 1 entity x $features features over Redis, $connections connections, $seconds s"
miss_out="$(cargo bench --quiet --profile "$profile" --bench online -- http --redis "$redis_url" --l1-mib 0 --parquet "$parquet" --body-file "$bodies" --seconds "$seconds" --connections "$connections")"
echo "aurum, L1 misses: $miss_out"
hit_out="$(cargo bench --quiet --profile "$profile" --bench online -- http --redis "$redis_url" --parquet "$parquet" --body-file "$bodies" --seconds "$seconds" --connections "$connections")"
echo "aurum, L1 hits: $hit_out"

cd "$repo"
"$venv/bin/feast" apply > "$work/apply.log" 2>&1
start=$(date +%s.%N)
"$venv/bin/feast" materialize "$(date -u -d '-2 hours' +%Y-%m-%dT%H:%M:%S)" "$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%S)" > "$work/materialize.log" 2>&1
echo "feast materialize of $entities entities x $features features into Redis: $(echo "$(date +%s.%N) - $start" | bc) s"
# Generous to Feast: no access log, no periodic worker restarts.
"$venv/bin/feast" serve -h 127.0.0.1 -p "$feast_port" -w 2 --no-access-log --max-requests 100000000 > "$work/serve.log" 2>&1 &
feast_pid=$!
for _ in $(seq 1 120); do
    if curl -fs -o /dev/null "http://127.0.0.1:$feast_port/health"; then break; fi
    sleep 1
done
curl -fs -o /dev/null "http://127.0.0.1:$feast_port/health" || { cat "$work/serve.log"; exit 1; }
echo "feast answers: $(curl -s -X POST -H "Content-Type: application/json" "http://127.0.0.1:$feast_port/get-online-features" -d "$(head -1 "$bodies")" | head -c 300)"
cd "$root"
feast_out="$(cargo bench --quiet --profile "$profile" --bench online -- load --url "http://127.0.0.1:$feast_port/get-online-features" --body-file "$bodies" --seconds "$seconds" --connections "$connections")"
echo "feast (redis online store, 2 workers): $feast_out"
rps() { grep -o '[0-9.]* requests/s' <<<"$1" | head -1 | cut -d' ' -f1; }
p99() { grep -o 'p99=[0-9.]*' <<<"$1" | head -1 | cut -d= -f2; }
for pair in "L1 misses:$miss_out" "L1 hits:$hit_out"; do
    name="${pair%%:*}"; out="${pair#*:}"
    echo "ratio ($name): throughput aurum/feast = $(echo "scale=1; $(rps "$out") / $(rps "$feast_out")" | bc)x," \
         "p99 feast/aurum = $(echo "scale=1; $(p99 "$feast_out") / $(p99 "$out")" | bc)x"
done
