# lgsid_pipeline: every target does its own set-up, so a fresh clone needs only `make demo`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

export DAGSTER_HOME := $(CURDIR)/dagster_home
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# Python writes the bytecode of what it imports into .venv and the checkout (both ignored by
# git), whatever the machine's default: otherwise every step, daemon and test process
# compiles again each library module that lgsid_pipeline.bytecode did not reach.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test test-fast lint ui mlflow-ui bench install clean

# pip -qq: errors only (a pip config naming missing find-links folders warns once per package).
# --no-compile, then lgsid_pipeline.bytecode: compile only what a run imports, not every file
# of every package (over half of the install on two cores; see that module's docstring).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --quiet --disable-pip-version-check --no-compile -e '.[dev]'
	$(BIN)/python -m lgsid_pipeline.bytecode
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/lgsid demo

lint: $(STAMP)
	$(BIN)/ruff check .

# System packages the tests need (chromium for the UI test, postgresql for the deploy test).
.PHONY: system-deps
system-deps:
	bash tests/system_deps.sh

# Tests run on TEST_WORKERS processes (pytest-xdist; a file's tests stay on one worker, and
# files are dealt out in the order tests/conftest.py gives them, the longest first).
TEST_WORKERS ?= 2
# Their scratch folders go to memory (/dev/shm) when it has 2 GiB free: each SQLite commit of
# the tests' Dagster and MLflow stores is an fsync on disk (about a tenth of the suite's time).
TEST_TMPDIR ?= $(shell df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 && $$4 > 2097152 {print "/dev/shm"}')

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(if $(TEST_TMPDIR),TMPDIR=$(TEST_TMPDIR)) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The fast subset: no end-to-end runs (marked slow), no system packages needed.
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow"

ui: $(STAMP)
	$(BIN)/dagster dev -m lgsid_pipeline.definitions --host 127.0.0.1 --port 3000

mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(or $(LGSID_HOME),$(CURDIR)/.lgsid)/mlflow/mlflow.db --host 127.0.0.1 --port 5000

bench: export LGSID_BENCH_HOME ?= $(CURDIR)/.lgsid-bench
bench: $(STAMP)
	$(BIN)/python bench/code_location.py
	$(BIN)/python bench/pipeline.py --fresh
	$(BIN)/python bench/backfill.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/alignment.py
	$(BIN)/python bench/tokenizer.py
	$(BIN)/python bench/prepare.py
	$(BIN)/python bench/discriminative.py
	$(BIN)/python bench/ablations.py
	$(BIN)/python bench/discriminative.py --ablations
	$(BIN)/python bench/generative_speed.py
	# one run per city (each under 100 minutes on two cores), then merged
	for city in tokyo new-york sthgcn-nyc; do \
	  $(BIN)/python bench/generative.py --cities $$city --out $(LGSID_BENCH_HOME)/generative-$$city.json || exit 1; \
	done
	$(BIN)/python bench/generative.py --out bench/results/generative.json \
	  --merge $(LGSID_BENCH_HOME)/generative-{tokyo,new-york,sthgcn-nyc}.json --note "one run per city (make bench)"
	$(BIN)/python bench/sthgcn_headroom.py

clean:
	rm -rf .lgsid dagster_home/storage dagster_home/history dagster_home/schedules dagster_home/logs
