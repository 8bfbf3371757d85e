"""Feast's historical retrieval on synthetic data, timed; writes the data
and Feast's answer for benches/feast/compare_historical.sh.

usage: historical.py WORK_DIR FEATURE_ROWS SPINE_ROWS ENTITIES FEATURES TTL_SECONDS
Writes WORK_DIR/features.parquet, WORK_DIR/spine.parquet,
WORK_DIR/feast.parquet (Feast's training set) and prints Feast's time.
"""
import os
import sys
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd

work, feature_rows, spine_rows, entities, features, ttl = sys.argv[1], *map(int, sys.argv[2:7])
repo = os.path.join(work, "repo")
os.makedirs(os.path.join(repo, "data"), exist_ok=True)
rng = np.random.default_rng(11)
end = datetime(2026, 11, 1, tzinfo=timezone.utc)
span = 30 * 86_400


def stamps(n):
    return pd.to_datetime(end) - pd.to_timedelta(rng.integers(0, span * 1_000_000, n), unit="us")


event = stamps(feature_rows)
data = {"entity_id": rng.integers(0, entities, feature_rows).astype("int64"),
        "event_timestamp": event, "created_timestamp": event}
for f in range(features):
    data[f"f{f}"] = rng.random(feature_rows)
frame = pd.DataFrame(data)
frame["event_timestamp"] = frame["event_timestamp"].astype("datetime64[us, UTC]")
frame["created_timestamp"] = frame["created_timestamp"].astype("datetime64[us, UTC]")
features_path = os.path.join(work, "features.parquet")
frame.to_parquet(features_path, index=False)

spine = pd.DataFrame({
    "entity_id": rng.integers(0, entities, spine_rows).astype("int64"),
    "event_timestamp": stamps(spine_rows).astype("datetime64[us, UTC]"),
    "spine_row": np.arange(spine_rows, dtype="int64"),
})
spine.to_parquet(os.path.join(work, "spine.parquet"), index=False)

with open(os.path.join(repo, "feature_store.yaml"), "w") as f:
    f.write("project: hist\nregistry: data/registry.db\nprovider: local\n"
            "online_store:\n  type: sqlite\n  path: data/online.db\n"
            "offline_store:\n  type: file\nentity_key_serialization_version: 3\n")
with open(os.path.join(repo, "features.py"), "w") as f:
    f.write(f'''from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64
from feast.value_type import ValueType
entity = Entity(name="entity", join_keys=["entity_id"], value_type=ValueType.INT64)
source = FileSource(path={os.path.abspath(features_path)!r}, timestamp_field="event_timestamp",
                    created_timestamp_column="created_timestamp")
bench = FeatureView(name="bench", entities=[entity], ttl=timedelta(seconds={ttl}),
                    schema=[Field(name=f"f{{i}}", dtype=Float64) for i in range({features})],
                    source=source, online=False)
''')

os.chdir(repo)
if os.system("feast apply > /dev/null 2>&1") != 0:
    sys.exit("feast apply failed")
from feast import FeatureStore  # noqa: E402

store = FeatureStore(repo_path=".")
refs = [f"bench:f{i}" for i in range(features)]
started = time.perf_counter()
result = store.get_historical_features(entity_df=spine, features=refs).to_df()
took = time.perf_counter() - started
result.to_parquet(os.path.join(work, "feast.parquet"), index=False)
print(f"feast get_historical_features(...).to_df(): {len(result)} rows x {result.shape[1]} columns "
      f"in {took:.3f} s (spine {spine_rows} rows, {feature_rows} feature rows x {features} features)")
