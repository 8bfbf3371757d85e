#!/usr/bin/env bash
# Installs Prometheus, promtool and the Pushgateway from Debian's packages
# into the project's git-ignored .tools/prometheus/ (unpacked, not installed
# system-wide), for the tests that check the alert rules (promtool),
# evaluate every dashboard panel and alert against a Prometheus scraping a
# running aurum, and push batch runs' metrics to a Pushgateway.
# Run through `make prometheus` (part of `make test`).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.tools/prometheus"

if [[ -x "$dest/usr/bin/prometheus" && -x "$dest/usr/bin/promtool" && -x "$dest/usr/bin/prometheus-pushgateway" ]]; then
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
if ! apt-get download prometheus prometheus-pushgateway >/dev/null 2>&1; then
    apt-get update -qq
    apt-get download prometheus prometheus-pushgateway
fi
rm -rf "$dest"
mkdir -p "$dest"
for package in prometheus_*.deb prometheus-pushgateway_*.deb; do
    dpkg-deb -x "$package" "$dest"
done
echo "Prometheus installed in $dest ($("$dest/usr/bin/prometheus" --version 2>&1 | head -1))"
