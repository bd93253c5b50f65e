# `make run` serves the embedded default; `make test` sets up and runs every check.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STENCIL := $(VENV)/bin/stencil
# openapi-python-client pins typer<0.28, the server 0.29: the generator gets its own venv.
SDKGEN_VENV ?= .venv-sdkgen
export SDKGEN_VENV

# The local engine is the newest ComfyUI we can obtain (0.30.0); the ComfyUI tests run again on
# a second version, by default the spring-2024 copy (the oldest protocol the client speaks):
# `make test-comfy-alt COMFY_ALT=0.3.75` runs them on another.
COMFY_ALT ?= 2024
COMFY_ALT_PATH := .stencil/comfyui-$(COMFY_ALT)

.PHONY: setup comfyui comfyui-alt models run test test-comfy-alt lint unit openapi sdk sdk-tools \
	sdk-check clean

$(VENV)/.installed: pyproject.toml sdk/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e ".[dev]" -e sdk/python
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

test: models lint sdk-check comfyui-alt
	STENCIL_REQUIRE_COMFY=1 STENCIL_REQUIRE_SDK=1 $(PY) -m pytest -ra
	$(MAKE) test-comfy-alt

# The load test proves the platform, not the ComfyUI protocol: once, on the local engine.
test-comfy-alt: comfyui-alt
	STENCIL_REQUIRE_COMFY=1 COMFYUI_PATH=$(COMFY_ALT_PATH) $(PY) -m pytest -ra -m "comfy and not load"

unit: setup
	$(PY) -m pytest -ra -m "not comfy"

openapi: setup
	$(STENCIL) openapi
	$(STENCIL) catalog schema
	$(PY) scripts/update_goldens.py

# ---- SDKs: generated from the committed openapi.json (docs/sdk.md) -------------------------
$(SDKGEN_VENV)/.installed: sdk/requirements-gen.txt
	$(PYTHON) -m venv $(SDKGEN_VENV)
	$(SDKGEN_VENV)/bin/pip install -q -r sdk/requirements-gen.txt
	touch $@

sdk/node_modules/.installed: sdk/package.json sdk/package-lock.json sdk/typescript/package.json
	cd sdk && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

sdk-tools: $(SDKGEN_VENV)/.installed sdk/node_modules/.installed

sdk: setup sdk-tools
	$(PY) scripts/sdk.py generate

# Regenerate and fail on a diff, lint the document, type-check both clients strictly and build
# the TypeScript one (its live test runs under pytest).
sdk-check: setup sdk-tools
	$(PY) scripts/sdk.py check
	$(PY) scripts/sdk.py lint
	cd sdk/python && $(abspath $(VENV))/bin/mypy
	$(VENV)/bin/ruff check sdk/python/stencil_sdk
	cd sdk/typescript && ../node_modules/.bin/tsc -p .

clean:
	rm -rf $(VENV) $(SDKGEN_VENV) .stencil sdk/node_modules sdk/typescript/dist
