# Skyhook's entry points.  `make test` and `make demo` install what is missing first
# (scripts/setup.sh; a second run skips what is done).
.PHONY: setup build test test-unit test-multihost lint demo cluster-up cluster-status cluster-down clean sanitize fuzz

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

# the 3-host tests alone (network namespaces; part of `make test` too, about 70 s)
test-multihost: setup
	$(PY) -m pytest -q -m multihost tests

# the tests that need no cluster (and not the reliability suite, whose fuzz run and
# sanitizer builds take minutes)
test-unit: setup
	$(PY) -m pytest -q -m "not cluster and not reliability" tests

# the layering rules of pyproject.toml: rados only in skyhook_py/storage/rados_io.py,
# grpc only in skyhook_py/service/ (also run by tests/test_layering.py)
lint:
	.venv/bin/ruff check --select TID251 skyhook_py

# ASan+UBSan build of the kernel and skyhook_scan_local into build-asan/ (clang, installed
# here if missing; `make test` builds build-fuzz/ instead, see tests/test_reliability.py),
# then run over the sanitizer corpus
# (corrupted partitions x malformed requests, benchmarks/sanitize_corpus.py)
sanitize: setup
	scripts/setup.sh sanitize
	nice -n 10 $(PY) -m benchmarks.sanitize_corpus --runner build-asan/bin/skyhook_scan_local

# libFuzzer over requests (a seed partition each) and over partitions (a seed request
# each) for FUZZ_SECONDS per mode; crashes land in build-fuzz/findings/.  `make test` runs
# it for 60 s per mode (tests/test_reliability.py, SKYHOOK_FUZZ_SECONDS)
FUZZ_SECONDS ?= 300
fuzz: setup
	scripts/setup.sh fuzz
	nice -n 10 scripts/fuzz.sh $(FUZZ_SECONDS)

demo: setup
	$(SKYHOOK) cluster up
	$(SKYHOOK) demo

cluster-up: setup
	$(PY) -m skyhook_py.cluster_cli up

cluster-status:
	$(PY) -m skyhook_py.cluster_cli status

cluster-down:
	$(PY) -m skyhook_py.cluster_cli down

clean:
	rm -rf build build-asan build-fuzz skyhook_py/_generated
