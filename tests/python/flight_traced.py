"""One Arrow Flight call (ListFlights) with plain pyarrow.flight, carrying a
W3C `traceparent` header, so the server's span of the call can be checked to
continue the caller's trace. Prints how many flights were listed.

Usage: flight_traced.py GRPC_URL TRACEPARENT
"""
import json
import sys

import pyarrow.flight as flight

client = flight.FlightClient(sys.argv[1])
options = flight.FlightCallOptions(headers=[(b"traceparent", sys.argv[2].encode())])
print(json.dumps({"flights": len(list(client.list_flights(options=options)))}))
