# digitsum service image: the FastAPI service with the shipped model baked in.
#
#   docker build -t digitsum .                                   # CPU + CUDA (PyPI's torch wheels)
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu \
#                -t digitsum:cpu .                               # CPU only, several GB smaller
#   docker run --rm -p 8000:8000 digitsum                        # add --gpus all on a GPU host
#
# Stages: `requirements` turns pyproject.toml into a requirements file; `deps` installs the
# dependencies into /opt/venv (their own multi-GB layer, reused while the pins stay the same);
# `wheel` builds our package; `runtime` gets the venv, the model and that wheel on a clean base,
# and runs as non-root. Nothing from the build stages' pip caches reaches it.

ARG PYTHON_IMAGE=python:3.11-slim

# --- requirements: the service's pinned dependencies, without the train/dev extras -------------
FROM ${PYTHON_IMAGE} AS requirements
WORKDIR /src
COPY pyproject.toml requirements.lock ./
# torch goes in its own file so it can come from another wheel index (see TORCH_INDEX_URL).
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
open('torch.txt', 'w').write(''.join(d + '\n' for d in deps if d.startswith('torch'))); \
open('requirements.txt', 'w').write(''.join(d + '\n' for d in deps))"

# --- deps: a venv with the dependencies only ----------------------------------------------------
FROM ${PYTHON_IMAGE} AS deps
# Empty: torch and its CUDA libraries come from PyPI and the image runs on CPU and GPU hosts.
# https://download.pytorch.org/whl/cpu: a CPU-only torch, for a much smaller image.
ARG TORCH_INDEX_URL=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Copied from the stage above by content: editing pyproject.toml elsewhere (version, extras,
# tool settings) leaves these files, and so the multi-GB layer below, unchanged.
COPY --from=requirements /src/requirements.txt /src/torch.txt /src/requirements.lock /tmp/
# requirements.lock pins the whole closure (what `make lint-security` audits), so the image holds
# exactly those versions. The CPU-only torch comes alone from its index; its few dependencies then
# come from PyPI at the locked versions (the lock's CUDA packages are constraints, not installs).
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --index-url "$TORCH_INDEX_URL" --no-deps -r /tmp/torch.txt; \
    fi \
    && pip install -r /tmp/requirements.txt -c /tmp/requirements.lock

# --- wheel: our own package, built apart so a code change never touches the venv layer --------
FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- runtime ------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG UID=10001
# A fixed uid/gid so volume permissions and Kubernetes' runAsUser can name it; no home, no shell;
# --no-log-init, or a high uid makes a huge sparse /var/log/lastlog.
RUN groupadd --gid "$UID" digitsum \
    && useradd --uid "$UID" --gid digitsum --no-log-init --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin digitsum
# Layers in the order they change: the venv (pins), the model (retraining), the app (any edit).
COPY --from=deps /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DIGITSUM_HOST=0.0.0.0 \
    DIGITSUM_PORT=8000 \
    DIGITSUM_MODEL_PATH=/opt/digitsum/models/digitsum.pt
WORKDIR /opt/digitsum
# Owned by root and only readable by the service user, so the process cannot alter its model;
# --chmod because a checkpoint written by the trainer may be 0600 in the build context.
COPY --chmod=0644 models/digitsum.pt models/digitsum.json ./models/
COPY --from=wheel /wheels /tmp/wheels
# The dependencies are all in the venv already: install only our wheel, and check the set is whole.
RUN pip install --no-cache-dir --no-deps /tmp/wheels/*.whl \
    && pip check \
    && rm -rf /tmp/wheels
# Another model: mount it and point DIGITSUM_MODEL_PATH at it, e.g.
#   docker run -v "$PWD/models:/models:ro" -e DIGITSUM_MODEL_PATH=/models/other.pt digitsum
# (no VOLUME instruction: it would leave an anonymous volume behind every container).
# Numeric, so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
USER ${UID}:${UID}
EXPOSE 8000
# Readiness, with the Python the image already has (no curl). One line on purpose (some tools
# split a command's arguments on newlines): a 503 (loading, draining) or a refused connection
# raises, the hook prints one line instead of a traceback, and Python exits 1: unhealthy.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; sys.excepthook = lambda t, e, tb: print('not ready:', e); u.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('DIGITSUM_PORT', '8000'), timeout=2)"]
# Exec form: python is PID 1 and gets SIGTERM itself. The launcher runs uvicorn with proxy
# headers (DIGITSUM_FORWARDED_ALLOW_IPS), keep-alive DIGITSUM_KEEPALIVE_S (75 s, longer than a
# load balancer's usual 60 s idle timeout), and on SIGTERM: readiness 503, DIGITSUM_DRAIN_DELAY_S,
# then a graceful shutdown bounded by DIGITSUM_GRACEFUL_TIMEOUT_S.
CMD ["python", "-m", "app"]
