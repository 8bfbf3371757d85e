#!/usr/bin/env bash
# Creates the git-ignored virtualenv .tools/feast-venv holding Feast from
# PyPI (the baseline `benches/feast/compare.sh` measures aurum against).
# Kept apart from the test venv: Feast pins its own pyarrow/pandas.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$root/.tools/feast-venv"
requirements="$root/benches/feast/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"

if [[ -x "$venv/bin/feast" && "$(cat "$stamp" 2>/dev/null)" == "$want" ]]; then
    echo "Feast is installed in $venv"
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
echo "$want" > "$stamp"
echo "Feast installed in $venv"
