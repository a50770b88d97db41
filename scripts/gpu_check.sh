#!/usr/bin/env bash
# The GPU check: training on CUDA, the export scored on CUDA and on the CPU against its card,
# the service on the GPU under load, the CUDA tests with the answers that change between CPU,
# CUDA fp32, bf16 and fp16, and the model alone at batch 1..1024; under 6 minutes in all, every
# stage with its own timeout, one log, and a PASS/FAIL/SKIP table with the figures at the end.
#
#   bash scripts/gpu_check.sh        # results in $OUT (default /tmp/gpu_check)
#
# Made for the project's GPU machine (Python 3.12 with torch, no network): prepare with
# `make gpu-carry` here, then run it there as docs/gpu-check.md says. `make gpu-rehearsal` runs
# this script here, in a venv holding only what that machine holds, where the CUDA stages say
# SKIP (no CUDA) and tiny CPU stand-ins of them run instead.
#
# No `set -e` on purpose: a stage that fails is reported and the next one runs.
# Files under $OUT (at most 8 come back from the GPU machine): gpu_check.log, gpu_check.json,
# bench-gpu.json, bench-gpu.md, and the CUDA training's digitsum.pt and digitsum.json.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check}
SITE=${GPU_CHECK_SITE:-/tmp/site}           # where the carried wheels are installed
WORK=${GPU_CHECK_WORK:-/tmp/gpu_check_work}  # scratch (training state, plots, bench): not brought back
BUDGET_S=${GPU_CHECK_BUDGET_S:-345}         # every stage inside this, setup included
mkdir -p "$OUT"
rm -rf "$WORK" && mkdir -p "$WORK"

check() {
  local started=$SECONDS
  echo "== setup: $(date -u +%FT%TZ) in $PWD"
  export PYTHONPATH="$PWD"
  if [ -d .whl ]; then
    # The GPU machine's recipe (docs/gpu-check.md): no index, no dependency resolution.
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" .whl/*.whl || echo "setup: installing .whl failed (the imports stage says what is missing)"
    export PYTHONPATH="$PWD:$SITE"
  else
    echo "setup: no .whl folder: the packages installed here are used"
  fi
  if [ -x .wrk/root/usr/bin/wrk ]; then
    # Only wrk loads the carried LuaJIT and OpenSSL: a wrapper sets its library path.
    mkdir -p "$WORK/bin"
    printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' \
      "$PWD/.wrk/root/usr/lib/x86_64-linux-gnu" "$PWD/.wrk/root/usr/bin/wrk" >"$WORK/bin/wrk"
    chmod +x "$WORK/bin/wrk"
    export PATH="$WORK/bin:$PATH"
  fi
  local data=${DATA_DIR:-}
  if [ -z "$data" ]; then
    for candidate in .mnist ../shared/data data; do
      [ -f "$candidate/MNIST/raw/train-images-idx3-ubyte.gz" ] && data=$candidate && break
    done
  fi
  echo "setup: python3 $(python3 -c 'import sys; print(sys.version.split()[0])'), $(nproc) CPUs," \
    "MNIST in ${data:-nowhere}, wrk: $(wrk -v 2>&1 | head -1 || true)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -2
  echo "setup: $((SECONDS - started)) s"
  python3 scripts/gpu_check.py --out "$OUT" --work "$WORK" --data-dir "${data:-.mnist}" \
    --budget $((BUDGET_S - (SECONDS - started))) ${GPU_CHECK_ARGS:-}
}

check 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
