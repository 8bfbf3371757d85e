#!/usr/bin/env bash
# Installs Prometheus and promtool from Debian's package into the project's
# git-ignored .tools/prometheus/ (unpacked, not installed system-wide), for
# the tests that check the alert rules (promtool) and evaluate every
# dashboard panel and alert against a Prometheus scraping a running aurum.
# Run through `make prometheus` (part of `make test`).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.tools/prometheus"

if [[ -x "$dest/usr/bin/prometheus" && -x "$dest/usr/bin/promtool" ]]; then
    echo "Prometheus is installed in $dest ($("$dest/usr/bin/prometheus" --version 2>&1 | head -1))"
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "error: apt-get (Debian) is needed to fetch Prometheus's Debian package" >&2
    exit 1
fi
echo "Fetching Prometheus from Debian's package archive..."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
# The package lists may be missing on a fresh machine: refresh them once.
if ! apt-get download prometheus >/dev/null 2>&1; then
    apt-get update -qq
    apt-get download prometheus
fi
rm -rf "$dest"
mkdir -p "$dest"
dpkg-deb -x prometheus_*.deb "$dest"
echo "Prometheus installed in $dest ($("$dest/usr/bin/prometheus" --version 2>&1 | head -1))"
