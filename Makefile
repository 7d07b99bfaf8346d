# Atelier: train (PyTorch) -> export (ONNX) -> serve (BentoML on ONNX Runtime).
# Every target installs what it needs into .venv on first use.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PROFILE ?= quick
DATASET ?= mnist
RUNS ?= runs
EXPORTS ?= exports
STYLES_DIR ?=
CONTENT_DIR ?=
PORT ?= 3000
PYTHON ?= python3

VENV := .venv
PY := $(VENV)/bin/python
export BENTOML_DO_NOT_TRACK := true
export PYTHONPATH := $(CURDIR)

.PHONY: help setup browser train train-gan train-style export serve test lint format smoke bench bench-train soak report clean

help:
	@echo "make train export serve   train on the embedded data, export to ONNX, serve on :$(PORT)"
	@echo "make test                 lint, then the test suite (installs Chromium for the playground's browser tests)"
	@echo "make lint | format        ruff's checks and format check (pyproject.toml) | apply ruff's fixes and format"
	@echo "make smoke | bench        the whole path in miniature | latency measurements"
	@echo "make bench-train          style training throughput in 1 and N processes (torchrun), scaling efficiency"
	@echo "make soak                 mixed valid and hostile load, then a burst of large uploads (CLIENTS=64 DURATION=180)"
	@echo "make report               style quality: fast model vs optimisation reference vs peer"
	@echo "variables: PROFILE=quick|full DATASET=mnist|folder:PATH RUNS=$(RUNS) EXPORTS=$(EXPORTS) STYLES_DIR= CONTENT_DIR= PORT=$(PORT)"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.service: requirements-service.txt | $(VENV)/bin/python
	$(PY) -m pip install -q -r requirements-service.txt
	@touch $@

$(VENV)/.training: requirements-training.txt $(VENV)/.service
	$(PY) -m pip install -q -r requirements-training.txt
	@touch $@

$(VENV)/.dev: requirements-dev.txt requirements-bench.txt $(VENV)/.training
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -r requirements-bench.txt
	@touch $@

setup: $(VENV)/.dev browser

# Chromium and its driver (Debian packages) for the playground's browser tests; Selenium drives
# the system browser, so nothing is downloaded at test time.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing chromium and chromium-driver (Debian) for the playground's browser tests"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    --no-install-recommends chromium chromium-driver >/dev/null; } || \
	  echo "warning: could not install chromium; the browser tests will fail until: sudo apt-get install chromium chromium-driver"

train: train-gan train-style

train-gan: $(VENV)/.training
	$(PY) -m training.gan.train --profile $(PROFILE) --dataset "$(DATASET)" --runs-root "$(RUNS)"

train-style: $(VENV)/.training
	$(PY) -m training.style.train --profile $(PROFILE) --runs-root "$(RUNS)" $(if $(CONTENT_DIR),--content-dir "$(CONTENT_DIR)")

export: $(VENV)/.training
	$(PY) -m training.export --runs-root "$(RUNS)" --out "$(EXPORTS)" $(if $(STYLES_DIR),--styles-dir "$(STYLES_DIR)")

serve: $(VENV)/.service
	ATELIER_EXPORTS="$(EXPORTS)" $(VENV)/bin/bentoml serve service.service:Atelier --port $(PORT)

test: lint $(VENV)/.dev browser
	$(PY) -m pytest

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

smoke: $(VENV)/.dev
	$(PY) -m bench.smoke

bench: $(VENV)/.dev
	$(PY) -m bench.bench --exports "$(EXPORTS)"

bench-train: $(VENV)/.training
	$(PY) -m bench.bench_train

CLIENTS ?= 64
DURATION ?= 180
soak: $(VENV)/.dev
	$(PY) -m bench.soak --exports "$(EXPORTS)" --clients $(CLIENTS) --duration $(DURATION)
	$(PY) -m bench.upload_burst --exports "$(EXPORTS)" --clients $(CLIENTS)

report: $(VENV)/.dev
	$(PY) -m training.style.report --exports "$(EXPORTS)" --out reports/style --peer

clean:
	rm -rf $(EXPORTS)/*.onnx $(EXPORTS)/*.npz $(EXPORTS)/manifest.json $(EXPORTS)/presets .pytest_cache
