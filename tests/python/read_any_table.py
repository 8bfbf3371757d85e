"""Prints a Delta table as Python's deltalake reads it, as
{"version": N, "rows": [...]}. Used to check `aurum table show` from
outside."""

import json
import sys

from deltalake import DeltaTable


def main() -> None:
    path = sys.argv[1]
    table = DeltaTable(path)
    rows = table.to_pyarrow_table().to_pylist()
    print(json.dumps({"version": table.version(), "rows": rows}, default=str))


if __name__ == "__main__":
    main()
