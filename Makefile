# aurum — the two set-up commands are `make demo` and `make test`.

CARGO ?= cargo

.PHONY: demo test build-deps onnxruntime python azurite prometheus redis kafka lint unit bench clean-tools

## Run the whole product end to end in a temporary project.
demo: build-deps onnxruntime
	@echo "Building aurum: the first build compiles every dependency (about 25 minutes on 2 cores); cargo shows its progress."
	$(CARGO) build --bin aurum
	$(CARGO) run --quiet -- demo

## Everything CI checks: formatting, clippy, and every test
## (scripts/test.sh: installs the services while the workspace builds, and
## lints with clippy in the same build as the tests).
test:
	@scripts/test.sh

## OpenSSL's headers and pkg-config (Debian's packages) for librdkafka.
build-deps:
	@scripts/install-build-deps.sh

## Install the ONNX Runtime shared library into .tools/onnxruntime.
onnxruntime:
	@scripts/install-onnxruntime.sh

## Create the Python virtualenv of test clients in .tools/venv.
python:
	@scripts/setup-python.sh

## Install Azurite (the Azure Storage emulator, npm) into .tools/azurite.
azurite:
	@scripts/install-azurite.sh

## Install Prometheus and promtool (Debian's package, unpacked) into
## .tools/prometheus.
prometheus:
	@scripts/install-prometheus.sh

## Install redis-server, redis-cli and redis-benchmark (Debian's packages,
## unpacked) into .tools/redis.
redis:
	@scripts/install-redis.sh

## Build the tansu Kafka-protocol broker (crates.io) into .tools/tansu
## (opt-level 1, enough for the tests; `make bench` rebuilds it at 3).
kafka:
	@scripts/install-kafka.sh

## The lint and test halves of `make test` on their own, for a warm tree.
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace

bench: onnxruntime python redis
	@TANSU_OPT_LEVEL=3 scripts/install-kafka.sh
	$(CARGO) bench --workspace

clean-tools:
	rm -rf .tools
