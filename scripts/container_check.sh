#!/usr/bin/env bash
# scripts/container_check.sh: build the Dockerfile and smoke-test the image without a Docker engine.
#
#   sudo scripts/container_check.sh [TAG]          (default TAG: digitsum:check)
#
# Uses ../shared/tools/container-check (buildah, chroot isolation, host network): build the image,
# start its own CMD as its own USER, wait until its HEALTHCHECK (readiness) passes, check that the
# server runs under a non-root uid and that POST /predict reads the test digit correctly, then
# send SIGTERM and expect a drained exit 0. The image listens on its default port, 8000, which
# must be free. Skips, saying why, where container-check or buildah is absent or not root.
# The first build downloads torch and its CUDA libraries (several GB): minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${1:-digitsum:check}
CC=${CONTAINER_CHECK:-../shared/tools/container-check}
PORT=8000  # the image's DIGITSUM_PORT; the HEALTHCHECK reads the same
PNG=tests/deploy/data/mnist-t10k-00000-label-7.png
DIGIT=7 NUMBER=5
HEALTH_TIMEOUT_S=180

skip() { echo "container_check: SKIPPED: $*"; exit 0; }
fail() { echo "container_check: FAILED: $*" >&2; exit 1; }

[[ -x $CC ]] || skip "$CC not found (set CONTAINER_CHECK to its path)"
((EUID == 0)) || skip "container-check needs root (buildah with chroot isolation)"
command -v buildah >/dev/null || skip "buildah is absent (apt-get install buildah debootstrap)"
[[ -f models/digitsum.pt ]] || fail "models/digitsum.pt is missing: the image bakes it in"
if python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $PORT)) != 0)"
then fail "port $PORT is in use on this host; the image's server needs it"; fi

echo "== build $TAG"
start=$(date +%s)
"$CC" build . "$TAG"
echo "built in $(($(date +%s) - start)) s; size: $(buildah images --format '{{.Size}}' "$TAG" | sed -n 1p)"

echo "== inspect"
"$CC" inspect "$TAG" | python3 -c '
import json, sys
c = json.load(sys.stdin)
print("user:", c.get("User"), "| cmd:", c.get("Cmd"), "| entrypoint:", c.get("Entrypoint"))
print("healthcheck:", (c.get("Healthcheck") or {}).get("Test"))
user = (c.get("User") or "root").split(":")[0]
sys.exit(0 if user not in ("", "root", "0") else "the image runs as root")'

echo "== health before the server runs (must fail, or the check proves nothing)"
if "$CC" health "$TAG"; then fail "the HEALTHCHECK passes with no server running"; fi

echo "== run (the image's CMD as its USER, host network)"
log=$(mktemp)
"$CC" run "$TAG" >"$log" 2>&1 &
runner=$!
cleanup() { kill -TERM "$runner" 2>/dev/null || true; wait "$runner" 2>/dev/null || true; }
trap cleanup EXIT

echo "== health (the image's HEALTHCHECK, until it passes)"
deadline=$(($(date +%s) + HEALTH_TIMEOUT_S))
until "$CC" health "$TAG" >/dev/null 2>&1; do
  kill -0 "$runner" 2>/dev/null || { cat "$log"; fail "the server exited before becoming healthy"; }
  (($(date +%s) < deadline)) || { cat "$log"; fail "not healthy after $HEALTH_TIMEOUT_S s"; }
  sleep 3
done
"$CC" health "$TAG"
echo "healthy after $((HEALTH_TIMEOUT_S - deadline + $(date +%s))) s"

pid=$(ss -Hltnp "sport = :$PORT" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | sed -n 1p)
[[ -n $pid ]] || fail "nothing listens on port $PORT"
uid=$(stat -c %u "/proc/$pid")
echo "server: pid $pid, uid $uid, $(tr '\0' ' ' <"/proc/$pid/cmdline")"
((uid != 0)) || fail "the server runs as root"

echo "== predict"
python3 - "$PORT" "$PNG" "$DIGIT" "$NUMBER" <<'PY'
import json, sys, urllib.request
port, png, digit, number = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
boundary = "containercheck"
body = (
    f'--{boundary}\r\nContent-Disposition: form-data; name="number"\r\n\r\n{number}\r\n'
    f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="digit.png"\r\n'
    "Content-Type: image/png\r\n\r\n"
).encode() + open(png, "rb").read() + f"\r\n--{boundary}--\r\n".encode()
request = urllib.request.Request(
    f"http://127.0.0.1:{port}/predict", data=body, method="POST",
    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
)
with urllib.request.urlopen(request, timeout=10) as response:
    answer = json.load(response)
print("POST /predict ->", response.status, json.dumps(answer))
if (answer["digit"], answer["sum"]) != (digit, digit + number):
    sys.exit(f"wrong answer: expected digit {digit}, sum {digit + number}")
PY

# SIGTERM to the server itself, as `docker stop` does to the CMD's process (container-check's
# runner, signalled, stops its container with SIGKILL, which would skip the drain).
echo "== stop (SIGTERM to pid $pid: drain, then exit)"
kill -TERM "$pid"
code=0
wait "$runner" || code=$?
trap - EXIT
grep -E '"(draining|stopped)"|Finished server process' "$log" || true
((code == 0)) || { tail -n 20 "$log"; fail "the server exited with $code after SIGTERM"; }
echo "container_check: OK: $TAG builds, runs as uid $uid, becomes healthy, answers /predict, exits 0"
