"""Asks aurum's Flight service what a notebook would, with plain
pyarrow.flight, and prints the answers as JSON.

Usage: flight_queries.py GRPC_URL GOLD_TABLE_PATH
"""
import datetime
import json
import os
import sys

import pyarrow as pa
import pyarrow.flight as flight
from deltalake import DeltaTable

url, gold_path = sys.argv[1], sys.argv[2]
client = flight.FlightClient(url)


def command(doc):
    return flight.FlightDescriptor.for_command(json.dumps(doc))


def ticket(doc):
    return flight.Ticket(json.dumps(doc).encode())


def error_of(call):
    try:
        call()
        return None
    except (flight.FlightError, pa.ArrowException) as e:
        return type(e).__name__ + ": " + str(e).split(". gRPC client debug context")[0]


out = {}
view = {"command": "feature_view", "name": "customer_features"}
info = client.get_flight_info(command(view))
table = client.do_get(info.endpoints[0].ticket).read_all()
gold = DeltaTable(gold_path)
out["view_rows"] = table.num_rows
out["delta_rows"] = gold.to_pyarrow_table().num_rows
out["info_schema_matches"] = info.schema.names == table.schema.names
pinned = client.do_get(ticket({**view, "version": 0})).read_all()
out["version0_rows"] = pinned.num_rows
out["delta_version0_rows"] = DeltaTable(gold_path, version=0).to_pyarrow_table().num_rows
now = datetime.datetime.now(datetime.timezone.utc)
recent = client.do_get(ticket({**view, "start": (now - datetime.timedelta(hours=1)).isoformat()})).read_all()
out["recent_rows"] = recent.num_rows

online = client.do_get(ticket({
    "command": "online_features",
    "feature_service": "fraud_detection",
    "entities": {"customer_id": [1, 2, 999999]},
})).read_all()
out["online_columns"] = online.schema.names
out["online"] = online.to_pylist()

spine = pa.table({"customer_id": [1, 2], "at": pa.array([now, now], pa.timestamp("us", tz="UTC"))})


def exchange(doc, data):
    writer, reader = client.do_exchange(command(doc))
    writer.begin(data.schema)
    writer.write_table(data)
    writer.done_writing()
    result = reader.read_all()
    writer.close()
    return result


out["errors"] = {
    "missing_timestamp": error_of(lambda: exchange(
        {"command": "training_set", "feature_service": "fraud_detection"}, spine)),
    "missing_key": error_of(lambda: exchange(
        {"command": "training_set", "features": ["customer_features:amount_sum_1d"], "timestamp_column": "at"},
        spine.drop(["customer_id"]))),
    "unknown_view": error_of(lambda: client.get_flight_info(command({"command": "feature_view", "name": "nope"}))),
    "unknown_feature": error_of(lambda: exchange(
        {"command": "training_set", "features": ["customer_features:nope"], "timestamp_column": "at"}, spine)),
    "malformed": error_of(lambda: client.get_flight_info(command({"command": "feature_view", "nmae": "x"}))),
}
ok = exchange({"command": "training_set", "features": ["customer_features:amount_sum_1d"],
               "timestamp_column": "at"}, spine)
out["still_serving_rows"] = ok.num_rows
print(json.dumps(out, default=str))
sys.stdout.flush()
os._exit(0)
