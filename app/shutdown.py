"""Drain on SIGTERM: readiness goes 503 at once; uvicorn's graceful stop starts after a delay.

Installed by the lifespan in each serving process (one or N uvicorn workers, or plain
`uvicorn app.main:app`), in front of uvicorn's own signal handler:

1. SIGTERM/SIGINT: the phase becomes DRAINING: /health/ready answers 503, new predictions get
   503 + Retry-After, requests already in flight carry on.
2. After DIGITSUM_DRAIN_DELAY_S (time for the load balancer to see the 503 and stop sending),
   uvicorn's handler runs: it closes the listener, waits for in-flight requests (up to
   DIGITSUM_GRACEFUL_TIMEOUT_S), and the lifespan shutdown empties the batcher.

A second signal skips the delay.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from app.state import Phase, ServiceState

log = logging.getLogger("digitsum")

Handler = Callable[[int, FrameType | None], Any]


def install_drain_handler(service: ServiceState, delay_s: float) -> bool:
    """Chain our handler before the current SIGTERM/SIGINT ones; False where signals can't be
    handled (not the main thread, as under TestClient)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if callable(previous):
            signal.signal(sig, _drain_then(previous, service, delay_s))
    return True


def _drain_then(previous: Handler, service: ServiceState, delay_s: float) -> Handler:
    def handle(sig: int, frame: FrameType | None) -> None:
        if service.phase is Phase.DRAINING:  # a second signal: stop now
            previous(sig, frame)
            return
        service.begin_drain()
        log.info("draining", extra={"signal": signal.Signals(sig).name, "delay_s": delay_s})
        timer = threading.Timer(delay_s, previous, (sig, frame))
        timer.daemon = True
        timer.start()

    return handle
