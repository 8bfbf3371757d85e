#!/usr/bin/env bash
# Installs Azurite, the Azure Storage emulator, from the npm registry into
# the project's git-ignored .tools/azurite/, for the tests that run the demo
# path against Azure Blob storage. Run through `make azurite` (part of
# `make test`).
set -euo pipefail

AZURITE_VERSION="${AZURITE_VERSION:-3.37.0}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.tools/azurite"

if [[ -x "$dest/node_modules/.bin/azurite-blob" && "$(cat "$dest/VERSION" 2>/dev/null)" == "$AZURITE_VERSION" ]]; then
    echo "Azurite $AZURITE_VERSION is installed in $dest"
    exit 0
fi
if ! command -v npm >/dev/null; then
    echo "error: npm (Node.js) is needed to install Azurite from the npm registry" >&2
    exit 1
fi
echo "Installing Azurite $AZURITE_VERSION from the npm registry..."
rm -rf "$dest"
mkdir -p "$dest"
npm install --prefix "$dest" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION"
echo "$AZURITE_VERSION" > "$dest/VERSION"
echo "Azurite $AZURITE_VERSION installed in $dest"
