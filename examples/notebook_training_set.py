"""Pull a point-in-time training set from aurum into pandas and polars with
plain pyarrow.flight: no aurum SDK.

Start the server first (`aurum serve`, Arrow Flight on 127.0.0.1:8815), then
run this file or paste it into a notebook cell:

    python examples/notebook_training_set.py [grpc://127.0.0.1:8815]
"""
import datetime
import json
import os
import sys

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.flight as flight

url = sys.argv[1] if len(sys.argv) > 1 else "grpc://127.0.0.1:8815"
client = flight.FlightClient(url)

# What the server offers: feature views and feature services, with schemas.
for info in client.list_flights():
    print(info.descriptor.command.decode(), "->", info.schema.names)

# A spine: the entities and times to get features for, plus labels. Any
# extra columns come back as they are, in the same row order.
now = datetime.datetime.now(datetime.timezone.utc)
spine = pd.DataFrame(
    {
        "customer_id": [1, 2, 3, 999999],
        "event_timestamp": [now, now, now - datetime.timedelta(days=1), now],
        "is_fraud": [0, 1, 0, 0],
    }
)

# The training set: stream the spine up, the point-in-time join streams back.
command = {"command": "training_set", "feature_service": "fraud_detection"}
descriptor = flight.FlightDescriptor.for_command(json.dumps(command))
writer, reader = client.do_exchange(descriptor)
spine_table = pa.Table.from_pandas(spine, preserve_index=False)
writer.begin(spine_table.schema)
writer.write_table(spine_table)
writer.done_writing()
table = reader.read_all()
writer.close()

train_pandas = table.to_pandas()
train_polars = pl.from_arrow(table)
# The gold table versions used: pin them (as_of_versions) to reproduce.
versions = json.loads(table.schema.metadata[b"aurum.versions"])
print(train_pandas)
print(train_polars)
print("versions:", versions)

# A summary on the last line, for the test that runs this example.
print(json.dumps({
    "rows": len(train_pandas),
    "columns": list(train_pandas.columns),
    "versions": versions,
    "polars_height": train_polars.height,
    "labels": train_pandas["is_fraud"].tolist(),
    "features": {
        str(row["customer_id"]): {
            c: (None if pd.isna(row[c]) else float(row[c]))
            for c in train_pandas.columns[3:]
        }
        for _, row in train_pandas.iterrows()
    },
}))
sys.stdout.flush()
# pyarrow's native threads may abort an orderly interpreter exit.
os._exit(0)
