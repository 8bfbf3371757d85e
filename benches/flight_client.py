"""The pyarrow client of benches/retrieval.rs: DoGet of a whole gold table
and DoExchange of a spine into a pandas training set, timed.

usage: flight_client.py GRPC_URL VIEW SPINE_PARQUET FEATURE[,FEATURE...]
"""
import json
import os
import sys
import time

import pyarrow.flight as flight
import pyarrow.parquet as pq

url, view, spine_path, features = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
client = flight.FlightClient(url)

started = time.perf_counter()
reader = client.do_get(flight.Ticket(json.dumps({"command": "feature_view", "name": view}).encode()))
rows = nbytes = 0
for chunk in reader:
    rows += chunk.data.num_rows
    nbytes += chunk.data.nbytes
took = time.perf_counter() - started
print(f"DoGet {view}: {rows} rows, {nbytes / 1e9:.2f} GB of Arrow in {took:.2f} s = {nbytes / 1e9 / took:.2f} GB/s "
      f"({len(reader.schema)} columns)")

spine = pq.read_table(spine_path)
started = time.perf_counter()
command = {"command": "training_set", "features": features}
writer, reader = client.do_exchange(flight.FlightDescriptor.for_command(json.dumps(command)))
writer.begin(spine.schema)
writer.write_table(spine)
writer.done_writing()
table = reader.read_all()
writer.close()
frame = table.to_pandas()
took = time.perf_counter() - started
print(f"DoExchange training set: spine {spine.num_rows} rows -> pandas {frame.shape[0]} x {frame.shape[1]} "
      f"in {took:.2f} s end to end")
sys.stdout.flush()
os._exit(0)
