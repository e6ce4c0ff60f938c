# segpipe: every target installs what it needs first (idempotent: .venv is reused).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export RAY_USAGE_STATS_ENABLED := 0
export DO_NOT_TRACK := 1

.PHONY: demo demo-medical test lint unit e2e bench bench-volume model model-medical model-openvocab clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade 'pip>=24'
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/segpipe demo --out demo-out

# Four synthetic phantom volumes (mixed orientations/formats) through demo-medical.
demo-medical: $(STAMP)
	$(BIN)/segpipe demo --medical --out demo-medical-out

lint: $(STAMP)
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

# Re-create the bundled demo-satellite model (reproducible: seeded, single-threaded).
model: $(STAMP)
	$(BIN)/segpipe train --config configs/demo-satellite.yaml --out pipeline/models/demo-satellite

# Re-create the bundled demo-medical model (3-D U-Net + instance head on phantoms).
model-medical: $(STAMP)
	$(BIN)/segpipe train --config configs/demo-medical.yaml --out pipeline/models/demo-medical

# Re-create the bundled demo-openvocab model (zero-shot held-out prompt "blue striped").
model-openvocab: $(STAMP)
	$(BIN)/segpipe train --config configs/demo-openvocab.yaml --out pipeline/models/demo-openvocab

bench: $(STAMP)
	$(BIN)/python bench/memory.py

# Peak memory of a 512 x 512 x 400 int16 volume vs a smaller one (bounded by the tile).
bench-volume: $(STAMP)
	$(BIN)/python bench/volume_memory.py

clean:
	rm -rf $(VENV) demo-out demo-medical-out .pytest_cache .hypothesis
