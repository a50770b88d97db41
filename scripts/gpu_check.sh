#!/usr/bin/env bash
# The CUDA paths in one short run (< 5 minutes), for a session that has the GPU machine.
#
# Prepare here, once (the GPU machine has torch 2.11 and Python 3.12 but not the web stack,
# and no network; MNIST's training files must travel with the tree):
#   echo /.whl/ >> .git/info/exclude; echo /.mnist/ >> .git/info/exclude
#   mkdir -p .mnist/MNIST/raw && cp ../shared/data/MNIST/raw/*.gz .mnist/MNIST/raw/
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl fastapi==0.165.0 starlette==1.10.0 \
#     uvicorn==0.54.0 httptools==0.9.0 pydantic==2.14.4 pydantic-core pydantic-settings==2.16.3 \
#     python-dotenv annotated-types typing-inspection python-multipart==0.0.34 \
#     annotated-doc
#   (pydantic-core, python-dotenv, annotated-types and typing-inspection at the versions
#   `.venv/bin/pip freeze` shows.)
# Then, with the device tool: run(command="bash scripts/gpu_check.sh", carry=[".whl", ".mnist"])
#
# It prints: the GPU; a short CUDA training (bf16 autocast, channels-last) with its epoch times;
# the export; the shipped checkpoint's metrics on CUDA; the CUDA tests (same answers as the CPU,
# half precision's agreement); the service on the GPU answering /predict and /model; model-only
# images/s on CPU and CUDA.
set -euo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PWD:/tmp/site"
fi
python3 -c 'import torch; print("torch", torch.__version__, "on", torch.cuda.get_device_name())'

echo "== training on CUDA (2 epochs, ~940 steps)"
timeout 240 python3 -m training --data-dir "${DATA_DIR:-.mnist}" --device cuda --epochs 2 \
  --out "$OUT/model" --state "$OUT/state.pt" 2>/dev/null | tee "$OUT/train.log"

echo "== the shipped checkpoint on CUDA"
python3 -m training.evaluate models/digitsum.pt --data-dir tests/data --device cuda

echo "== CUDA tests"
python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/app/test_gpu.py

echo "== the service on the GPU"
DIGITSUM_DEVICE=cuda DIGITSUM_PORT=8123 python3 -m app > "$OUT/serve.log" 2>&1 &
server=$!
for _ in $(seq 120); do
  python3 -c 'import urllib.request as u; u.urlopen("http://127.0.0.1:8123/health/ready")' \
    2>/dev/null && break
  sleep 0.5
done
python3 - <<'PY'
import io, json, time, urllib.request
import httpx
from PIL import Image
from training.data import load_split
from pathlib import Path
test = load_split(Path("tests/data/MNIST/raw"), "t10k")
print(json.dumps({k: v for k, v in httpx.get("http://127.0.0.1:8123/model").json().items()
                  if k in ("device", "version", "sha256")}))
hits, started = 0, time.perf_counter()
with httpx.Client() as client:
    for i in range(500):
        buf = io.BytesIO()
        Image.fromarray((test.images[i, 0] * 255).byte().numpy(), "L").save(buf, "PNG")
        r = client.post("http://127.0.0.1:8123/predict",
                        files={"image": ("d.png", buf.getvalue(), "image/png")},
                        data={"number": str(i % 10)})
        hits += r.json()["sum"] == int(test.labels[i]) + i % 10
print(f"500 sequential /predict on the GPU: {hits} correct sums, "
      f"{500 / (time.perf_counter() - started):.0f} req/s")
PY
kill -TERM "$server"; wait "$server" || true

echo "== model only, CPU and CUDA"
python3 -m bench.model_only --threads 16 --seconds 1
