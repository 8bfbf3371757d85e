#!/usr/bin/env bash
# Installs the Kafka-protocol broker the stream tests and benchmarks run:
# tansu (Apache-2.0, a Kafka-compatible broker written in Rust), built from
# crates.io into the project's git-ignored .tools/tansu/ with the memory and
# S3 storage engines only (`dynostore`). There is no Kafka or Redpanda
# package in the registries this project reaches (crates.io, PyPI, Debian,
# npm); tansu answers librdkafka's consumer groups, offset commits and
# metadata, which is what aurum's consumer and confluent-kafka use.
# Run through `make kafka` (part of `make test`).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.tools/tansu"
version="0.6.0"

if [[ -x "$dest/bin/tansu" && "$(cat "$dest/.version" 2>/dev/null)" == "$version" ]]; then
    echo "tansu $version is installed in $dest"
    exit 0
fi
echo "Building the tansu $version Kafka broker from crates.io (about 25 minutes on 2 cores, once)..."
# Its own target directory (git-ignored), kept so a rebuild is quick.
CARGO_TARGET_DIR="$root/target/tansu" cargo install "tansu@$version" --locked \
    --no-default-features --features dynostore --root "$dest"
echo "$version" > "$dest/.version"
echo "tansu $version installed in $dest"
