# The two commands of the README: `make run` and `make test`. Both set up .venv on first use.
# `make run` installs only what serving needs; `make test` (and lint, bench) add the dev extra
# (the OpenAI and LangGraph backends, pytest, ruff, mypy, Playwright, picows).
# Each stamp is keyed on pyproject.toml's checksum, so a changed dependency list reinstalls.
PYTHON ?= python3
VENV := .venv
CHECKSUM := $(shell cksum pyproject.toml | cut -d' ' -f1)
RUN_STAMP := $(VENV)/.installed-run-$(CHECKSUM)
DEV_STAMP := $(VENV)/.installed-dev-$(CHECKSUM)

.PHONY: run test lint bench setup

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e .
	rm -f $(VENV)/.installed-run-* && touch $(RUN_STAMP)

# The dev extra includes the runtime dependencies: it satisfies `make run` too.
$(DEV_STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(DEV_STAMP) $(RUN_STAMP)

setup: $(DEV_STAMP)

run: $(RUN_STAMP)
	$(VENV)/bin/dari serve $(ARGS)

test: $(DEV_STAMP)
	scripts/test.sh

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

bench: $(DEV_STAMP)
	$(VENV)/bin/python bench/run.py $(ARGS)
