# remotecell: `make demo` runs the quickstart notebook on a local runtime; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The JupyterLab side panel: built here, found by JupyterLab through the venv's share/jupyter.
LABEXT := labextension/build/labextension
LABEXT_LINK := $(VENV)/share/jupyter/labextensions/remotecell
LABEXT_SOURCES := labextension/package.json labextension/tsconfig.json $(wildcard labextension/src/*.ts labextension/style/*)
CHROMIUM ?= /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: setup demo test test-unit lint bench clean browser node sandbox

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	SKIP_JUPYTER_BUILDER=1 $(PY) -m pip install -q -e '.[dev]'  # the panel: built and linked below
	touch $@

# Node.js builds the side panel: Debian's when the machine has none.
node:
	@command -v npm >/dev/null || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q nodejs npm)

labextension/node_modules/.installed: labextension/package.json labextension/package-lock.json | node
	cd labextension && npm ci --no-audit --no-fund
	touch $@

# build-labextension is what `jupyter labextension build` runs; it needs the installed JupyterLab's staging dir.
$(LABEXT)/package.json: $(VENV)/.installed labextension/node_modules/.installed $(LABEXT_SOURCES)
	cd labextension && node_modules/.bin/tsc
	cd labextension && node_modules/.bin/build-labextension --core-path \
		"$$($(abspath $(PY)) -c 'import jupyterlab, os; print(os.path.join(os.path.dirname(jupyterlab.__file__), "staging"))')" .
	mkdir -p $(dir $(LABEXT_LINK))
	rm -rf $(LABEXT_LINK)  # an editable install may have copied an older build here (pyproject shared-data)
	ln -s $(abspath $(LABEXT)) $(LABEXT_LINK)
	touch $@

# Containers run in bubblewrap sandboxes (unprivileged, ~3 ms a start): Debian's when the machine has none.
# Images with apt_install/run_commands/run_function get a root filesystem made with mmdebstrap (fakechroot: for
# a runtime that does not run as root) and built over an overlay in a namespace of unshare (util-linux).
sandbox:
	@command -v bwrap >/dev/null || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q bubblewrap)
	@(command -v mmdebstrap && command -v fakechroot) >/dev/null || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q mmdebstrap fakechroot)

setup: $(VENV)/.installed $(LABEXT)/package.json sandbox

# The panel's browser test drives Debian's chromium (Playwright's own download is not used).
browser:
	@test -x $(CHROMIUM) || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium)

demo: setup
	$(PY) notebooks/run.py notebooks/quickstart.ipynb

test: lint browser
	cd labextension && npm test --silent
	$(PY) -m pytest -q

# No runtime, no kernel: seconds.
test-unit: $(VENV)/.installed
	$(PY) -m pytest -q tests/unit

# The panel's TypeScript: ESLint and Prettier here, its unit tests (vitest, jsdom) in `make test` (seconds).
lint: setup
	$(PY) -m mypy
	$(PY) -m ruff check kernel_ext runtime tests benchmarks
	cd labextension && npm run --silent lint

bench: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache labextension/node_modules labextension/lib labextension/build
