#!/usr/bin/env bash
# Installs the ONNX Runtime shared library that aurum loads at run time
# (ort's `load-dynamic`) into the project's git-ignored .tools/onnxruntime/.
# The library comes from the `onnxruntime` wheel on PyPI; nothing else is
# downloaded. Run through `make onnxruntime`.
set -euo pipefail

ORT_VERSION="${ORT_VERSION:-1.23.2}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.tools/onnxruntime"

if [[ -e "$dest/libonnxruntime.so" && "$(cat "$dest/VERSION" 2>/dev/null)" == "$ORT_VERSION" ]]; then
    echo "ONNX Runtime $ORT_VERSION is installed in $dest"
    exit 0
fi

python="$(command -v python3 || true)"
if [[ -z "$python" ]]; then
    echo "error: python3 with pip is needed to fetch the onnxruntime wheel from PyPI" >&2
    exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "Fetching the onnxruntime $ORT_VERSION wheel from PyPI..."
"$python" -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: --dest "$work" "onnxruntime==$ORT_VERSION"

rm -rf "$dest.partial"
mkdir -p "$dest.partial"
"$python" - "$work" "$dest.partial" "$ORT_VERSION" <<'PY'
import glob, os, sys, zipfile

work, dest, version = sys.argv[1:4]
wheels = glob.glob(os.path.join(work, "onnxruntime-*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected one onnxruntime wheel in {work}, found {wheels}")
wanted = (f"onnxruntime/capi/libonnxruntime.so.{version}",
          "onnxruntime/capi/libonnxruntime_providers_shared.so")
with zipfile.ZipFile(wheels[0]) as wheel:
    names = set(wheel.namelist())
    for member in wanted:
        if member not in names:
            sys.exit(f"{member} is not in {os.path.basename(wheels[0])}")
        target = os.path.join(dest, os.path.basename(member))
        with wheel.open(member) as src, open(target, "wb") as out:
            out.write(src.read())
os.symlink(f"libonnxruntime.so.{version}", os.path.join(dest, "libonnxruntime.so"))
with open(os.path.join(dest, "VERSION"), "w") as f:
    f.write(version + "\n")
PY
rm -rf "$dest"
mv "$dest.partial" "$dest"
echo "ONNX Runtime $ORT_VERSION installed in $dest"
