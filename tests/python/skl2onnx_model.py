"""A scikit-learn GradientBoostingClassifier (50 trees, depth 3, 8 features)
exported with skl2onnx (zipmap off), and what scikit-learn predicts for a
few rows, for the model server's tests and benchmarks.

usage: skl2onnx_model.py OUT.onnx
Prints JSON: {"rows": [[...8 floats], ...], "labels": [...], "probabilities": [[p0, p1], ...]}
"""
import json
import sys

import numpy as np
from skl2onnx import to_onnx
from sklearn.ensemble import GradientBoostingClassifier

rng = np.random.default_rng(7)
x = rng.normal(size=(2000, 8)).astype(np.float32)
y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] * x[:, 3] + rng.normal(scale=0.5, size=2000) > 0).astype(np.int64)
model = GradientBoostingClassifier(n_estimators=50, max_depth=3, random_state=0).fit(x, y)
onnx = to_onnx(model, x[:1], options={id(model): {"zipmap": False}}, target_opset=17)
with open(sys.argv[1], "wb") as f:
    f.write(onnx.SerializeToString())
rows = x[:5]
print(json.dumps({
    "rows": rows.tolist(),
    "labels": model.predict(rows).tolist(),
    "probabilities": model.predict_proba(rows).tolist(),
}))
