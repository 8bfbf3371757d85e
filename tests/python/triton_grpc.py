"""NVIDIA's tritonclient.grpc (from PyPI) calling aurum's Open Inference
Protocol gRPC service as a Triton user would. Prints what it saw as JSON.

Usage: triton_grpc.py HOST:PORT MODEL ROWS_JSON MAX_MESSAGE_BYTES
"""
import json
import os
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

address, model, rows, limit = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
x = np.asarray(rows, dtype=np.float32)

client = grpcclient.InferenceServerClient(url=address)
out = {
    "live": client.is_server_live(),
    "ready": client.is_server_ready(),
    "model_ready": client.is_model_ready(model),
    "server": client.get_server_metadata(as_json=True)["name"],
}
metadata = client.get_model_metadata(model, as_json=True)
out["inputs"] = metadata["inputs"]
name = metadata["inputs"][0]["name"]
tensor = grpcclient.InferInput(name, list(x.shape), "FP32")
tensor.set_data_from_numpy(x)
result = client.infer(model, [tensor], request_id="g1")
response = result.get_response(as_json=True)
out["id"] = response.get("id")
for output in response["outputs"]:
    out[output["datatype"]] = result.as_numpy(output["name"]).tolist()

def error_code(call):
    try:
        call()
        return None
    except InferenceServerException as e:
        return e.status()


out["unknown_model"] = error_code(lambda: client.infer("nope", [tensor]))
wrong = grpcclient.InferInput(name, [x.shape[0], 3], "FP32")
wrong.set_data_from_numpy(np.zeros((x.shape[0], 3), dtype=np.float32))
out["wrong_shape"] = error_code(lambda: client.infer(model, [wrong]))
big_rows = limit // (4 * x.shape[1]) + 1
big = grpcclient.InferInput(name, [big_rows, x.shape[1]], "FP32")
big.set_data_from_numpy(np.zeros((big_rows, x.shape[1]), dtype=np.float32))
out["too_big"] = error_code(lambda: client.infer(model, [big]))
print(json.dumps(out))
sys.stdout.flush()
os._exit(0)
