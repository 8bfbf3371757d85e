"""NVIDIA's tritonclient (from PyPI) calling aurum's Open Inference
Protocol endpoints as a Triton user would: over HTTP with its default binary
tensor data, inputs and outputs alike. Prints what the model answered.

Usage: triton_client.py HOST:PORT MODEL VERSION ROWS_JSON
"""
import json
import os
import sys

import numpy as np
import tritonclient.http as httpclient

address, model, version, rows = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
x = np.asarray(rows, dtype=np.float32)

client = httpclient.InferenceServerClient(url=address)
out = {"live": client.is_server_live(), "ready": client.is_model_ready(model, version)}
metadata = client.get_model_metadata(model, version)
tensor = httpclient.InferInput(metadata["inputs"][0]["name"], list(x.shape), "FP32")
tensor.set_data_from_numpy(x, binary_data=True)
result = client.infer(model, [tensor], model_version=version)
for output in result.get_response()["outputs"]:
    out[output["datatype"]] = result.as_numpy(output["name"]).tolist()
    out[output["datatype"] + "_binary"] = "binary_data_size" in output.get("parameters", {})
print(json.dumps(out))
sys.stdout.flush()
os._exit(0)
