#!/usr/bin/env bash
# Creates the git-ignored virtualenv .tools/feast-venv holding Feast from
# PyPI (the baseline benches/feast/compare.sh measures aurum against). Kept
# apart from the test venv: Feast pins its own pyarrow and pandas.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
"$root/scripts/setup-python.sh" "$root/.tools/feast-venv" "$root/benches/feast/requirements.txt"
