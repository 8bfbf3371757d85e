"""An S3 server for the tests: moto's server mode (from PyPI), on loopback
with an ephemeral port, and one empty bucket. Prints
{"endpoint": "http://127.0.0.1:PORT", "bucket": NAME} and serves until its
standard input closes (the test that started it ends), then stops.

  s3_server.py BUCKET"""

import json
import sys

import boto3
from moto.server import ThreadedMotoServer


def main() -> None:
    bucket = sys.argv[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=bucket)
    print(json.dumps({"endpoint": endpoint, "bucket": bucket}), flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
