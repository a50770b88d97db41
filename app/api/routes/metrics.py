"""GET /metrics: Prometheus text format from prometheus-client, for the whole instance (every
worker's values, app/metrics.py)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import metrics
from app.api.deps import ServiceDep

router = APIRouter(tags=["monitoring"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
)
async def prometheus_metrics(service: ServiceDep) -> Response:
    # The live counts are read here, once per scrape, rather than set on every request.
    admission = service.admission
    metrics.REQUESTS_IN_FLIGHT.set(admission.requests)
    metrics.BODY_BYTES_IN_FLIGHT.set(admission.bytes)
    metrics.DECODE_QUEUE.set(admission.decoding)
    if service.runtime is not None:
        metrics.QUEUE_DEPTH.set(service.runtime.batcher.depth)
    # Rendering, and with several workers reading and merging their files, takes milliseconds:
    # off the event loop, which meanwhile serves predictions.
    text = await asyncio.to_thread(generate_latest, metrics.instance_registry())
    return Response(text, media_type=CONTENT_TYPE_LATEST)
