"""KServe's own REST inference client (from PyPI) calling aurum's Open
Inference Protocol endpoints, with JSON tensors and with binary tensor
data. Prints what the model answered.

Usage: kserve_client.py BASE_URL MODEL INPUT ROWS_JSON
"""
import asyncio
import json
import os
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

base_url, model, input_name, rows = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
x = np.asarray(rows, dtype=np.float32)


async def main():
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=1, timeout=30))
    out = {
        "live": await client.is_server_live(base_url),
        "ready": await client.is_model_ready(base_url, model),
    }
    for binary in (False, True):
        tensor = InferInput(name=input_name, shape=list(x.shape), datatype="FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        request = InferRequest(model_name=model, infer_inputs=[tensor], request_id="ks")
        response = await client.infer(base_url, request, model_name=model)
        answer = {}
        for output in response.outputs:
            answer[output.datatype] = output.as_numpy().tolist()
        out["binary" if binary else "json"] = answer
    await client.close()
    return out


print(json.dumps(asyncio.run(main())))
sys.stdout.flush()
os._exit(0)
