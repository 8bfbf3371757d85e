#!/usr/bin/env bash
# Creates a git-ignored virtualenv from a pinned requirements file, and
# recreates it only when that file changes.
#
# usage: scripts/setup-python.sh [VENV_DIR REQUIREMENTS]
# Default: .tools/venv with scripts/requirements-test.txt, the Python
# clients the tests use to check aurum from the outside (deltalake, polars,
# pyarrow); run through `make python`. benches/feast/setup.sh uses it for
# Feast.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$root/.tools/venv}"
requirements="${2:-$root/scripts/requirements-test.txt}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"

if [[ -x "$venv/bin/python" && "$(cat "$stamp" 2>/dev/null)" == "$want" ]]; then
    echo "Python packages of $(basename "$requirements") are installed in $venv"
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
echo "$want" > "$stamp"
echo "Python packages of $(basename "$requirements") installed in $venv"
