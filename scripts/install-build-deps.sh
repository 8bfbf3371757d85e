#!/usr/bin/env bash
# The C headers the build needs beyond a Rust toolchain and gcc: OpenSSL's
# (librdkafka, which aurum's Kafka consumer is built on, links the system
# OpenSSL for TLS to Kafka and Event Hubs) and pkg-config to find them.
# Installs them from Debian's packages when they are missing.
# Run through `make build-deps` (part of `make demo` and `make test`).
set -euo pipefail

if command -v pkg-config >/dev/null && pkg-config --exists openssl; then
    echo "OpenSSL headers and pkg-config are installed"
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "error: the build needs OpenSSL's headers and pkg-config (Debian: libssl-dev pkg-config)" >&2
    exit 1
fi
sudo=""
if [[ "$(id -u)" != 0 ]]; then
    sudo="sudo"
fi
echo "Installing libssl-dev and pkg-config from Debian's packages..."
$sudo apt-get install -y -qq libssl-dev pkg-config >/dev/null 2>&1 || {
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq libssl-dev pkg-config
}
echo "OpenSSL headers and pkg-config installed"
