# Skyhook's entry points.  `make test` and `make demo` install what is missing first
# (scripts/setup.sh; a second run skips what is done).
.PHONY: setup build test test-unit lint demo cluster-up cluster-status cluster-down clean

PY := .venv/bin/python
SKYHOOK := .venv/bin/skyhook

setup:
	scripts/setup.sh all

# flatbuffers/gRPC code generation and the C++ build only
build:
	scripts/setup.sh build

# the whole suite; the conftest fixture starts a throwaway cluster and always stops it
test: setup
	$(PY) -m pytest -q tests

# the tests that need no cluster
test-unit: setup
	$(PY) -m pytest -q -m "not cluster" tests

# the layering rules of pyproject.toml: rados only in skyhook_py/storage/rados_io.py,
# grpc only in skyhook_py/service/ (also run by tests/test_layering.py)
lint:
	.venv/bin/ruff check --select TID251 skyhook_py

demo: setup
	$(SKYHOOK) cluster up
	$(SKYHOOK) demo

cluster-up: setup
	$(PY) -m skyhook_py.cluster up

cluster-status:
	$(PY) -m skyhook_py.cluster status

cluster-down:
	$(PY) -m skyhook_py.cluster down

clean:
	rm -rf build skyhook_py/_generated
