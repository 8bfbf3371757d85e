"""Uses Feast's own SDK against `aurum serve`, as a Feast user would, in the
repository `aurum feast-repo` wrote: `feast apply`, online features by list
and by feature service, a point-in-time training set through Feast's remote
offline store, and the same training set through aurum's own Flight
command, all printed as JSON for the test to compare.

Usage: feast_sdk.py REPO_DIR FLIGHT_URL CUSTOMERS(comma-separated)
"""
import datetime
import json
import os
import subprocess
import sys

import pandas as pd
import pyarrow.flight as flight
from feast import FeatureStore

repo, flight_url, customers = sys.argv[1], sys.argv[2], [int(c) for c in sys.argv[3].split(",")]
feast_cli = os.path.join(os.path.dirname(sys.executable), "feast")
subprocess.run([feast_cli, "apply"], cwd=repo, check=True, capture_output=True)

store = FeatureStore(repo_path=repo)
features = [
    "customer_features:amount_sum_1d",
    "customer_features:amount_count_1h",
    "customer_features:amount_mean_7d",
]
out = {}
out["online"] = store.get_online_features(
    features=features, entity_rows=[{"customer_id": c} for c in customers]
).to_dict()
service = store.get_feature_service("fraud_detection")
out["service"] = store.get_online_features(
    features=service, entity_rows=[{"customer_id": c} for c in customers], full_feature_names=True
).to_dict()

# Every customer at three times: now, a day ago, sixty days ago (outside the
# views' 7-day TTL).
now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
times = [now, now - datetime.timedelta(days=1), now - datetime.timedelta(days=60)]
entity_df = pd.DataFrame(
    {
        "customer_id": [c for c in customers for _ in times],
        "event_timestamp": [t for _ in customers for t in times],
    }
)
historical = store.get_historical_features(entity_df=entity_df, features=features).to_arrow()
out["historical"] = {name: historical.column(name).to_pylist() for name in historical.column_names}
for name in ("event_timestamp",):
    out["historical"][name] = [t.isoformat() for t in out["historical"][name]]

# The same spine through aurum's own DoExchange command.
client = flight.FlightClient(flight_url)
command = {"command": "training_set", "features": features, "timestamp_column": "event_timestamp"}
descriptor = flight.FlightDescriptor.for_command(json.dumps(command))
writer, reader = client.do_exchange(descriptor)
import pyarrow as pa

spine = pa.Table.from_pandas(entity_df, preserve_index=False)
writer.begin(spine.schema)
writer.write_table(spine)
writer.done_writing()
own = reader.read_all()
out["aurum"] = {name: own.column(name).to_pylist() for name in own.column_names}
out["aurum"]["event_timestamp"] = [t.isoformat() for t in out["aurum"]["event_timestamp"]]

# A Feast write Feast's SDK sends to the online store, read back.
written_at = datetime.datetime.now(datetime.timezone.utc)
store.write_to_online_store(
    "customer_features",
    pd.DataFrame(
        {
            "customer_id": [424242],
            **{f.name: [7.5] for f in store.get_feature_view("customer_features").features},
            "event_timestamp": [written_at],
            "created_timestamp": [written_at],
        }
    ),
)
out["written"] = store.get_online_features(
    features=["customer_features:amount_sum_1d"], entity_rows=[{"customer_id": 424242}]
).to_dict()

print(json.dumps(out))
sys.stdout.flush()
os._exit(0)
