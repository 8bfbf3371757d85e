"""Arrow Flight's bounds, with plain pyarrow.flight against a server started
with `--flight-max-upload-mib 1`: a spine over the limit is refused with
RESOURCE_EXHAUSTED naming the limit, and a spine under it is answered.
Prints what happened as JSON.

Usage: flight_limits.py GRPC_URL
"""
import datetime
import json
import os
import sys

import pyarrow as pa
import pyarrow.flight as flight

client = flight.FlightClient(sys.argv[1])
now = datetime.datetime.now(datetime.timezone.utc)


def exchange(rows):
    spine = pa.table({
        "customer_id": pa.array(range(rows), pa.int64()),
        "at": pa.array([now] * rows, pa.timestamp("us", tz="UTC")),
    })
    command = {"command": "training_set", "features": ["customer_features:amount_sum_1d"],
               "timestamp_column": "at"}
    writer, reader = client.do_exchange(flight.FlightDescriptor.for_command(json.dumps(command)))
    writer.begin(spine.schema)
    writer.write_table(spine, max_chunksize=8192)
    writer.done_writing()
    result = reader.read_all()
    writer.close()
    return result.num_rows


def outcome(call):
    try:
        return call()
    except (flight.FlightError, pa.ArrowException) as e:
        return "error " + type(e).__name__ + ": " + str(e).split(". gRPC client debug context")[0]


out = {
    # 8 + 8 bytes a row: 200k rows are ~3 MiB.
    "large_spine": outcome(lambda: exchange(200_000)),
    "small_spine": outcome(lambda: exchange(1_000)),
}


print(json.dumps(out))
sys.stdout.flush()
os._exit(0)
