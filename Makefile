# `make run` serves the embedded default; `make test` sets up and runs every check.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STENCIL := $(VENV)/bin/stencil

.PHONY: setup comfyui models run test lint unit openapi clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

comfyui: setup
	$(STENCIL) comfyui install

models: comfyui
	$(STENCIL) models synth

run: models
	$(STENCIL) dev

lint: setup
	$(VENV)/bin/ruff check $(wildcard api engine nodes tests scripts bench deploy)
	$(VENV)/bin/mypy

test: models lint
	STENCIL_REQUIRE_COMFY=1 $(PY) -m pytest -ra

unit: setup
	$(PY) -m pytest -ra -m "not comfy"

openapi: setup
	$(STENCIL) openapi
	$(STENCIL) catalog schema
	$(PY) scripts/update_goldens.py

clean:
	rm -rf $(VENV) .stencil
