"""The official MLflow client against aurum's MLflow-compatible registry API.

usage: mlflow_registry.py AURUM_URL ONNX_FILE WORK_DIR
Exits non-zero (with the failed check) unless every call behaves as MLflow's.
"""
import os
import sys

url, onnx_path, work = sys.argv[1], sys.argv[2], sys.argv[3]
os.environ["MLFLOW_TRACKING_URI"] = url
os.environ["MLFLOW_REGISTRY_URI"] = url

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402


def fails_with(code, call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except MlflowException as e:
        assert e.error_code == code, f"{call.__name__}: {e.error_code} != {code}: {e}"
        return str(e)
    raise AssertionError(f"{call.__name__}{args} did not fail")


client = MlflowClient(tracking_uri=url, registry_uri=url)
model = client.create_registered_model("fraud", tags={"team": "risk"}, description="fraud scores")
assert model.name == "fraud" and model.description == "fraud scores", model
fails_with("RESOURCE_ALREADY_EXISTS", client.create_registered_model, "fraud")
fails_with("INVALID_PARAMETER_VALUE", client.create_registered_model, "../evil")
fails_with("RESOURCE_DOES_NOT_EXIST", client.get_registered_model, "nobody")

v1 = client.create_model_version("fraud", onnx_path, tags={"aurum.features": "v:f0,v:f1"},
                                 description="first")
assert str(v1.version) == "1" and v1.status == "READY", v1
assert v1.creation_timestamp > 1_600_000_000_000, v1.creation_timestamp
v2 = client.create_model_version("fraud", "file://" + onnx_path)
assert str(v2.version) == "2" and v2.status == "READY", v2

# An MLflow model directory whose MLmodel names the ONNX file.
model_dir = os.path.join(work, "mlflow_model")
os.makedirs(model_dir, exist_ok=True)
with open(onnx_path, "rb") as f, open(os.path.join(model_dir, "scorer.onnx"), "wb") as g:
    g.write(f.read())
with open(os.path.join(model_dir, "MLmodel"), "w") as f:
    f.write("artifact_path: model\nflavors:\n  onnx:\n    data: scorer.onnx\n")
client.create_registered_model("dir_model")
from_dir = client.create_model_version("dir_model", model_dir)
assert from_dir.status == "READY" and from_dir.source == model_dir, from_dir
fails_with("INVALID_PARAMETER_VALUE", client.create_registered_model, "bad\u0007name")
fails_with("INVALID_PARAMETER_VALUE", client.create_registered_model, "x" * 300)

# A source that is not an ONNX model: the version is recorded as failed.
garbage = os.path.join(work, "garbage.onnx")
with open(garbage, "wb") as f:
    f.write(b"not a model")
try:
    client.create_model_version("fraud", garbage)
    raise AssertionError("a garbage model was accepted")
except MlflowException as e:
    assert "FAILED_REGISTRATION" in str(e), e
failed = client.get_model_version("fraud", "3")
assert failed.status == "FAILED_REGISTRATION" and failed.status_message, failed

# Sources outside the server's import root are refused alike whether they
# exist or not (nothing is read, no version is made); a link out of it too.
outside = [
    fails_with("INVALID_PARAMETER_VALUE", client.create_model_version, "fraud", path)
    for path in ("/etc/hostname", "/no/such/model.onnx", os.path.join(work, "..", "..", "..", "etc", "hostname"))
]
assert all("outside the server's import root" in m for m in outside), outside
link = os.path.join(work, "link.onnx")
os.symlink("/etc/hostname", link)
message = fails_with("INVALID_PARAMETER_VALUE", client.create_model_version, "fraud", link)
assert "outside the server's import root" in message, message
dangling = os.path.join(work, "dangling.onnx")
os.symlink("/no/such/model.onnx", dangling)
message = fails_with("INVALID_PARAMETER_VALUE", client.create_model_version, "fraud", dangling)
assert "outside the server's import root" in message, message

client.set_registered_model_alias("fraud", "champion", "2")
client.set_registered_model_alias("fraud", "challenger", "1")
champion = client.get_model_version_by_alias("fraud", "champion")
assert str(champion.version) == "2" and "champion" in champion.aliases, champion
assert client.get_registered_model("fraud").aliases == {"champion": "2", "challenger": "1"}
fails_with("INVALID_STATE", client.delete_model_version, "fraud", "2")
fails_with("RESOURCE_DOES_NOT_EXIST", client.get_model_version_by_alias, "fraud", "nobody")

client.set_model_version_tag("fraud", "1", "stage", "shadow")
client.update_model_version("fraud", "1", description="changed")
v1 = client.get_model_version("fraud", "1")
assert v1.tags["stage"] == "shadow" and v1.description == "changed", v1
client.delete_model_version_tag("fraud", "1", "stage")
assert "stage" not in client.get_model_version("fraud", "1").tags
client.set_registered_model_tag("fraud", "owner", "ana")
client.update_registered_model("fraud", description="new words")
model = client.get_registered_model("fraud")
assert model.tags == {"team": "risk", "owner": "ana"} and model.description == "new words", model

for i in range(5):
    client.create_registered_model(f"other_{i}")
found = client.search_registered_models(filter_string="name LIKE 'fr%'")
assert [m.name for m in found] == ["fraud"], found
names, token = [], None
while True:
    page = client.search_registered_models(max_results=2, page_token=token)
    names += [m.name for m in page]
    token = page.token
    if not token:
        break
assert names == ["dir_model", "fraud"] + [f"other_{i}" for i in range(5)], names
versions = client.search_model_versions("name='fraud'")
assert sorted(str(v.version) for v in versions) == ["1", "2", "3"], versions

downloaded = mlflow.artifacts.download_artifacts(artifact_uri="models:/fraud/2", dst_path=work)
with open(os.path.join(downloaded, "model.onnx"), "rb") as f, open(onnx_path, "rb") as g:
    assert f.read() == g.read(), "the downloaded model differs"
uri = client.get_model_version_download_uri("fraud", "2")
assert uri == url + "/api/2.0/mlflow-artifacts/artifacts/models/fraud/2", uri

# With only the registry pointing at aurum, the download still comes from it.
os.environ["MLFLOW_TRACKING_URI"] = "http://127.0.0.1:9"
mlflow.set_tracking_uri("http://127.0.0.1:9")
mlflow.set_registry_uri(url)
again = mlflow.artifacts.download_artifacts(artifact_uri="models:/fraud/1",
                                            dst_path=os.path.join(work, "again"))
with open(os.path.join(again, "model.onnx"), "rb") as f, open(onnx_path, "rb") as g:
    assert f.read() == g.read(), "the second download differs"
mlflow.set_tracking_uri(url)
os.environ["MLFLOW_TRACKING_URI"] = url

# Parallel requests registering the same model get distinct numbers.
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

client.create_registered_model("parallel")
with ThreadPoolExecutor(8) as pool:
    created = list(pool.map(lambda _: client.create_model_version("parallel", onnx_path), range(8)))
assert sorted(int(v.version) for v in created) == list(range(1, 9)), created

client.rename_registered_model("other_0", "renamed")
fails_with("RESOURCE_DOES_NOT_EXIST", client.get_registered_model, "other_0")
client.delete_registered_model("renamed")
fails_with("INVALID_STATE", client.delete_registered_model, "fraud")
print("ok")
