# EdgeServe: two commands do all of the set-up on a fresh machine.
#   make dev    the edge in wrangler dev on http://127.0.0.1:8787, serving the default small
#               model from the WASM runtime (no GPU, no pod needed)
#   make test   every test of every component
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python

.PHONY: dev test test-node test-python deps models wasm seed clean

deps: node_modules/.stamp $(VENV)/.stamp models

node_modules/.stamp: package.json package-lock.json shared/package.json workers/package.json kernels-wasm/package.json test/package.json
	npm ci --no-audit --no-fund
	touch $@

$(VENV)/.stamp: gpu-backend/requirements.txt gpu-backend/pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r gpu-backend/requirements.txt
	$(VPY) -m pip install --quiet --no-deps -e gpu-backend
	touch $@

models:
	./scripts/fetch-models.sh

# The Worker bundles the kernels' .wasm at build time (workerd compiles no WASM at run time).
wasm: node_modules/.stamp
	npm run -w kernels-wasm build

# Weights and tokenizers go into the local R2 bucket that wrangler dev serves.
seed: node_modules/.stamp models
	./kernels-wasm/scripts/seed-r2.sh

dev: deps wasm seed
	npm run -w workers dev

test: deps test-node test-python

test-node: node_modules/.stamp wasm
	npm test
	# after the tests: their global setup writes the tokenizer JSON that workers/test imports
	npm run -w workers typecheck

test-python: $(VENV)/.stamp
	cd gpu-backend && ../$(VPY) -m pytest -q

clean:
	rm -rf node_modules */node_modules $(VENV) .wrangler workers/.wrangler
