# Two commands for a fresh machine (see README.md):
#   make book   install the pinned environment in .venv, execute every chapter, render _build/html
#   make test   unit tests + every chapter through nbmake, in fast mode (VCELL_FAST=1)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
# Overridable, e.g. TORCH_SPEC="torch==2.13.0 --index-url <CPU wheel index>" on a CI runner.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

# The venv's kernel and tools come first, whatever else the machine has installed.
export PATH := $(BIN):$(PATH)
export JUPYTER_PATH := $(abspath $(VENV))/share/jupyter
# No hub downloads in tests and builds here; chapters fall back loudly where they need weights.
export HF_HUB_OFFLINE ?= 1
export PYTHONHASHSEED := 0

.PHONY: book test install clean

install: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

test: $(STAMP)
	VCELL_FAST=1 $(BIN)/python -m pytest tests
	VCELL_FAST=1 $(BIN)/python -m pytest --nbmake --nbmake-kernel=python3 --nbmake-timeout=600 notebooks/

book: $(STAMP)
	rm -rf _build
	$(BIN)/jupyter-book build . --all -W --keep-going

clean:
	rm -rf _build .venv .pytest_cache *.egg-info
