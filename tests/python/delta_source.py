"""Writes and changes a Delta table with Python's deltalake (delta-rs), as
another team's job would, for aurum to read as a `format = "delta"`
source. Typed columns: an instant (`timestamp`), a wall-clock time
(`timestamp_ntz`), a decimal, integers and text.

  delta_source.py write TABLE CSV_DIR PART PARTS   append part PART (0-based)
                                                   of PARTS of the example
                                                   transactions
  delta_source.py delete TABLE PREDICATE           delete rows

Prints {"version": V, "rows": N} (N: rows written, or rows now in the
table after a delete)."""

import glob
import json
import os
import sys
from datetime import datetime, timezone
from decimal import Decimal

import pyarrow as pa
import pyarrow.csv as csv
from deltalake import DeltaTable, write_deltalake

TYPES = {
    "transaction_id": pa.string(),
    "customer_id": pa.int64(),
    "merchant_id": pa.int64(),
    "amount": pa.decimal128(12, 2),
    "category": pa.string(),
    "event_time": pa.timestamp("us", tz="UTC"),
    "is_fraud": pa.int64(),
    "ingested_at": pa.timestamp("us"),
}


def typed_rows(csv_dir: str) -> pa.Table:
    """The example transactions whose every value fits its type (a typed
    table cannot hold the generator's deliberately malformed text)."""
    rows = []
    for path in sorted(glob.glob(f"{csv_dir}/*.csv")):
        text = csv.read_csv(
            path,
            convert_options=csv.ConvertOptions(
                column_types={name: pa.string() for name in TYPES}
            ),
        )
        for record in text.to_pylist():
            try:
                rows.append({name: convert(record[name], ty) for name, ty in TYPES.items()})
            except (TypeError, ValueError, ArithmeticError):
                continue
    return pa.Table.from_pylist(rows, schema=pa.schema(list(TYPES.items())))


def convert(text, ty: pa.DataType):
    if text is None or text == "":
        if ty == pa.string():
            return None
        raise ValueError("missing")
    if ty == pa.string():
        return text
    if pa.types.is_timestamp(ty):
        instant = datetime.fromisoformat(text)
        if instant.tzinfo is None:
            raise ValueError(text)
        instant = instant.astimezone(timezone.utc)
        return instant if ty.tz is not None else instant.replace(tzinfo=None)
    if pa.types.is_decimal(ty):
        value = Decimal(text)
        if not value.is_finite() or abs(value) >= Decimal(10) ** (ty.precision - ty.scale):
            raise ValueError(text)
        return value.quantize(Decimal(1).scaleb(-ty.scale))
    return int(text)


def main() -> None:
    command, table = sys.argv[1], sys.argv[2]
    if command == "write":
        csv_dir, part, parts = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        rows = typed_rows(csv_dir)
        size = -(-rows.num_rows // parts)
        chunk = rows.slice(part * size, size)
        write_deltalake(table, chunk, mode="append")
        print(json.dumps({"version": DeltaTable(table).version(), "rows": chunk.num_rows}))
    elif command == "delete":
        dt = DeltaTable(table)
        dt.delete(sys.argv[3])
        dt = DeltaTable(table)
        print(json.dumps({"version": dt.version(), "rows": dt.to_pyarrow_table().num_rows}))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
    # deltalake's runtime threads (DataFusion's, after a delete) can abort
    # the interpreter's shutdown after the answer is printed ("terminate
    # called without an active exception"); end without that shutdown.
    sys.stdout.flush()
    os._exit(0)
