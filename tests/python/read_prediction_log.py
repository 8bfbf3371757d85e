"""Reads aurum's prediction log (a Delta table) with Python's deltalake and
polars, and prints a JSON summary for the end-to-end test."""

import json
import os
import sys

import polars as pl
from deltalake import DeltaTable

table = DeltaTable(sys.argv[1])
df = pl.from_arrow(table.to_pyarrow_table())
groups = (
    df.group_by(["arm", "shadow", "version"])
    .len()
    .sort(["arm", "shadow", "version"])
    .to_dicts()
)
live = df.filter(~pl.col("shadow"))
print(
    json.dumps(
        {
            "rows": df.height,
            "columns": df.columns,
            "schema": {name: str(dtype) for name, dtype in df.schema.items()},
            "groups": groups,
            "live_request_ids": sorted(live["request_id"].to_list()),
            "shadow_request_ids": sorted(df.filter(pl.col("shadow"))["request_id"].to_list()),
            "entities": sorted(set(live["entity"].to_list())),
            "feature_widths": sorted(set(len(f) for f in df["features"].to_list())),
            "feature_names": df["feature_names"][0].split(","),
            "min_latency_us": int(df["latency_us"].min()),
            "predictions_in_range": bool(df["prediction"].is_between(0.0, 1.0).all()),
            "commits": table.version() + 1,
        }
    )
)
# deltalake's runtime threads can abort the interpreter's shutdown after
# the output is written; skip that shutdown.
sys.stdout.flush()
os._exit(0)
