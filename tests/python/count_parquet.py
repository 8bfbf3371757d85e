"""Prints the row count and the min and max of `id` of a Parquet file."""

import sys

import pyarrow.compute as pc
import pyarrow.parquet as pq

table = pq.read_table(sys.argv[1])
bounds = pc.min_max(table["id"])
print(table.num_rows, bounds["min"].as_py(), bounds["max"].as_py())
