# jaxbench — set-up is automatic: the first target you run creates .venv and installs the package.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SCALE  ?= default
SWEEPS ?= $(wildcard sweeps/*.toml)

.PHONY: install test test-slow sweep figures bench tpu-sweep clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

sweep: $(STAMP)
	@set -e; for f in $(SWEEPS); do $(BIN)/jaxbench sweep $$f --scale $(SCALE); done

figures: $(STAMP)
	@set -e; for d in results/*/; do [ -f $$d/meta.json ] && $(BIN)/jaxbench plot $$d; done; true

bench: $(STAMP)
	@set -e; for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f; done

clean:
	rm -rf $(VENV) .pytest_cache results/*/.chunks
