"""Writes a Feast repository (local provider, sqlite online store, or Redis
when a HOST:PORT is given) over the same synthetic rows aurum's bench
serves, plus the request bodies both servers answer.

usage: make_repo.py REPO_DIR ENTITIES FEATURES [REDIS_HOST:PORT]
Writes REPO_DIR/feature_store.yaml, REPO_DIR/features.py,
REPO_DIR/data/bench.parquet, and REPO_DIR/bodies_{3,50}.jsonl (one
/get-online-features request per line, 1 entity each).
"""
import json
import os
import sys
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

repo, entities, features = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
redis = sys.argv[4] if len(sys.argv) > 4 else None
os.makedirs(os.path.join(repo, "data"), exist_ok=True)
rng = np.random.default_rng(7)
now = datetime.now(timezone.utc)
micros = int(now.timestamp() * 1e6) - rng.integers(0, 3_600_000_000, entities)
stamps = pa.array(micros, pa.timestamp("us", tz="UTC"))
columns = {
    "entity_id": pa.array(np.arange(entities, dtype=np.int64)),
    "event_timestamp": stamps,
    "created_timestamp": stamps,
}
for f in range(features):
    columns[f"f{f}"] = pa.array(rng.random(entities) * 1000.0)
parquet = os.path.abspath(os.path.join(repo, "data", "bench.parquet"))
pq.write_table(pa.table(columns), parquet)

with open(os.path.join(repo, "feature_store.yaml"), "w") as f:
    f.write(
        "project: bench\n"
        "registry: data/registry.db\n"
        "provider: local\n"
        + (f"online_store:\n  type: redis\n  connection_string: \"{redis}\"\n" if redis
           else "online_store:\n  type: sqlite\n  path: data/online_store.db\n")
        + "offline_store:\n  type: file\n"
        "entity_key_serialization_version: 3\n"
    )
with open(os.path.join(repo, "features.py"), "w") as f:
    f.write(f'''from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64
from feast.value_type import ValueType

entity = Entity(name="entity", join_keys=["entity_id"], value_type=ValueType.INT64)
source = FileSource(path={parquet!r}, timestamp_field="event_timestamp",
                    created_timestamp_column="created_timestamp")
bench = FeatureView(name="bench", entities=[entity], ttl=timedelta(days=1),
                    schema=[Field(name=f"f{{i}}", dtype=Float64) for i in range({features})],
                    source=source, online=True)
''')

for count in (3, min(50, features)):
    with open(os.path.join(repo, f"bodies_{count}.jsonl"), "w") as f:
        for key in rng.integers(0, entities, 1000):
            body = {"features": [f"bench:f{i}" for i in range(count)],
                    "entities": {"entity_id": [int(key)]}}
            f.write(json.dumps(body) + "\n")
print(parquet)
