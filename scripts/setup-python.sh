#!/usr/bin/env bash
# Creates the git-ignored virtualenv .tools/venv with the Python clients the
# tests use to check aurum from the outside (deltalake, polars, pyarrow).
# Packages come from PyPI, pinned in scripts/requirements-test.txt.
# Run through `make python`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.tools/venv"
requirements="$root/scripts/requirements-test.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"

if [[ -x "$venv/bin/python" && "$(cat "$stamp" 2>/dev/null)" == "$want" ]]; then
    echo "Python test tools are installed in $venv"
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
echo "$want" > "$stamp"
echo "Python test tools installed in $venv"
