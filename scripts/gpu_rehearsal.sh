#!/usr/bin/env bash
# Rehearse the GPU check here, as the GPU machine would run it, less the GPU (make gpu-rehearsal).
#
#   make gpu-rehearsal                 # builds .whl/.mnist/.wrk first (make gpu-carry)
#   bash scripts/gpu_rehearsal.sh      # when they are built
#
# - Python 3.12 in a venv holding only what the GPU machine holds that we use (torch, torchvision
#   and the large packages listed in scripts/gpu_device.txt), never the project: created once in
#   $GPU_REHEARSAL_VENV (default /tmp/digitsum-gpu-rehearsal-venv) and reused while that list is
#   unchanged (the first time takes a few minutes).
# - The tree as a device call sends it (tracked and untracked-not-ignored files) plus the carried
#   folders, copied to a temporary folder, and the check run there with the machine's command
#   (bash scripts/gpu_check.sh, the wheels installed by the same pip command into a temporary
#   target), with no PYTHONPATH of ours and CUDA hidden: the CUDA stages say SKIP (no CUDA) and
#   their CPU stand-ins run.
# - Then: the check exited 0 (no stage failed), every CUDA stage said SKIP for want of CUDA, at
#   most 8 plain files came back under $OUT, and the carried set alone imports app.main and
#   training in that venv (and the venv alone does not: it really is bare).
set -euo pipefail
VENV=${GPU_REHEARSAL_VENV:-/tmp/digitsum-gpu-rehearsal-venv}
TIMEOUT_SCALE=${GPU_REHEARSAL_TIMEOUT_SCALE:-6}  # this machine: 2 shared cores, not 16 idle ones
for folder in .whl .mnist .wrk; do
  [ -f "$folder/.complete" ] || { echo "rehearsal: $folder is missing: run make gpu-carry"; exit 2; }
done

python312() {
  local candidate
  for candidate in "${PYTHON312:-}" python3.12 /root/.pyenv/versions/3.12*/bin/python3.12 \
    /usr/bin/python3.12 /usr/local/bin/python3.12; do
    [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' \
      2>/dev/null && { echo "$candidate"; return 0; }
  done
  echo "rehearsal: no Python 3.12 found (the GPU machine's); set PYTHON312" >&2
  return 1
}

key=$(md5sum scripts/gpu_device.txt | cut -c1-12)
if [ ! -f "$VENV/.ready-$key" ]; then
  echo "rehearsal: creating $VENV (torch and the device's other packages: a few minutes, once)"
  rm -rf "$VENV"
  "$(python312)" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q -r scripts/gpu_device.txt
  touch "$VENV/.ready-$key"
fi

tmp=$(mktemp -d /tmp/digitsum-gpu-rehearsal.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/tree" "$tmp/out"
git ls-files -z --cached --others --exclude-standard \
  | tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$tmp/tree"
cp -r .whl .mnist .wrk "$tmp/tree/"

bare_env=(env -i "HOME=$HOME" "PATH=$VENV/bin:/usr/local/bin:/usr/bin:/bin" "LANG=C.UTF-8"
  "CUDA_VISIBLE_DEVICES=" "TMPDIR=$tmp")
started=$SECONDS
status=0
(cd "$tmp/tree" && "${bare_env[@]}" "OUT=$tmp/out" "GPU_CHECK_SITE=$tmp/site" \
  "GPU_CHECK_WORK=$tmp/work" "GPU_CHECK_BUDGET_S=$((345 * TIMEOUT_SCALE))" \
  "GPU_CHECK_ARGS=--timeout-scale $TIMEOUT_SCALE" bash scripts/gpu_check.sh) || status=$?
wall=$((SECONDS - started))

failures=()
[ "$status" -eq 0 ] || failures+=("gpu_check.sh exited $status")
log="$tmp/out/gpu_check.log"
for stage in train-cuda eval-export-cuda serve-cuda eval-shipped-cuda model-only-cuda fuser-on-cuda; do
  grep -Eq "^$stage +SKIP +0\.0 +no CUDA$" "$log" || failures+=("$stage did not say SKIP (no CUDA)")
done
files=$(cd "$tmp/out" && find . -type f | sort)
count=$(printf '%s\n' "$files" | grep -c . || true)
[ "$count" -le 8 ] || failures+=("$count files under \$OUT (at most 8 come back)")
if find "$tmp/out" -mindepth 1 ! -type f ! -type d | grep -q . ||
  find "$tmp/out" -mindepth 3 | grep -q . ||
  find "$tmp/out" -mindepth 1 | sed "s|^$tmp/out/||" | grep -q '[^A-Za-z0-9._/-]'; then
  failures+=("\$OUT holds a link, a folder too deep or an odd name")
fi
imports="import app.main, training, training.train, training.evaluate"
(cd "$tmp/tree" && "${bare_env[@]}" "PYTHONPATH=$tmp/tree:$tmp/site" python3 -c "$imports") ||
  failures+=("the carried set does not import app.main and training")
if (cd "$tmp/tree" && "${bare_env[@]}" "PYTHONPATH=$tmp/tree" python3 -c "$imports" 2>/dev/null); then
  failures+=("the venv imports the service without the carried set: it is not bare")
fi

echo
echo "== rehearsal: gpu_check.sh took $wall s here (timeouts x$TIMEOUT_SCALE); \$OUT held $count files:"
printf '  %s\n' $files
if [ ${#failures[@]} -gt 0 ]; then
  printf 'rehearsal FAILED: %s\n' "${failures[@]}"
  exit 1
fi
echo "rehearsal passed: every stage ran or said why not, within the GPU machine's limits on \$OUT"
