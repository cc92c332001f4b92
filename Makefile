# The two commands of the README: `make serve` and `make test`. Each creates .venv when
# missing and installs everything it needs, so both work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS ?= all,dev

.PHONY: install serve test lint typecheck pytest gotest proto bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	@# The Go gRPC gateway; without a Go toolchain gRPC is served by grpc.aio instead.
	@$(BIN)/inferbridge gateway >/dev/null || echo "inferbridge: no gRPC gateway; gRPC will use grpc.aio"

serve: install
	$(BIN)/inferbridge serve

lint:
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/python scripts/gen_proto.py --check
	$(BIN)/python scripts/openapi.py --check

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/pytest -q

gotest:
	@if [ -x scripts/test_go.sh ]; then INFERBRIDGE_PYTHON=$(CURDIR)/$(BIN)/python scripts/test_go.sh; fi

test: install lint typecheck pytest gotest

proto: $(BIN)/python
	$(BIN)/python scripts/gen_proto.py

bench: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[all,dev,bench]"
	$(BIN)/python -m benchmarks.run
