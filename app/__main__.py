"""python -m app  (what `make serve` and the Docker image run)

Starts uvicorn on app.main:app with the DIGITSUM_* settings. On SIGTERM or Ctrl-C the instance
first reports 503 on /health/ready and refuses new predictions with 503 + Retry-After for
DIGITSUM_DRAIN_DELAY_S (so load balancers take it out of rotation), then closes its listener,
lets in-flight requests finish (up to DIGITSUM_GRACEFUL_TIMEOUT_S) and exits 0.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

import uvicorn
from pydantic import ValidationError
from uvicorn.supervisors import Multiprocess

from app.config import Settings
from app.errors import ModelLoadError
from app.inference import load_model, resolve_device
from app.logs import configure_logging

log = logging.getLogger("digitsum")


class DrainingServer(uvicorn.Server):
    """uvicorn.Server that flips readiness to 'draining' before its graceful shutdown."""

    def __init__(self, config: uvicorn.Config, drain_delay_s: float) -> None:
        super().__init__(config)
        self.drain_delay_s = drain_delay_s
        self.draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn's own handler re-raises the signal after a graceful stop (exit 143); a drained
        # instance has done what was asked of it and exits 0. A second signal stops it at once.
        if self.draining:
            self.should_exit = self.force_exit = True
            return
        self.draining = True
        from app.main import app  # the same module object uvicorn serves

        app.state.service.begin_drain()
        log.info("draining", extra={"signal": signal.Signals(sig).name,
                                    "delay_s": self.drain_delay_s})
        timer = threading.Timer(self.drain_delay_s, self._stop_accepting)
        timer.daemon = True
        timer.start()

    def _stop_accepting(self) -> None:
        self.should_exit = True  # uvicorn's loop closes the listener, then waits for in-flight


def _setting_errors(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        name = "DIGITSUM_" + "_".join(str(p) for p in error["loc"]).upper()
        lines.append(f"  {name}: {error['msg']} (got {error.get('input')!r})")
    return "\n".join(lines)


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"error: invalid setting\n{_setting_errors(exc)}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:  # fail fast, before binding the port, with a message rather than a traceback
        load_model(settings.model_path, resolve_device(settings.device))
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
        timeout_graceful_shutdown=int(settings.graceful_timeout_s),
        access_log=False,
        log_config=None,
        log_level=settings.log_level,
    )
    server = DrainingServer(config, settings.drain_delay_s)
    if settings.workers > 1:
        sock = config.bind_socket()
        Multiprocess(config, target=server.run, sockets=[sock]).run()
        return 0
    server.run()
    return 0 if server.started else 3


if __name__ == "__main__":
    raise SystemExit(main())
