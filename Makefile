# plait developer commands. Every target sets up .venv itself, so each one works on a
# fresh clone with only Python 3.11+ and access to PyPI.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: demo test test-llm fuzz lint bench clean browser slurm-up slurm-down docs docs-build

# A single-node Slurm for tests/hpc and examples/slurm_pipeline.py (root only).
slurm-up:
	scripts/slurm-up

slurm-down:
	scripts/slurm-down

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# Run a real example workflow (shell commands + Python functions) on the local backend.
demo: $(VENV)/.installed
	$(PY) examples/pipeline.py

# Lint, type-check and run the whole test suite. On a root machine a single-node Slurm
# is started for tests/hpc (and stopped at the end); elsewhere those tests are
# deselected and pytest's summary says why.
test: $(VENV)/.installed lint docs-build browser
	scripts/slurm-up
	@if [ "$$(id -u)" = 0 ]; then export PLAIT_REQUIRE_HPC=1; fi; \
	status=0; $(PY) -m pytest || status=$$?; scripts/slurm-down; exit $$status

# Opt-in: prompt tasks against a real inference engine (llama-cpp-python's server with a
# tiny model the test writes itself). Builds llama.cpp on first use: several minutes.
test-llm: $(VENV)/.installed
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PY) -m pip install --quiet 'llama-cpp-python[server]' gguf numpy
	$(PY) -m pytest -m slow tests/slow --timeout 600

# The differential tests with a long budget and fresh randomness (CI runs a fixed,
# seeded one): random DAGs on every backend against a plain evaluation.
FUZZ_EXAMPLES ?= 500
fuzz: $(VENV)/.installed
	PLAIT_FUZZ=1 PLAIT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest \
		tests/integration/test_differential.py --timeout 0

# The documentation site (mkdocs-material + mkdocstrings): built with --strict (any
# warning fails) by make test; served with live reload by make docs.
docs-build: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

# Headless Chromium for the report test (installed with apt-get when run as root).
browser:
	scripts/ensure-chromium

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks examples scripts
	$(VENV)/bin/ruff format --check src tests benchmarks examples scripts
	$(VENV)/bin/mypy

# Side-by-side benchmarks: plait vs raw asyncio vs radical.asyncflow, telemetry, prompts.
bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/run.py
	$(PY) benchmarks/telemetry.py
	$(PY) benchmarks/llm.py
	$(PY) benchmarks/dask_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
