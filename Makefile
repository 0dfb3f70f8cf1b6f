# `make run` and `make test` work on a fresh machine with Python 3.11 and make.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CONFIG ?= config/cluster.toml

.PHONY: run run-replicated test proto clean postgres-server chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/miniupi run $(CONFIG)

# Two gateways on a PostgreSQL server that miniupi runs itself (installed first when missing).
run-replicated: $(STAMP) postgres-server
	$(BIN)/miniupi run config/cluster-replicated.toml

# The tests boot real PostgreSQL servers and drive the console in Chromium; the demo cluster (make run) needs neither.
test: $(STAMP) postgres-server chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

postgres-server:
	@scripts/ensure_postgres.sh

chromium:
	@scripts/ensure_chromium.sh

proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

clean:
	rm -rf $(VENV) var certs .pytest_cache

# Jepsen-style bank workload under a seeded nemesis (benchmarks/chaos_run.py; a short run is in `make test`).
# make chaos DURATION=600 SEED=7   (no SEED: a random one, printed with the command to replay it)
DURATION ?= 600
SEED ?=
.PHONY: chaos
chaos: $(STAMP)
	$(BIN)/python benchmarks/chaos_run.py --duration $(DURATION) $(if $(SEED),--seed $(SEED)) $(CHAOS_ARGS)
