"""The clients users already run, against `aurum serve --tokens`: each
call without a token, with one whose role is too small, and with the right
one. Prints what happened (error kinds, never tokens) as JSON.

Usage: auth_clients.py HTTP_URL FLIGHT_URL GRPC_ADDRESS READ_TOKEN WRITE_TOKEN ADMIN_TOKEN
"""
import json
import os
import sys

import pyarrow as pa
import pyarrow.flight as flight

http_url, flight_url, grpc_address, read, write, admin = sys.argv[1:7]
out = {}


def outcome(call):
    try:
        call()
        return "ok"
    except flight.FlightUnauthenticatedError:
        return "unauthenticated"
    except flight.FlightUnauthorizedError:
        return "unauthorized"
    except Exception as e:  # noqa: BLE001 - reported, the test asserts
        # pyarrow raises get_schema's statuses as plain OSError.
        if "Flight returned unauthenticated error" in str(e):
            return "unauthenticated"
        return type(e).__name__ + ": " + str(e).split(". gRPC client debug context")[0][:200]


# Arrow Flight: the basic-token handshake, and a bearer header per call.
def flight_client(token):
    client = flight.FlightClient(flight_url)
    if token is None:
        return client, flight.FlightCallOptions()
    header = client.authenticate_basic_token(b"user", token.encode())
    return client, flight.FlightCallOptions(headers=[header])


view = flight.Ticket(json.dumps({"command": "feature_view", "name": "customer_features"}).encode())
training = flight.FlightDescriptor.for_command(json.dumps(
    {"command": "training_set", "feature_service": "fraud_detection", "timestamp_column": "at"}))
spine = pa.table({"customer_id": [1, 2], "at": pa.array([0, 0], pa.timestamp("us", tz="UTC"))})


def exchange(client, options):
    writer, reader = client.do_exchange(training, options)
    writer.begin(spine.schema)
    writer.write_table(spine)
    writer.done_writing()
    reader.read_all()
    writer.close()


for name, token in (("none", None), ("read", read), ("write", write)):
    client, options = flight_client(token)
    out[f"flight_get_{name}"] = outcome(lambda: client.do_get(view, options).read_all())
    out[f"flight_list_{name}"] = outcome(lambda: list(client.list_flights(options=options)))
    out[f"flight_info_{name}"] = outcome(lambda: client.get_flight_info(training, options))
    out[f"flight_schema_{name}"] = outcome(lambda: client.get_schema(training, options))
    out[f"flight_exchange_{name}"] = outcome(lambda: exchange(client, options))


def push(token):
    client, options = flight_client(token)
    table = pa.table({"nothing": [1]})
    descriptor = flight.FlightDescriptor.for_command(
        json.dumps({"command": "push", "feature_view": "customer_features"})
    )
    writer, _ = client.do_put(descriptor, table.schema, options)
    writer.write_table(table)
    writer.close()


out["flight_put_read"] = outcome(lambda: push(read))
# With write, the call is let in and refused for its rows (no such column).
out["flight_put_write"] = outcome(lambda: push(write))
out["flight_bad_handshake"] = outcome(lambda: flight_client("guess"))

# The official MLflow client, with MLFLOW_TRACKING_TOKEN.
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402


def mlflow_outcome(token, call):
    if token is None:
        os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
    else:
        os.environ["MLFLOW_TRACKING_TOKEN"] = token
    client = MlflowClient(tracking_uri=http_url, registry_uri=http_url)
    try:
        call(client)
        return "ok"
    except MlflowException as e:
        return e.error_code


out["mlflow_search_none"] = mlflow_outcome(None, lambda c: c.search_registered_models())
out["mlflow_search_read"] = mlflow_outcome(read, lambda c: c.search_registered_models())
out["mlflow_create_read"] = mlflow_outcome(read, lambda c: c.create_registered_model("m2"))
out["mlflow_create_admin"] = mlflow_outcome(admin, lambda c: c.create_registered_model("m2"))

# tritonclient over gRPC, with the bearer header.
import tritonclient.grpc as grpcclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

triton = grpcclient.InferenceServerClient(url=grpc_address)


def triton_outcome(headers):
    try:
        triton.get_server_metadata(headers=headers)
        return "ok"
    except InferenceServerException as e:
        return e.status()


out["grpc_none"] = triton_outcome(None)
out["grpc_read"] = triton_outcome({"authorization": f"Bearer {read}"})
out["grpc_live_none"] = triton.is_server_live()
print(json.dumps(out))
sys.stdout.flush()
os._exit(0)
