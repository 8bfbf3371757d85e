#!/usr/bin/env bash
# Side by side on the same rows: Feast's get_historical_features(...).to_df()
# (local provider, file offline store) and aurum's point-in-time training
# set, then a value check on the spine rows both return and a count of the
# rows Feast leaves out (Feast drops spine rows with no feature row inside
# the TTL; aurum keeps every spine row, with nulls).
#
# usage: benches/feast/compare_historical.sh [FEATURE_ROWS] [SPINE_ROWS] [ENTITIES] [FEATURES] [TTL_SECONDS]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
feature_rows="${1:-1000000}"
spine_rows="${2:-100000}"
entities="${3:-100000}"
features="${4:-20}"
ttl="${5:-86400}"

"$root/benches/feast/setup.sh"
venv="$root/.tools/feast-venv"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

PATH="$venv/bin:$PATH" "$venv/bin/python" "$root/benches/feast/historical.py" \
    "$work" "$feature_rows" "$spine_rows" "$entities" "$features" "$ttl" | tee "$work/feast.txt"
cd "$root"
cargo bench --quiet --bench retrieval --no-run
TTL_SECONDS="$ttl" cargo bench --quiet --bench retrieval -- parquet \
    --features-file "$work/features.parquet" --spine-file "$work/spine.parquet" \
    --out "$work/aurum.parquet" | tee "$work/aurum.txt"

"$venv/bin/python" - "$work" <<'PY'
import re, sys
import numpy as np
import pandas as pd
work = sys.argv[1]
feast = pd.read_parquet(f"{work}/feast.parquet").set_index("spine_row").sort_index()
aurum = pd.read_parquet(f"{work}/aurum.parquet").set_index("spine_row").sort_index()
columns = [c for c in aurum.columns if re.fullmatch(r"f\d+", c)]
common = feast.index.intersection(aurum.index)
a, f = aurum.loc[common, columns].to_numpy(), feast.loc[common, columns].to_numpy(dtype=float)
same = np.isclose(a, f, rtol=0, atol=1e-12, equal_nan=True)
lost = len(aurum) - len(feast)
lost_with_values = int(aurum.drop(index=common)[columns[0]].notna().sum())
print(f"values: {int(same.sum())} of {same.size} equal on the {len(common)} spine rows both return; "
      f"Feast returns {len(feast)} of {len(aurum)} spine rows ({lost} lost, {lost_with_values} of those had a value in aurum)")
t_feast = float(re.search(r"in ([0-9.]+) s", open(f"{work}/feast.txt").read()).group(1))
t_aurum = float(re.search(r"in ([0-9.]+) s", open(f"{work}/aurum.txt").read()).group(1))
print(f"ratio: aurum is {t_feast / t_aurum:.1f}x faster ({t_feast:.2f} s vs {t_aurum:.3f} s)")
PY
