# segpipe: every target installs what it needs first (idempotent: .venv is reused).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export RAY_USAGE_STATS_ENABLED := 0
export DO_NOT_TRACK := 1

.PHONY: demo test lint unit e2e bench model clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade 'pip>=24'
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/segpipe demo --out demo-out

lint: $(STAMP)
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

# Re-create the bundled demo-satellite model (reproducible: seeded, single-threaded).
model: $(STAMP)
	$(BIN)/segpipe train --config configs/demo-satellite.yaml --out pipeline/models/demo-satellite

bench: $(STAMP)
	$(BIN)/python bench/memory.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache .hypothesis
