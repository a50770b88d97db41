"""The per-process life of the service: loading -> ready -> draining, for routes and server."""

from __future__ import annotations

import enum
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from app import metrics
from app.admission import Admission
from app.config import Settings
from app.inference import DynamicBatcher, LoadedModel


class Phase(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"


@dataclass(frozen=True)
class Runtime:
    """What the lifespan builds once per process: the model, its batcher, the decoding pool."""

    settings: Settings
    model: LoadedModel
    batcher: DynamicBatcher
    preprocess_pool: ThreadPoolExecutor
    preprocess_threads: int  # the pool's size: a batch's images are split into this many parts
    admission: Admission  # the worker's counts of work in flight (ServiceState's)


@dataclass
class ServiceState:
    """Stored on app.state.service; `runtime` is set once the model is loaded and warm."""

    settings: Settings
    admission: Admission
    phase: Phase = Phase.LOADING
    runtime: Runtime | None = None
    drain_started: float | None = None  # time.perf_counter() when the drain began

    def started_before_drain(self, started: float | None) -> bool:
        """Whether a request that started at `started` (perf_counter) was already in flight when
        the drain began: it is served to the end, since its client sent it to a ready instance."""
        return (
            started is not None and self.drain_started is not None and started < self.drain_started
        )

    def set_phase(self, phase: Phase) -> None:
        self.phase = phase
        metrics.READY.set(1 if phase is Phase.READY else 0)

    def begin_drain(self) -> None:
        """Readiness and new requests answer 503 from now on; requests in flight still finish."""
        if self.drain_started is None:
            self.drain_started = time.perf_counter()
        self.set_phase(Phase.DRAINING)
