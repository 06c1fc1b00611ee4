# medcurate: one command each for a fresh clone.  `make demo`, `make test`, `make ui`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export MEDCURATE_HOME ?= $(CURDIR)/.medcurate
# Dagster, great-expectations and Label Studio must not phone home.
export DAGSTER_HOME := $(MEDCURATE_HOME)/dagster
export GX_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
# Wheels that lie on this machine's disk (torch's CPU build); empty elsewhere.
FIND_LINKS := $(shell $(PY) -m pip config get global.find-links 2>/dev/null)
UV_FIND_LINKS := $(if $(FIND_LINKS),--find-links $(FIND_LINKS),)

.PHONY: setup lint format test test-fast test-unit test-integration demo ui bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install --python $(BIN)/python $(UV_FIND_LINKS) -e '.[dev]'
	touch $@

# init-home also makes restricted/, dagster/ and labelstudio/ owner-only when an older version left
# them open (it says so on stderr); every other command refuses to run on such a home.
setup: $(VENV)/.installed
	@$(BIN)/medcurate init-home --quiet

# mypy checks every room (medcurate, annotation, quality, assets, pipelines: [tool.mypy] packages)
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# pytest workers (pytest-xdist): each has its own Label Studio and homes; 2 halves the suite on 2 cores
WORKERS ?= 2

# everything: lint, then every test (the slow ones and those that start servers included).
# Linting (CPU) and installing Label Studio (mostly disk) overlap; a lint failure still stops it.
test: setup
	@$(MAKE) --no-print-directory -j2 lint labelstudio
	$(BIN)/pytest -q -p no:cacheprovider -n $(WORKERS)

# the quick loop while editing: tests marked slow (more than a few seconds) are left out
test-fast: setup labelstudio
	$(BIN)/pytest -q -p no:cacheprovider -n $(WORKERS) -m "not slow"

test-unit: setup
	$(BIN)/pytest -q -m "not integration"

test-integration: setup
	$(BIN)/pytest -q -m integration

demo: setup labelstudio
	$(BIN)/python -m pipelines.demo

ui: setup labelstudio
	@$(BIN)/medcurate labelstudio start
	@echo "Dagster UI on http://127.0.0.1:3000 (Ctrl-C stops it)"
	@# after `make demo`, runs use the demo's salt unless MEDCURATE_DEID_SALT is set
	@MEDCURATE_DEID_SALT="$${MEDCURATE_DEID_SALT:-$$(cat $(MEDCURATE_HOME)/restricted/demo-salt 2>/dev/null)}" \
	  env --default-signal=INT,TERM $(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

.PHONY: labelstudio
labelstudio: setup  # the annotation server in its own venv + a pre-migrated database
	@$(BIN)/medcurate labelstudio install

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(MEDCURATE_HOME) .pytest_cache .mypy_cache .ruff_cache
