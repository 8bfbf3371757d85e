"""Trains the benchmark's model and writes everything both servers need.

A GradientBoostingClassifier with 50 trees of depth 3 on 8 features,
exported with skl2onnx (zipmap off, so the outputs are a label tensor and a
probability tensor). Also writes the entities' feature values (what aurum
serves from its online store) and one request body per line for each
server: FastAPI gets the 8 values, aurum gets the entity key and fetches
the 8 values itself.

usage: make_model.py OUT_DIR ENTITIES
"""

import json
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from skl2onnx import to_onnx
from sklearn.ensemble import GradientBoostingClassifier

out, entities = sys.argv[1], int(sys.argv[2])
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(7)
FEATURES = 8

# Training data with planted signal: the label depends on three features.
x = rng.normal(size=(20_000, FEATURES)).astype(np.float32)
logit = 1.5 * x[:, 0] - 1.0 * x[:, 1] + 0.8 * x[:, 2] * x[:, 3]
y = (rng.random(20_000) < 1 / (1 + np.exp(-logit))).astype(np.int64)
model = GradientBoostingClassifier(n_estimators=50, max_depth=3, random_state=0).fit(x, y)
onx = to_onnx(
    model,
    x[:1],
    options={id(model): {"zipmap": False}},
    target_opset={"": 17, "ai.onnx.ml": 3},
)
with open(os.path.join(out, "model.onnx"), "wb") as f:
    f.write(onx.SerializeToString())

# The entities' current feature values.
values = rng.normal(size=(entities, FEATURES))
now = np.datetime64("now", "us")
columns = {
    "entity_id": pa.array(np.arange(entities, dtype=np.int64)),
    "event_timestamp": pa.array(np.full(entities, now), pa.timestamp("us", tz="UTC")),
    "created_timestamp": pa.array(np.full(entities, now), pa.timestamp("us", tz="UTC")),
}
for f in range(FEATURES):
    columns[f"f{f}"] = pa.array(values[:, f])
pq.write_table(pa.table(columns), os.path.join(out, "features.parquet"))

# The same 10,000 requests for both servers: one entity each.
picks = rng.integers(0, entities, size=10_000)
with open(os.path.join(out, "bodies_fastapi.jsonl"), "w") as f:
    for e in picks:
        f.write(json.dumps({"features": [float(v) for v in values[e]]}) + "\n")
with open(os.path.join(out, "bodies_aurum.jsonl"), "w") as f:
    for e in picks:
        f.write(json.dumps({"model": "gbt", "entities": {"entity_id": [int(e)]}}) + "\n")
print(json.dumps({"onnx_inputs": [i.name for i in onx.graph.input],
                  "onnx_outputs": [o.name for o in onx.graph.output]}))
