"""Reads the Delta tables an `aurum demo --dir DIR` run wrote, with the
official Python `deltalake` and `polars` packages, and prints what it found as
JSON for the Rust end-to-end test to check.

usage: read_demo_tables.py DIR CUSTOMER_ID[,CUSTOMER_ID...]
"""

import json
import os
import sys
from pathlib import Path

import polars as pl
from deltalake import DeltaTable

KEYS = {"customer_id", "event_timestamp", "created_timestamp"}


def quarantine_rows(root: str) -> int:
    path = Path(root) / "data/delta/quarantine"
    if not (path / "_delta_log").is_dir():
        return 0
    return pl.read_delta(str(path)).filter(pl.col("source") == "transactions").height


def main() -> None:
    root, customers = sys.argv[1], [int(c) for c in sys.argv[2].split(",")]
    silver_path = f"{root}/data/delta/silver_transactions"
    gold_path = f"{root}/data/delta/customer_features"
    silver, gold = DeltaTable(silver_path), DeltaTable(gold_path)
    commit = gold.history(1)[0]
    lineage = commit.get("aurum")
    if isinstance(lineage, str):
        lineage = json.loads(lineage)

    frame = pl.read_delta(gold_path)
    latest = (
        frame.sort(["customer_id", "event_timestamp", "created_timestamp"])
        .group_by("customer_id", maintain_order=True)
        .last()
        .filter(pl.col("customer_id").is_in(customers))
    )
    names = [c for c in frame.columns if c not in KEYS]
    features = {
        str(row["customer_id"]): {f: row[f] for f in names}
        for row in latest.iter_rows(named=True)
    }
    print(
        json.dumps(
            {
                "silver_version": silver.version(),
                "gold_version": gold.version(),
                "silver_rows": pl.read_delta(silver_path).height,
                "quarantine_rows": quarantine_rows(root),
                "gold_rows": frame.height,
                "gold_schema": {name: str(dtype) for name, dtype in frame.schema.items()},
                "gold_lineage": lineage,
                "features": features,
            }
        )
    )


if __name__ == "__main__":
    main()
    # deltalake's and pyarrow's native thread pools sometimes abort the
    # interpreter's shutdown ("terminate called without an active
    # exception") after all output is written; skip that shutdown.
    sys.stdout.flush()
    os._exit(0)
