#!/usr/bin/env bash
# Installs the Kafka-protocol broker the stream tests and benchmarks run:
# tansu (Apache-2.0, a Kafka-compatible broker written in Rust), built from
# crates.io into the project's git-ignored .tools/tansu/ with the memory and
# S3 storage engines only (`dynostore`). There is no Kafka or Redpanda
# package in the registries this project reaches (crates.io, PyPI, Debian,
# npm); tansu answers librdkafka's consumer groups, offset commits and
# metadata, which is what aurum's consumer and confluent-kafka use.
#
# TANSU_OPT_LEVEL (default 1) is the optimisation level of the build. The
# tests need a broker, not a fast one, and opt-level 1 builds in about half
# the time of cargo install's default 3; `make bench` asks for 3, the level
# every figure of BENCHMARKS.md's stream sections was measured with. A build
# at a level at least as high as the one asked for is kept.
# Run through `make kafka` (part of `make test`).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.tools/tansu"
version="0.6.0"
want="${TANSU_OPT_LEVEL:-1}"
case "$want" in
    0|1|2|3) ;;
    *) echo "error: TANSU_OPT_LEVEL must be 0, 1, 2 or 3, not '$want'" >&2; exit 2 ;;
esac

# .version holds "VERSION" (builds before opt levels were recorded were
# cargo install's release default, level 3) or "VERSION opt-level N".
read -r have_version have_level < <(sed 's/opt-level //' "$dest/.version" 2>/dev/null || true) || true
if [[ -x "$dest/bin/tansu" && "${have_version:-}" == "$version" && "${have_level:-3}" -ge "$want" ]]; then
    echo "tansu $version (opt-level ${have_level:-3}) is installed in $dest"
    exit 0
fi
echo "Building the tansu $version Kafka broker from crates.io at opt-level $want (once; 5-10 minutes on 2 cores at level 1, twice that at 3)..."
# Its own target directory (git-ignored), kept so a rebuild is quick.
CARGO_PROFILE_RELEASE_OPT_LEVEL="$want" CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_TARGET_DIR="$root/target/tansu" cargo install "tansu@$version" --locked \
    --no-default-features --features dynostore --root "$dest" --force
echo "$version opt-level $want" > "$dest/.version"
echo "tansu $version (opt-level $want) installed in $dest"
