#!/usr/bin/env bash
# Installs redis-server, redis-cli and redis-benchmark from Debian's packages
# into the project's git-ignored .tools/redis/ (unpacked, not installed
# system-wide, with the two libraries they link beside them), for the tests
# and benchmarks of the shared online tier (standalone and a 3-master
# cluster, started on loopback ports by the tests themselves).
# Run through `make redis` (part of `make test`).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.tools/redis"

if [[ -x "$dest/bin/redis-server" ]] && "$dest/bin/redis-server" --version >/dev/null 2>&1; then
    echo "Redis is installed in $dest ($("$dest/bin/redis-server" --version | cut -d' ' -f1-3))"
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "error: apt-get (Debian) is needed to fetch Redis's Debian packages" >&2
    exit 1
fi
echo "Fetching Redis from Debian's package archive..."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
packages=(redis-server redis-tools liblzf1 libjemalloc2)
# The package lists may be missing on a fresh machine: refresh them once.
if ! apt-get download "${packages[@]}" >/dev/null 2>&1; then
    apt-get update -qq
    apt-get download "${packages[@]}"
fi
rm -rf "$dest"
mkdir -p "$dest/bin"
for package in *.deb; do
    dpkg-deb -x "$package" "$dest/root"
done
# Wrappers: the binaries find their libraries in the unpacked tree.
for tool in redis-server redis-cli redis-benchmark; do
    cat > "$dest/bin/$tool" <<WRAPPER
#!/bin/sh
LD_LIBRARY_PATH="$dest/root/usr/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$dest/root/usr/bin/$tool" "\$@"
WRAPPER
    chmod +x "$dest/bin/$tool"
done
echo "Redis installed in $dest ($("$dest/bin/redis-server" --version | cut -d' ' -f1-3))"
