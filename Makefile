# `make run` serves the embedded default; `make test` sets up and runs every check.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STENCIL := $(VENV)/bin/stencil

# The local engine is the newest ComfyUI we can obtain (0.30.0); the ComfyUI tests run again on
# a second version, by default the spring-2024 copy (the oldest protocol the client speaks):
# `make test-comfy-alt COMFY_ALT=0.3.75` runs them on another.
COMFY_ALT ?= 2024
COMFY_ALT_PATH := .stencil/comfyui-$(COMFY_ALT)

.PHONY: setup comfyui comfyui-alt models run test test-comfy-alt lint unit openapi clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

comfyui: setup
	$(STENCIL) comfyui install

comfyui-alt: setup
	COMFYUI_PATH=$(COMFY_ALT_PATH) $(STENCIL) comfyui install --version $(COMFY_ALT)

models: comfyui
	$(STENCIL) models synth

run: models
	$(STENCIL) dev

lint: setup
	$(VENV)/bin/ruff check $(wildcard api engine nodes tests scripts bench deploy)
	$(VENV)/bin/mypy

test: models lint comfyui-alt
	STENCIL_REQUIRE_COMFY=1 $(PY) -m pytest -ra
	$(MAKE) test-comfy-alt

test-comfy-alt: comfyui-alt
	STENCIL_REQUIRE_COMFY=1 COMFYUI_PATH=$(COMFY_ALT_PATH) $(PY) -m pytest -ra -m comfy

unit: setup
	$(PY) -m pytest -ra -m "not comfy"

openapi: setup
	$(STENCIL) openapi
	$(STENCIL) catalog schema
	$(PY) scripts/update_goldens.py

clean:
	rm -rf $(VENV) .stencil
