"""The per-process life of the service: loading -> ready -> draining, for routes and server."""

from __future__ import annotations

import enum
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from app import metrics
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


@dataclass
class ServiceState:
    """Stored on app.state.service; `runtime` is set once the model is loaded and warm."""

    settings: Settings
    phase: Phase = Phase.LOADING
    runtime: Runtime | None = None

    def set_phase(self, phase: Phase) -> None:
        self.phase = phase
        metrics.READY.set(1 if phase is Phase.READY else 0)

    def begin_drain(self) -> None:
        """Readiness answers 503 from now on; requests in flight still finish."""
        self.set_phase(Phase.DRAINING)
