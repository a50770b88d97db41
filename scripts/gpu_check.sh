#!/usr/bin/env bash
# The CUDA paths in one short run (about 5 minutes), for a machine with an NVIDIA GPU:
# training steps on CUDA and the export, the shipped checkpoint's metrics on CUDA, the CUDA
# tests (the CPU's answers, half precision's agreement, the service on the GPU), and the
# benchmark (limit, tutorial and ours side by side, model-only on CPU and CUDA) on this machine.
#
#   bash scripts/gpu_check.sh            # writes into $OUT (default /tmp/gpu_check)
#
# Needs the project's Python packages (pip install -e '.[train,dev]'), wrk, and MNIST's training
# files in $DATA_DIR (default .mnist; torchvision downloads them where there is a network).
#
# For a GPU machine without network (this project's device tool), prepare here once:
#   printf '/.whl/\n/.mnist/\n/.wrk/\n' >> .git/info/exclude
#   mkdir -p .mnist/MNIST/raw && cp ../shared/data/MNIST/raw/*.gz .mnist/MNIST/raw/
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl fastapi==0.165.0 \
#     starlette==1.10.0 uvicorn==0.54.0 httptools==0.9.0 pydantic==2.14.4 pydantic-core==2.50.5 \
#     pydantic-settings==2.16.3 python-dotenv==1.2.4 annotated-types==0.8.0 \
#     typing-inspection==0.4.5 python-multipart==0.0.34 annotated-doc==0.0.7 anyio==4.16.0 \
#     typing-extensions==4.16.0 imagecodecs==2026.3.6
#   mkdir -p .wrk && (cd .wrk && apt-get download wrk libluajit-5.1-2 \
#     && for f in *.deb; do dpkg -x "$f" root; done && rm -f ./*.deb)
# then: run(command="bash scripts/gpu_check.sh", carry=[".whl", ".mnist", ".wrk"], timeout_s=540)
set -euo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PWD:/tmp/site"
fi
if [ -d .wrk/root ]; then
  export PATH="$PWD/.wrk/root/usr/bin:$PATH"
  export LD_LIBRARY_PATH="$PWD/.wrk/root/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c 'import torch, imagecodecs; print("torch", torch.__version__, "CUDA", torch.version.cuda,
      "on", torch.cuda.get_device_name(), "| imagecodecs", imagecodecs.__version__)'
echo "CPUs: $(nproc); wrk: $(wrk -v 2>&1 | head -1)"

echo "== training on CUDA: 2 epochs (938 steps of 128), bf16 autocast, then the export"
started=$(date +%s)
timeout 240 python3 -m training --data-dir "${DATA_DIR:-.mnist}" --device cuda --epochs 2 \
  --out "$OUT/model" --state "$OUT/state.pt" 2>/dev/null | tee "$OUT/train.log"
echo "training + export: $(($(date +%s) - started)) s"
ls -l "$OUT/model"

echo "== the shipped checkpoint on CUDA"
python3 -m training.evaluate models/digitsum.pt --data-dir tests/data --device cuda

echo "== CUDA tests"
python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/app/test_gpu.py

echo "== benchmark: server on CPUs 0-7 with the GPU, wrk on CPUs 8-11"
timeout 300 python3 -m bench --name h200 --out-dir "$OUT" --duration 5 --repeats 1 --warmup 2 \
  --model-seconds 0.5 --server-cpus 0,1,2,3,4,5,6,7 --client-cpus 8,9,10,11
