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

# --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set (this machine), nothing caches .pyc, so
# every process (each Dagster step is one) compiled torch, MONAI, GX and dagster from source:
# seconds per import, measured 17.9 s vs 6.7-9.0 s for monai.transforms under load.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install --python $(BIN)/python $(UV_FIND_LINKS) --compile-bytecode -e '.[dev]'
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
	@$(MAKE) --no-print-directory -j2 lint labelstudio tools
	$(BIN)/pytest -q -p no:cacheprovider -n $(WORKERS)

# the quick loop while editing: tests marked slow (more than a few seconds) are left out
test-fast: setup labelstudio
	$(BIN)/pytest -q -p no:cacheprovider -n $(WORKERS) -m "not slow"

test-unit: setup
	$(BIN)/pytest -q -m "not integration"

test-integration: setup
	$(BIN)/pytest -q -m integration

demo: setup labelstudio ocr pacs-tools
	$(BIN)/python -m pipelines.demo

# the demo on the cluster profile in its own home: PostgreSQL, Redis, the local S3 endpoint and two
# Celery workers started, the chain run on them (the release on S3), everything stopped again
.PHONY: cluster-demo
cluster-demo: export MEDCURATE_HOME := $(CURDIR)/.medcurate-cluster
cluster-demo: export DAGSTER_HOME := $(CURDIR)/.medcurate-cluster/dagster
cluster-demo: setup labelstudio ocr pacs-tools cluster-tools
	$(BIN)/python -m pipelines.cluster_demo

# Dagster (127.0.0.1:3000), Label Studio (:8080, started unless running) and the figures server
# (:3001, the plots in Dagster's metadata) together; Ctrl-C stops them (see medcurate/services/ui.py)
ui: setup labelstudio pacs-tools
	@$(BIN)/medcurate ui

.PHONY: labelstudio
labelstudio: setup  # the annotation server in its own venv + a pre-migrated database
	@$(BIN)/medcurate labelstudio install

# Debian's programs the tests drive: chromium (tests/browser: playwright cannot download its own
# browser here), dicom3tools' dciodvfy (IOD validation of de-identified objects) and tesseract
# (OCR of burned-in text). apt-get needs root: sudo when not root. One apt-get for all that miss.
# the demo needs only tesseract: without it, images that must be OCR-read are quarantined
OCR_TOOLS := /usr/bin/tesseract:tesseract-ocr \
  /usr/share/tesseract-ocr/5/tessdata/eng.traineddata:tesseract-ocr-eng
# the PACS that the tests, the demo and `make ui` start (medcurate pacs): Orthanc + DICOMweb
PACS_TOOLS := /usr/sbin/Orthanc:orthanc \
  /usr/share/orthanc/plugins/libOrthancDicomWeb.so:orthanc-dicomweb
# the cluster profile (make cluster-demo): Debian 12's PostgreSQL 15 (Dagster's storage) and Redis
# (Celery's broker)
PG_TOOLS := /usr/lib/postgresql/15/bin/postgres:postgresql
REDIS_TOOLS := /usr/bin/redis-server:redis-server
CLUSTER_TOOLS := $(PG_TOOLS) $(REDIS_TOOLS)
DEBIAN_TOOLS := /usr/bin/chromium:chromium /usr/bin/dciodvfy:dicom3tools $(OCR_TOOLS) $(PACS_TOOLS) \
  $(CLUSTER_TOOLS)
define apt_install
	@missing=; for t in $(1); do test -e "$${t%%:*}" || missing="$$missing $${t##*:}"; done; \
	test -z "$$missing" || { \
	  if [ "$$(id -u)" = 0 ]; then sudo=; elif command -v sudo >/dev/null; then sudo=sudo; else \
	    echo "make $@: missing Debian packages:$$missing; install them as root" \
	      "(apt-get install -y$$missing): make $@ needs them" >&2; exit 1; fi; \
	  echo "installing Debian packages:$$missing"; \
	  $$sudo apt-get update -qq && \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || { \
	    echo "make $@: apt-get could not install$$missing" >&2; exit 1; }; }
endef
.PHONY: tools ocr browser screenshots pacs-tools cluster-tools
tools:
	$(call apt_install,$(DEBIAN_TOOLS))
ocr:
	$(call apt_install,$(OCR_TOOLS))
pacs-tools:
	$(call apt_install,$(PACS_TOOLS))
cluster-tools:
	$(call apt_install,$(CLUSTER_TOOLS))
browser: tools

# the README's pictures (docs/img/*.png), taken by the browser tests
screenshots: setup labelstudio browser
	MEDCURATE_SCREENSHOTS=$(CURDIR)/docs/img $(BIN)/pytest -q -p no:cacheprovider tests/browser

# every benchmark with its defaults but the end-to-end one (60 and 240 patients: an hour or more)
bench: setup labelstudio pacs-tools cluster-tools
	@for b in bench/*.py; do test $$b = bench/e2e.py && continue; echo "== $$b"; \
	  $(BIN)/python $$b || exit 1; done

# the whole chain through Dagster for 60 and 240 patients, plus a second batch of 10% more
# (E2E_ARGS=--quick: 12 patients, minutes)
.PHONY: bench-e2e
bench-e2e: setup labelstudio
	$(BIN)/python bench/e2e.py $(E2E_ARGS)

clean:
	rm -rf $(MEDCURATE_HOME) .medcurate-cluster .pytest_cache .mypy_cache .ruff_cache
