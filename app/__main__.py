"""python -m app  (what `make serve` and the Docker image run)

Starts uvicorn (uvloop + httptools) on app.main:app with the DIGITSUM_* settings, one process
or DIGITSUM_WORKERS processes (one model each; their metrics summed through a shared folder).
A bad setting or model file stops it before the port is bound, with a message and exit status 2.
On SIGTERM it drains (app/shutdown.py) and exits 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from pydantic import ValidationError
from uvicorn.supervisors import Multiprocess

from app.config import Settings
from app.errors import ModelLoadError
from app.inference import load_model, resolve_device
from app.logs import configure_logging, flush_logging
from app.metrics import MULTIPROC_DIR_ENV

log = logging.getLogger("digitsum")


def _setting_errors(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        if not error["loc"]:  # settings that do not work together: the message names them
            lines.append(f"  {error['msg'].removeprefix('Value error, ')}")
            continue
        name = "DIGITSUM_" + "_".join(str(p) for p in error["loc"]).upper()
        lines.append(f"  {name}: {error['msg']} (got {error.get('input')!r})")
    return "\n".join(lines)


@contextlib.contextmanager
def shared_metrics_dir() -> Iterator[Path]:
    """The folder where the workers write their metrics, for /metrics to sum (app/metrics.py):
    PROMETHEUS_MULTIPROC_DIR if the operator set it, emptied first (values of an earlier run
    would be added in), else a fresh temporary folder, removed at the end."""
    given = os.environ.get(MULTIPROC_DIR_ENV)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="digitsum-metrics-") as made:
        os.environ[MULTIPROC_DIR_ENV] = made  # the workers inherit it
        try:
            yield Path(made)
        finally:
            del os.environ[MULTIPROC_DIR_ENV]


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"error: invalid setting\n{_setting_errors(exc)}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:  # fail fast, before binding the port, with a message rather than a traceback
        load_model(
            settings.model_path,
            resolve_device(settings.device),
            settings.precision,
            settings.no_digit_threshold,
            settings.cpu_engine,
        )
    except ModelLoadError as exc:
        log.error("cannot start: %s", exc)
        return 2
    config = uvicorn.Config(
        "app.main:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_keep_alive=settings.keepalive_s,
        limit_concurrency=settings.max_connections,
        timeout_graceful_shutdown=int(settings.graceful_timeout_s),
        access_log=False,  # ours (app/middleware.py) carries the request id
        log_config=None,
        log_level=settings.log_level,
    )
    # uvicorn re-raises the stop signal once its graceful stop is done, to end the process the
    # default way (status 143). A drained instance has done what it was asked: exit 0 instead.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    if settings.workers > 1:
        with shared_metrics_dir():
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        return 0
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 3


if __name__ == "__main__":
    status = main()
    # The server has drained and stopped; skip the interpreter's teardown of torch's objects,
    # which takes seconds of a shutdown grace period and does nothing for anyone.
    flush_logging()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
