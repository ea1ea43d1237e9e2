# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.daskcap-installed
SAMPLES := data/samples
DEMO_OUT := output/demo

.PHONY: demo test venv samples clean

venv: $(STAMP)

# torch first, pinned to the CPU wheel this machine has: anything that asks
# for torch later is then satisfied and pip does not fetch CUDA builds.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

samples: $(STAMP)
	$(BIN)/python -m daskcap.samples $(SAMPLES)

demo: samples
	$(BIN)/python jobs/caption_preview.py --input $(SAMPLES) --output $(DEMO_OUT) --overwrite
	@echo "demo output: $(abspath $(DEMO_OUT))"

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) output data .pytest_cache
