"""create_app(): lifespan, middleware, routers and error handlers. No logic lives here.

A request goes: RequestContextMiddleware (app/middleware.py) -> PredictFastPath for POST
/predict and /predict/batch (app/api/routes/predict.py), else FastAPI's router (app/api/routes).

uvicorn app.main:app      # or `python -m app` (our launcher: drain on SIGTERM, workers)
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import torch
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.middleware import Middleware
from starlette.types import ASGIApp

from app import __version__
from app.admission import Admission
from app.api.routes import docs, health, metrics, model, page, predict
from app.config import Settings, available_cpus, get_settings, torch_threads_for
from app.errors import ModelLoadError, install_error_handlers
from app.inference import DynamicBatcher, load_model, resolve_device, warm_up
from app.logs import configure_logging
from app.metrics import mark_worker_gone
from app.middleware import PredictFastPath, RequestContextMiddleware
from app.schemas import set_batch_limit
from app.shutdown import install_drain_handler
from app.state import Phase, Runtime, ServiceState

log = logging.getLogger("digitsum")

# Young-generation threshold of the cyclic collector once the service is up: +4.5% images/s
# on /predict/batch x64 against the default 700 (same run, bench/run.py layout); the cycles it
# finds later are a few requests' worth of memory at most.
GC_YOUNG_THRESHOLD = 20_000

DESCRIPTION = """
Send an image of a handwritten digit and a number 0..9; get back the digit and the sum, both
predicted by the network (the sum by its own sum head, not by adding afterwards).

Errors always have the shape `{"error": {"code", "message", "field", "request_id"}}`.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the model once per process, warm it up, start the batcher; drain on the way out."""
    service: ServiceState = app.state.service
    settings = service.settings
    threads = torch_threads_for(settings)
    torch.set_num_threads(threads)
    try:
        device = resolve_device(settings.device)
        model = await asyncio.to_thread(
            load_model,
            settings.model_path,
            device,
            settings.precision,
            settings.no_digit_threshold,
            settings.cpu_engine,
        )
    except ModelLoadError as exc:
        log.error("cannot start: %s", exc)
        raise
    await asyncio.to_thread(warm_up, model, settings.batch_max_size)
    batcher = DynamicBatcher(
        model,
        max_size=settings.batch_max_size,
        max_wait_s=settings.batch_max_wait_ms / 1e3,
        max_queue=settings.max_queue,
        timeout_s=settings.inference_timeout_s,
        max_image_pixels=settings.max_image_pixels,
        gather_s=settings.batch_gather_ms / 1e3,
    )
    batcher.start()
    decode_threads = settings.preprocess_threads or available_cpus()
    pool = ThreadPoolExecutor(max_workers=decode_threads, thread_name_prefix="decode")
    service.runtime = Runtime(settings, model, batcher, pool, decode_threads, service.admission)
    install_drain_handler(service, settings.drain_delay_s)
    # Everything loaded so far (torch, the model, the app) lives as long as the process: out of
    # the cyclic collector's reach, its full collections stop walking it, which showed as
    # 100 ms stalls in the p99 latency under load.
    gc.collect()
    gc.freeze()
    # A request's objects nearly all die by reference counting, yet at the default threshold
    # (700 new containers) the young generation was walked about twice per batch request.
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    service.set_phase(Phase.READY)
    log.info(
        "ready",
        extra={
            "model": str(settings.model_path),
            "version": model.version,
            "device": str(device),
            "engine": model.engine,
            "torch_threads": threads,
            "sha256": model.sha256[:16],
        },
    )
    try:
        yield
    finally:
        service.begin_drain()
        await batcher.stop()
        # No request is left to need the decoding pool (uvicorn has finished them); its threads
        # end on their own, and waiting for them here would hold the event loop.
        pool.shutdown(wait=False, cancel_futures=True)
        mark_worker_gone()  # its live gauges leave the sums (app/metrics.py)
        log.info("stopped")


class DigitsumAPI(FastAPI):
    """FastAPI, with our middlewares around its whole stack rather than inside it.

    FastAPI's own layers (error pages, telemetry, body limit, exception handlers, router) cost
    a fifth of the event loop's time per prediction under load (py-spy, bench/); with ours
    outermost, PredictFastPath answers POST /predict before any of them. Every other route
    goes through FastAPI as usual, inside RequestContextMiddleware.
    """

    def __init__(
        self, *, outer_middleware: list[Middleware], max_batch_images: int, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.outer_middleware = outer_middleware  # listed outermost first
        self.max_batch_images = max_batch_images

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = set_batch_limit(super().openapi(), self.max_batch_images)
        return self.openapi_schema

    def build_middleware_stack(self) -> ASGIApp:
        app = super().build_middleware_stack()
        for middleware in reversed(self.outer_middleware):
            app = middleware.cls(app, *middleware.args, **middleware.kwargs)
        return app


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the ASGI app; nothing is loaded until the lifespan starts."""
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    admission = Admission(
        max_requests=settings.max_requests,
        max_bytes=settings.max_inflight_bytes,
        max_decoding=settings.max_decode_queue,
    )
    cors = [
        Middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    ]
    app = DigitsumAPI(
        title="digitsum",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # /docs and /redoc are ours (app/api/routes/docs.py): assets served here, not a CDN's
        docs_url=None,
        redoc_url=None,
        # Metrics are Prometheus (/metrics) and logs are JSON lines; FastAPI's OpenTelemetry
        # hooks would otherwise look up the OTel providers on every request for nothing.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        max_batch_images=settings.max_batch_images,
        outer_middleware=[
            Middleware(
                RequestContextMiddleware,
                max_body_bytes=settings.max_upload_bytes,
                body_timeout_s=settings.body_timeout_s,
                admission=admission,
            ),
            *(cors if settings.cors_origins else []),
            Middleware(PredictFastPath, routes=predict.routes()),
        ],
    )
    app.state.service = ServiceState(settings, admission)
    install_error_handlers(app)
    for router in (predict.router, health.router, model.router, metrics.router):
        app.include_router(router)
    app.include_router(page.router)
    app.include_router(docs.router)
    return app


def __getattr__(name: str) -> FastAPI:
    # `app.main:app` is built on first access, not at import, so importing this module reads no
    # settings and loads nothing.
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)
