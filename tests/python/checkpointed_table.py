"""Writes a Delta table with a (v1, classic) checkpoint in the middle of its
log, with Python's deltalake: three appends, a checkpoint at version 2,
the commits before it removed (as log clean-up does, so a reader can only
know their files from the checkpoint), one more append. Prints
{"version": 3, "ids": [...]}: what a reader must see.

  checkpointed_table.py TABLE"""

import glob
import json
import os
import sys

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake


def main() -> None:
    path = sys.argv[1]
    for start in (0, 10, 20):
        write_deltalake(path, pa.table({"id": list(range(start, start + 10))}), mode="append")
    DeltaTable(path).create_checkpoint()
    for version in range(2):
        os.remove(os.path.join(path, "_delta_log", f"{version:020}.json"))
    if not glob.glob(os.path.join(path, "_delta_log", "*.checkpoint.parquet")):
        sys.exit("no checkpoint was written")
    write_deltalake(path, pa.table({"id": [100, 101]}), mode="append")
    table = DeltaTable(path)
    ids = sorted(table.to_pyarrow_table()["id"].to_pylist())
    print(json.dumps({"version": table.version(), "ids": ids}))


if __name__ == "__main__":
    main()
    # deltalake's runtime threads can abort the interpreter's shutdown
    # after the answer is printed; end without that shutdown.
    sys.stdout.flush()
    os._exit(0)
