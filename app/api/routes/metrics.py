"""GET /metrics: Prometheus text format from prometheus-client, for the whole instance (every
worker's values, app/metrics.py)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.deps import ServiceDep
from app.metrics import QUEUE_DEPTH, instance_registry

router = APIRouter(tags=["monitoring"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
)
async def prometheus_metrics(service: ServiceDep) -> Response:
    if service.runtime is not None:
        QUEUE_DEPTH.set(service.runtime.batcher.depth)
    return Response(generate_latest(instance_registry()), media_type=CONTENT_TYPE_LATEST)
