# remotecell: `make demo` runs the quickstart notebook on a local runtime; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) notebooks/run.py notebooks/quickstart.ipynb

test: setup
	$(PY) -m pytest -q

lint: setup
	$(PY) -m mypy
	$(PY) -m ruff check kernel_ext runtime tests benchmarks

bench: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache
