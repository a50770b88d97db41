# digitsum: `make serve` starts the service on the shipped model; `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-12)
DATA_DIR ?= data

.PHONY: install serve test lint lint-python typecheck pytest train evaluate bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip==26.3
	$(PY) -m pip install -q -e '.[train,dev]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

serve: $(STAMP)
	$(PY) -m app

# Python style, then the deployment files, then known vulnerabilities in the pinned dependencies.
lint: lint-python lint-deploy lint-security

lint-python: $(STAMP)
	$(VENV)/bin/ruff check app training tests bench scripts
	$(VENV)/bin/ruff format --check app training tests bench scripts

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

train: $(STAMP)
	$(PY) -m training --data-dir $(DATA_DIR) $(TRAIN_ARGS)

evaluate: $(STAMP)
	$(PY) -m training.evaluate models/digitsum.pt --data-dir $(DATA_DIR)

# Side-by-side load benchmark (needs wrk); results land in bench/results/. BENCH_ARGS=--quick for a smoke run.
# Then 12 MP phone photos (JPEG, HEIC) against the 28x28 PNG: prepare_image and POST /predict p50.
bench: $(STAMP)
	$(PY) -m bench $(BENCH_ARGS)
	$(PY) -m bench.photos

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache runs

# Deployment files: hadolint on the Dockerfile (info and up fail), and the Kubernetes manifests
# against the API schemas kubernetes-validate ships offline, oldest and newest release it knows,
# with unknown fields rejected (--strict).
K8S_MANIFESTS := $(wildcard deploy/k8s/*.yaml deploy/k8s/gpu/*.yaml)
.PHONY: lint-deploy
lint-deploy: $(STAMP)
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/kubernetes-validate --strict --quiet -k 1.25.0 $(K8S_MANIFESTS)
	$(VENV)/bin/kubernetes-validate --strict --quiet -k 1.37.0 $(K8S_MANIFESTS)

# Known vulnerabilities in what the service ships: requirements.lock is the closure of
# pyproject's `dependencies` as installed (scripts/lock_requirements.py; `make requirements.lock`
# rewrites it, and a stale lock fails here). scripts/audit_requirements.py runs pip-audit on it,
# and where the registry serves no per-release data (so pip-audit skips everything) reads PyPI's
# per-project advisory data for pins at the latest release. It fails on any known vulnerability,
# on the four packages that parse requests going unaudited, or when nothing could be audited.
SECURITY_CRITICAL := pillow python-multipart starlette fastapi
.PHONY: lint-security
requirements.lock: pyproject.toml $(STAMP)
	$(PY) scripts/lock_requirements.py > $@

lint-security: $(STAMP)
	$(PY) scripts/lock_requirements.py --check requirements.lock
	$(PY) scripts/audit_requirements.py requirements.lock $(SECURITY_CRITICAL:%=--require %)
