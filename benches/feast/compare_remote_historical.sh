#!/usr/bin/env bash
# Feast's SDK, unchanged, pulling the same point-in-time training set from
# two remote offline stores: `aurum serve`'s Flight service (through the
# repository `aurum feast-repo` writes) and Feast's own `feast
# serve_offline` (file offline store over a Parquet copy of the same gold
# rows). Issue 23's target: aurum ≥ 10× faster.
#
# usage: [AURUM_BENCH_PROFILE=release] [WINDOWS_AT=event|request] benches/feast/compare_remote_historical.sh [BRONZE_ROWS] [SPINE_ROWS] [ROUNDS]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bronze_rows="${1:-1000000}"
spine_rows="${2:-100000}"
rounds="${3:-3}"

"$root/benches/feast/setup.sh"
venv="$root/.tools/feast-venv"
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

cd "$root"
# AURUM_BENCH_PROFILE=release measures the build a deployment runs; the
# default dev profile (aurum's crates at opt-level 0) is what the tests use.
profile="${AURUM_BENCH_PROFILE:-dev}"
echo "building aurum ($profile profile) ..."
cargo build --quiet --profile "$profile"
case "$profile" in dev) aurum="$root/target/debug/aurum" ;; *) aurum="$root/target/$profile/aurum" ;; esac

echo "an aurum project with $bronze_rows generated transactions ..."
"$aurum" init "$work/project" >/dev/null
# Feast's file offline store joins the gold rows as of each entity row's
# time: windows as of the entity's last event. `aurum init` values windows
# at the read (the window ending at each entity row's time, computed from
# the source's events), a different answer and more work. The comparison
# runs both on the same definition, `windows_at = "event"`, unless
# WINDOWS_AT=request asks for aurum's default (values then differ from
# Feast's wherever a window moved since the entity's last event).
windows_at="${WINDOWS_AT:-event}"
sed -i "s/^windows_at = \"request\"/windows_at = \"$windows_at\"/" "$work/project/aurum.toml"
grep -q "^windows_at = \"$windows_at\"" "$work/project/aurum.toml" ||
    { echo "the example project declares no windows_at to set" >&2; exit 1; }
echo "the view's windows_at: $windows_at"
(cd "$work/project" && "$aurum" generate --rows "$bronze_rows" --seed 7 >/dev/null && "$aurum" pipeline >/dev/null)
gold="$work/project/data/delta/customer_features"
"$aurum" table show "$gold" --out "$work/gold.parquet"

echo "aurum serve ..."
(cd "$work/project" && exec "$aurum" serve --addr 127.0.0.1:0 --flight-addr 127.0.0.1:0 \
    --grpc-addr 127.0.0.1:0 --no-prediction-log >"$work/serve.log" 2>&1) &
pids+=($!)
for _ in $(seq 1 600); do grep -q '^ready$' "$work/serve.log" 2>/dev/null && break; sleep 0.2; done
grep -q '^ready$' "$work/serve.log" || { cat "$work/serve.log"; exit 1; }
http="$(sed -n 's/^listening on //p' "$work/serve.log")"
flight="$(sed -n 's|^flight on grpc://||p' "$work/serve.log")"
(cd "$work/project" && "$aurum" feast-repo "$work/aurum-repo" --url "$http" --flight "$flight" >/dev/null)
(cd "$work/aurum-repo" && "$venv/bin/feast" apply >/dev/null)

echo "feast serve_offline over the same rows ..."
port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
for side in server client; do
    mkdir -p "$work/feast-$side"
    sed -e "s|path=\"$gold\"|path=\"$work/gold.parquet\"|" \
        -e 's|file_format=DeltaFormat()|file_format=ParquetFormat()|' \
        -e 's|from feast.data_format import DeltaFormat|from feast.data_format import ParquetFormat|' \
        "$work/aurum-repo/features.py" >"$work/feast-$side/features.py"
done
cat >"$work/feast-server/feature_store.yaml" <<YAML
project: fraud
registry: registry.db
provider: local
online_store: {type: sqlite, path: online.db}
offline_store: {type: file}
entity_key_serialization_version: 3
YAML
(cd "$work/feast-server" && "$venv/bin/feast" apply >/dev/null)
(cd "$work/feast-server" && exec "$venv/bin/feast" serve_offline --host 127.0.0.1 --port "$port" \
    >"$work/feast-server.log" 2>&1) &
pids+=($!)
for _ in $(seq 1 300); do
    "$venv/bin/python" -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
    sleep 0.2
done
cat >"$work/feast-client/feature_store.yaml" <<YAML
project: fraud
registry: registry.db
provider: local
online_store: {type: sqlite, path: online.db}
offline_store: {type: remote, host: 127.0.0.1, port: $port}
entity_key_serialization_version: 3
YAML
(cd "$work/feast-client" && "$venv/bin/feast" apply >/dev/null)

echo "get_historical_features, $spine_rows entity rows, through each ..."
"$venv/bin/python" "$root/benches/feast/remote_historical.py" \
    "$work/aurum-repo" "$work/feast-client" "$work/gold.parquet" "$spine_rows" "$rounds"
