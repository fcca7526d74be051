# Two commands on a fresh machine (Python 3.11): `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint install clean bench screenshots docs

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=python3"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python -m mlflow_retrain.demo

test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# the inner loop: the pure and unit tests (tests/unit), no servers or subprocess cycles
test-fast: install
	$(BIN)/python -m pytest -q tests/unit

# the rings (.importlinter: each ring imports only those below it, the decision core touches no world,
# no import circle; imports inside functions count) and ruff (pyproject.toml)
lint: install
	$(BIN)/lint-imports
	$(BIN)/ruff check mlflow_retrain tests benchmarks scripts docs

bench: install
	$(BIN)/python benchmarks/bench_monitor.py
	$(BIN)/python benchmarks/bench_backtest.py --jobs 2
	$(BIN)/python benchmarks/bench_noop_cycle.py
	$(BIN)/python benchmarks/bench_small_reference.py

# the documentation site (mkdocs.yml, docs/) into site/: open site/index.html, or `$(BIN)/mkdocs serve`;
# --strict: a broken link or a page left out of nav fails (the CLI and policy references are generated)
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# docs/screenshots/*.png from a real `mlflow server` over a small demo store (needs chromium: .ci/run installs it)
screenshots: install
	$(BIN)/python scripts/ui_screenshots.py

clean:
	rm -rf $(VENV) mlflow.db mlruns mlartifacts demo-out site
