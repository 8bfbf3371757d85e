"""Reads every Delta table under a project's data/delta with the official
Python `deltalake` and `polars` packages and prints, per table, its version,
row count, schema and the lineage of its latest commit, as JSON.

usage: read_pipeline_tables.py PROJECT_DIR
"""

import json
import os
import sys
from pathlib import Path

import polars as pl
from deltalake import DeltaTable


def main() -> None:
    root = Path(sys.argv[1]) / "data" / "delta"
    tables = {}
    for path in sorted(p for p in root.iterdir() if (p / "_delta_log").is_dir()):
        table = DeltaTable(str(path))
        frame = pl.read_delta(str(path))
        lineage = table.history(1)[0].get("aurum")
        if isinstance(lineage, str):
            lineage = json.loads(lineage)
        tables[path.name] = {
            "version": table.version(),
            "rows": frame.height,
            "arrow_rows": table.to_pyarrow_table().num_rows,
            "schema": {name: str(dtype) for name, dtype in frame.schema.items()},
            "lineage": lineage,
        }
    print(json.dumps(tables))


if __name__ == "__main__":
    main()
    # deltalake's and pyarrow's native thread pools sometimes abort the
    # interpreter's shutdown ("terminate called without an active
    # exception") after all output is written; skip that shutdown.
    sys.stdout.flush()
    os._exit(0)
