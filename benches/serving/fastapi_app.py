"""The baseline server: FastAPI + onnxruntime serving model.onnx at
POST /predict with {"features": [8 floats]} -> {"prediction": p}.

Written as a Python team would ship it: one InferenceSession per worker
process, a pydantic request model, numpy for the input tensor.
Run with: MODEL=path/model.onnx uvicorn fastapi_app:app --workers 2
"""

import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel

options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(os.environ["MODEL"], options, providers=["CPUExecutionProvider"])
input_name = session.get_inputs()[0].name
app = FastAPI()


class PredictRequest(BaseModel):
    features: list[float]


@app.post("/predict")
def predict(request: PredictRequest):
    x = np.asarray([request.features], dtype=np.float32)
    _, probabilities = session.run(None, {input_name: x})
    return {"prediction": float(probabilities[0][1])}
