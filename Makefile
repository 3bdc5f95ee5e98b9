# robustmsa: `make study` runs the QA-MoE search embedded; `make test` runs the suite.
# Both install the project into .venv first when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STUDY_ARGS ?=

.PHONY: help install browser study test test-unit lint format clean-study

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv and install the project editable with its test extras (idempotent)

# Re-runs only when the project's dependency files change. torch stays pinned to the CPU wheel on
# disk by constraints.txt: a bare `torch` would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt "torch==2.13.0" -e ".[test]"
	touch $(STAMP)

# Debian's chromium for the MLflow UI test, with apt-get where no Chromium is on PATH (a
# `command -v` when present). Playwright, which drives it, comes with the test extras.
browser:  ## install Chromium for the browser test where absent (idempotent)
	bash scripts/install_browser.sh

study: $(STAMP)  ## run the QA-MoE search embedded (local Ray, sqlite MLflow in this folder)
	$(PY) studies/qa_moe_search.py $(STUDY_ARGS)

# The unit tier spreads over the cores. The integration tier runs on two xdist workers in groups
# (tests/integration_groups.py): the tests that read the smoke studies in one, so that the
# studies run once; every other file a group of its own. A group runs whole in one worker, which
# takes the next when done. Each tier reports its slowest tests (--durations): the suite's
# budget is 12 minutes on 2 cores, the unit tier's 2. `-m faults` or `-m browser` runs those
# integration tests alone.
test: test-unit browser  ## run the unit tests, then the integration tests (browser included)
	$(PY) -m pytest -m integration -n 2 --dist loadgroup --durations=15

test-unit: $(STAMP)  ## run the unit tests only (no Ray, no server, browser, kernel or study script)
	$(PY) -m pytest -m "not integration" -n auto --durations=10

lint: $(STAMP)  ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)  ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean-study:  ## remove the embedded study outputs (MLflow store, artifacts, Ray results, data)
	rm -rf mlruns.db mlartifacts .robustmsa
