"""Feast's SDK asking two remote offline stores for the same point-in-time
training set: aurum's Flight service and Feast's own `feast serve_offline`
(file offline store over a Parquet copy of the same gold rows). Prints the
times and compares the values on the rows both return.

usage: remote_historical.py AURUM_REPO FEAST_CLIENT_REPO GOLD_PARQUET SPINE_ROWS [ROUNDS]
"""
import sys
import time

import numpy as np
import pandas as pd
from feast import FeatureStore

aurum_repo, feast_repo, gold_path, spine_rows = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
gold = pd.read_parquet(gold_path, columns=["customer_id", "event_timestamp"])
rng = np.random.default_rng(11)
rows = rng.integers(0, len(gold), size=spine_rows)
# Spine times: a gold row's own time plus up to a day, so most rows find
# features inside the 7-day TTL.
times = pd.to_datetime(gold["event_timestamp"].to_numpy()[rows], utc=True) + pd.to_timedelta(
    rng.integers(0, 86_400, size=spine_rows), unit="s"
)
entity_df = pd.DataFrame(
    {"customer_id": gold["customer_id"].to_numpy()[rows], "event_timestamp": times}
)
entity_df["spine_row"] = np.arange(spine_rows)

aurum = FeatureStore(repo_path=aurum_repo)
features = [
    f"customer_features:{f.name}" for f in aurum.get_feature_view("customer_features").features
]
rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 3
answers = {}
seconds = {"aurum": [], "feast serve_offline": []}
for round_ in range(rounds):
    # Alternate which store goes first, so neither always meets a warm
    # page cache or a busy machine.
    order = [("aurum", aurum_repo), ("feast serve_offline", feast_repo)]
    if round_ % 2:
        order.reverse()
    for name, repo in order:
        store = FeatureStore(repo_path=repo)
        started = time.perf_counter()
        answer = store.get_historical_features(entity_df=entity_df, features=features).to_df()
        took = time.perf_counter() - started
        seconds[name].append(took)
        answers[name] = answer.set_index("spine_row").sort_index()
        print(f"round {round_ + 1}, {name}: {took:.2f} s, {len(answer)} rows x {len(features)} features")

a, f = answers["aurum"], answers["feast serve_offline"]
common = a.index.intersection(f.index)
names = [r.split(":")[1] for r in features]
left = a.loc[common, names].to_numpy(dtype=float)
right = f.loc[common, names].to_numpy(dtype=float)
both_null = np.isnan(left) & np.isnan(right)
equal = both_null | np.isclose(left, right, rtol=1e-9, atol=1e-9)
print(
    f"rows: aurum {len(a)}, Feast {len(f)}, in both {len(common)}; "
    f"values equal on {equal.all(axis=1).sum()} of them"
)
ratios = [f_s / a_s for a_s, f_s in zip(seconds["aurum"], seconds["feast serve_offline"])]
print("Feast / aurum time per round: " + ", ".join(f"{r:.1f}x" for r in ratios))
print(
    f"median: aurum {np.median(seconds['aurum']):.2f} s, Feast "
    f"{np.median(seconds['feast serve_offline']):.2f} s, ratio {np.median(ratios):.1f}x"
)
