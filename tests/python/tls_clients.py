"""The clients users already run, against `aurum serve --tls-cert/--tls-key`:
requests over HTTPS, pyarrow.flight over grpc+tls and tritonclient's gRPC
client with TLS, each trusting the test's certificate; and the same calls
without trusting it, or in plain text, refused. Prints what happened as JSON.

Usage: tls_clients.py HTTPS_URL FLIGHT_URL GRPC_ADDRESS CERTIFICATE_PEM
"""
import json
import sys

import pyarrow.flight as flight
import requests
import tritonclient.grpc as triton_grpc

https_url, flight_url, grpc_address, certificate = sys.argv[1:5]
out = {}


def outcome(call):
    try:
        return call()
    except Exception as e:  # noqa: BLE001 - reported, the test asserts
        return "error " + type(e).__name__


predict = {"model": "fraud", "entities": {"customer_id": [1, 2]}}
out["https_ready"] = outcome(
    lambda: requests.get(f"{https_url}/health/ready", verify=certificate, timeout=30).status_code
)
out["https_predict"] = outcome(
    lambda: len(
        requests.post(f"{https_url}/predict", json=predict, verify=certificate, timeout=30).json()[
            "predictions"
        ]
    )
)
# Not trusting the certificate, or not speaking TLS, gets nothing.
out["https_untrusted"] = outcome(
    lambda: requests.get(f"{https_url}/health/ready", timeout=30).status_code
)
plain_url = https_url.replace("https://", "http://")
out["http_plain"] = outcome(lambda: requests.get(f"{plain_url}/health/ready", timeout=30).status_code)

with open(certificate, "rb") as f:
    roots = f.read()
client = flight.FlightClient(flight_url, tls_root_certs=roots)
out["flight_views"] = outcome(lambda: len(list(client.list_flights())))
ticket = flight.Ticket(json.dumps({"command": "feature_view", "name": "customer_features"}).encode())
out["flight_rows"] = outcome(lambda: client.do_get(ticket).read_all().num_rows)
plain_flight = flight.FlightClient(flight_url.replace("grpc+tls://", "grpc://"))
out["flight_plain"] = outcome(
    lambda: len(list(plain_flight.list_flights(options=flight.FlightCallOptions(timeout=10))))
)

triton = triton_grpc.InferenceServerClient(url=grpc_address, ssl=True, root_certificates=certificate)
out["grpc_live"] = outcome(lambda: triton.is_server_live())
out["grpc_model_ready"] = outcome(lambda: triton.is_model_ready("fraud"))

print(json.dumps(out))
