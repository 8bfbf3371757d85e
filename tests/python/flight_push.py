"""Pushes rows into a feature view over Arrow Flight DoPut with plain
pyarrow.flight, the way a streaming job would, and prints what happened.

Usage: flight_push.py GRPC_URL VIEW FEATURE[,FEATURE...] ENTITY_ID
Prints JSON: the server's outcome of a good push (to online and offline),
and the error a batch with a null join key gets.
"""
import datetime
import json
import os
import sys

import pyarrow as pa
import pyarrow.flight as flight

url, view, features, entity = sys.argv[1], sys.argv[2], sys.argv[3].split(","), int(sys.argv[4])
client = flight.FlightClient(url)
now = datetime.datetime.now(datetime.timezone.utc)


def table(keys):
    columns = {
        "customer_id": pa.array(keys, pa.int64()),
        "event_timestamp": pa.array([now] * len(keys), pa.timestamp("us", tz="UTC")),
    }
    for i, name in enumerate(features):
        columns[name] = pa.array([2.5 + i] * len(keys), pa.float64())
    return pa.table(columns)


def push(data, to):
    command = {"command": "push", "feature_view": view, "to": to}
    descriptor = flight.FlightDescriptor.for_command(json.dumps(command))
    writer, reader = client.do_put(descriptor, data.schema)
    writer.write_table(data)
    writer.done_writing()
    answer = reader.read()
    writer.close()
    return json.loads(answer.to_pybytes())


def push_many(data):
    """One batch per row, every result read only after the last write: the
    server must keep reading while results wait."""
    command = {"command": "push", "feature_view": view, "to": "online"}
    descriptor = flight.FlightDescriptor.for_command(json.dumps(command))
    writer, reader = client.do_put(descriptor, data.schema)
    writer.write_table(data, max_chunksize=1)
    writer.done_writing()
    results = 0
    while reader.read() is not None:
        results += 1
    writer.close()
    return results


outcome = push(table([entity, entity + 1]), "online_and_offline")
many = push_many(table(list(range(entity + 10, entity + 2010))))
try:
    push(table([entity + 2, None]), "online")
    error = None
except (flight.FlightError, pa.ArrowException) as e:
    error = str(e)


def keyed_push(data, key, rows_per_batch=1):
    """A push with an idempotency key, in batches of `rows_per_batch`; every
    result."""
    command = {"command": "push", "feature_view": view, "to": "online_and_offline",
               "idempotency_key": key}
    descriptor = flight.FlightDescriptor.for_command(json.dumps(command))
    writer, reader = client.do_put(descriptor, data.schema)
    writer.write_table(data, max_chunksize=rows_per_batch)
    writer.done_writing()
    results = []
    while (answer := reader.read()) is not None:
        results.append(json.loads(answer.to_pybytes()))
    writer.close()
    return results


# A retried keyed push applies nothing again; a retry that sends more
# batches applies only the new ones; one that sends other batches is
# refused.
keyed = {
    "first": keyed_push(table([entity + 20, entity + 21]), "load-1"),
    "again": keyed_push(table([entity + 20, entity + 21]), "load-1"),
    "extended": keyed_push(table([entity + 20, entity + 21, entity + 22]), "load-1"),
}
try:
    keyed_push(table([entity + 20, entity + 21]), "load-1", rows_per_batch=2)
    keyed["mismatch"] = None
except (flight.FlightError, pa.ArrowException) as e:
    keyed["mismatch"] = str(e)
print(json.dumps({"outcome": outcome, "error": error, "many": many, "keyed": keyed}))
sys.stdout.flush()
# pyarrow's native threads may abort an orderly interpreter exit.
os._exit(0)
