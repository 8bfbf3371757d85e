#!/usr/bin/env bash
# README command 2 (`make test`), which CI runs on a fresh clone: formatting,
# clippy and every test, after installing what the tests start (ONNX
# Runtime, the Python clients, Azurite, Prometheus, Redis and the tansu
# Kafka broker).
#
# Arranged for a cold run on 2 cores, where the build is nearly all of the
# time:
# - The services are installed in the background, niced, while the
#   workspace builds: their downloads wait on the network, and pip's
#   unpacking and tansu's own cargo build take the cores the workspace build
#   leaves idle (while it waits on one long crate, or links).
#   Their output is prefixed with [tools].
# - clippy lints the workspace as the compiler wrapper of the test build
#   (RUSTC_WORKSPACE_WRAPPER, which is what `cargo clippy` itself sets, over
#   a check build), so dependencies are compiled once for both instead of
#   once checked for clippy and once built for the tests. The lints and
#   `-D warnings` are those of `cargo clippy --workspace --all-targets -- -D
#   warnings` (`make lint`).
# - The build uses the `ci` profile (Cargo.toml): no optimisation of the
#   dependencies, whose optimisation at opt-level 1 is most of a cold
#   build's time; `cargo test` and the dev-profile benchmarks keep the dev
#   profile.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
CARGO="${CARGO:-cargo}"
started=$SECONDS
step() { printf '==> [%dm%02ds] %s\n' $(((SECONDS - started) / 60)) $(((SECONDS - started) % 60)) "$*"; }

step "build dependencies (OpenSSL headers, pkg-config)"
scripts/install-build-deps.sh

step "cargo fmt --check"
"$CARGO" fmt --all --check

step "installing the test services in the background ([tools] and [kafka] lines)"
# Two background jobs, niced: the downloads (mostly waiting on the network)
# and tansu's cargo build (which takes the cores the workspace build leaves
# idle). Each in its own process group (job control), so that a failed
# build stops them and their children too; not in their own sessions
# (setsid), where the kernel's autogroup scheduling would share the cores
# equally between sessions and the niceness would count for nothing.
set -m
nice -n 10 bash -c '
    set -o pipefail
    {
        scripts/install-onnxruntime.sh &&
        scripts/setup-python.sh &&
        scripts/install-azurite.sh &&
        scripts/install-prometheus.sh &&
        scripts/install-redis.sh
    } 2>&1 | sed -u "s/^/[tools] /"
' &
tools=$!
nice -n 10 bash -c '
    set -o pipefail
    scripts/install-kafka.sh 2>&1 | sed -u "s/^/[kafka] /"
' &
kafka=$!
set +m
# Stop the installers too when the build fails or the run is interrupted.
trap 'kill -- -$tools -$kafka 2>/dev/null || true' EXIT

clippy_driver="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver || true)"
if [[ -z "$clippy_driver" ]]; then
    echo "error: clippy-driver not found (rustup component add clippy)" >&2
    exit 1
fi
export RUSTC_WORKSPACE_WRAPPER="$clippy_driver"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"

step "building every target with clippy's lints (-D warnings)"
# --timings: target/cargo-timings/ shows which crates the time went to.
"$CARGO" test --profile ci --workspace --all-targets --no-run --timings

step "waiting for the test services"
if ! wait "$tools"; then
    echo "error: installing the test services failed (see the [tools] lines above)" >&2
    exit 1
fi
if ! wait "$kafka"; then
    echo "error: building the tansu broker failed (see the [kafka] lines above)" >&2
    exit 1
fi
trap - EXIT

step "running the tests"
"$CARGO" test --profile ci --workspace
step "all tests passed"
