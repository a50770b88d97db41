# digitsum: `make serve` starts the service on the shipped model; `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The venv is installed against requirements.lock (the service's whole dependency closure, as
# pinned and audited: see lint-security), so a fresh machine gets the versions the lock names
# and not whatever the registry released since; either file changing reinstalls.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | md5sum | cut -c1-12)
DATA_DIR ?= data

.PHONY: install serve test lint lint-python typecheck pytest train evaluate bench clean field-data field-eval fuzz

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip==26.3
	$(PY) -m pip install -q -c requirements.lock -e '.[train,dev]'
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

# The image fuzzers at length (make test runs them bounded): prepare_image on generated and
# corrupted files of every shape, mode and format, then the live service with hostile and good
# images in the same batches. docs/reliability.md has a run's figures.
FUZZ_EXAMPLES ?= 1000
fuzz: $(STAMP)
	DIGITSUM_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -p no:cacheprovider --durations=0 \
		-o addopts="-ra --strict-markers --strict-config" --timeout 3600 --hypothesis-show-statistics \
		tests/app/test_degenerate.py tests/reliability/test_fuzz_service.py -k fuzz

train: $(STAMP)
	$(PY) -m training --data-dir $(DATA_DIR) $(TRAIN_ARGS)

evaluate: $(STAMP)
	$(PY) -m training.evaluate models/digitsum.pt --data-dir $(DATA_DIR)

# The field test set (docs/field-set.md): photographed and drawn digits that are not MNIST, and
# images with no digit; the held-out split needs Debian's handwriting fonts (the error says which).
FIELD_DIR ?= $(DATA_DIR)/field
field-data: $(STAMP)
	nice -n 10 $(PY) -m training.fieldset --out $(FIELD_DIR) $(FIELD_ARGS)

# The photo pipeline's regression set (tests/data/regression, a few MB, committed): new images
# and their answers recorded. `make test` checks them (tests/app/test_pipeline_regression.py).
.PHONY: regression-set
regression-set: $(STAMP)
	nice -n 10 $(PY) -m training.pipeline_regression --make

# The service's own path (app.imaging + app.inference) on the held-out split, per scene.
field-eval: $(STAMP)
	$(PY) -m training.field_eval --field-dir $(FIELD_DIR) --split heldout --model models/digitsum.pt $(FIELD_EVAL_ARGS)

# LitServe, a yardstick only: installed once per lock, beside the main install (whose rule
# removes this stamp with its own when either file changes).
BENCH_STAMP := $(STAMP)-bench
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -c requirements.lock -e '.[bench]'
	touch $@

# Side-by-side load benchmark (needs wrk); results land in bench/results/. BENCH_ARGS=--quick for a smoke run.
# Then 12 MP phone photos (JPEG, HEIC) against the 28x28 PNG: prepare_image and POST /predict p50.
bench: $(BENCH_STAMP)
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
# rewrites it, and a stale lock fails here). The install honours it as constraints: to move a
# pin, or a dependency of pyproject.toml, change or delete its line here, then
# `make requirements.lock`. scripts/audit_requirements.py runs pip-audit on it,
# and where the registry serves no per-release data (so pip-audit skips everything) reads PyPI's
# per-project advisory data for pins at the latest release. It fails on any known vulnerability,
# on the packages that parse requests and images going unaudited, or when nothing could be
# audited.
SECURITY_CRITICAL := pillow pillow-heif opencv-python-headless python-multipart starlette fastapi
.PHONY: lint-security
requirements.lock: pyproject.toml $(STAMP)
	$(PY) scripts/lock_requirements.py > $@

lint-security: $(STAMP)
	$(PY) scripts/lock_requirements.py --check requirements.lock
	$(PY) scripts/audit_requirements.py requirements.lock $(SECURITY_CRITICAL:%=--require %)

# The GPU check (scripts/gpu_check.sh, docs/gpu-check.md). `make gpu-carry` builds what travels
# to the GPU machine into ignored folders: .whl (the wheels it lacks, for its Python 3.12;
# scripts/gpu_wheels.txt lists them), .mnist (MNIST's files, from DATA_DIR or ../shared/data) and
# .wrk (wrk unpacked from Debian's package). `make gpu-rehearsal` runs the check here as that
# machine would (a venv holding only what it holds, the tree copied, no CUDA).
# `make gpu-wheels-list` rewrites the two lists from this venv's versions.
GPU_PLATFORMS := manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
	manylinux2014_x86_64 manylinux1_x86_64
MNIST_FROM ?= $(firstword $(wildcard $(DATA_DIR)/MNIST/raw ../shared/data/MNIST/raw) \
	$(DATA_DIR)/MNIST/raw)
CARRY_LIMIT_MIB := 56
.PHONY: gpu-wheels-list gpu-carry gpu-rehearsal

gpu-wheels-list: $(STAMP)
	$(PY) scripts/gpu_wheels.py > scripts/gpu_wheels.txt
	$(PY) scripts/gpu_wheels.py --device > scripts/gpu_device.txt

.whl/.complete: scripts/gpu_wheels.txt
	rm -rf .whl && mkdir -p .whl
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp $(GPU_PLATFORMS:%=--platform %) -d .whl -r scripts/gpu_wheels.txt
	touch $@

.mnist/.complete:
	@test -f $(MNIST_FROM)/train-images-idx3-ubyte.gz || \
		{ echo "MNIST's files are not in $(MNIST_FROM): set DATA_DIR"; exit 1; }
	rm -rf .mnist && mkdir -p .mnist/MNIST/raw
	cp $(MNIST_FROM)/*-ubyte.gz .mnist/MNIST/raw/
	touch $@

# wrk with the libraries it links that a minimal image may lack (LuaJIT, OpenSSL 3); only wrk
# is pointed at them (scripts/gpu_check.sh writes a wrapper), nothing else on the machine.
WRK_DEBS := wrk libluajit-5.1-2 libssl3
.wrk/.complete:
	rm -rf .wrk && mkdir -p .wrk
	cd .wrk && { apt-get download $(WRK_DEBS) 2>/dev/null || \
		{ apt-get update -qq && apt-get download $(WRK_DEBS); }; } && \
		for f in *.deb; do dpkg -x "$$f" root; done && rm -f ./*.deb
	cd .wrk/root/usr && rm -rf share lib/x86_64-linux-gnu/engines-3 lib/x86_64-linux-gnu/ossl-modules
	touch $@

# The tree (tracked files) and the three folders must fit the 64 MiB a device call carries.
gpu-carry: .whl/.complete .mnist/.complete .wrk/.complete
	@carried=$$(du -sk .whl .mnist .wrk | awk '{s += $$1} END {print int(s / 1024)}'); \
	tree=$$(git ls-files -z | xargs -0 du -ck 2>/dev/null | tail -1 | awk '{print int($$1 / 1024)}'); \
	echo "gpu-carry: .whl $$(du -sh .whl | cut -f1), .mnist $$(du -sh .mnist | cut -f1)," \
		".wrk $$(du -sh .wrk | cut -f1); with the tree ~$$((carried + tree)) MiB of 64"; \
	test $$((carried + tree)) -le $(CARRY_LIMIT_MIB) || \
		{ echo "gpu-carry: over $(CARRY_LIMIT_MIB) MiB"; exit 1; }

gpu-rehearsal: gpu-carry
	bash scripts/gpu_rehearsal.sh
